"""``mistralrs-release``: the noarch package users install first.

It holds the ``.repo`` file (as publishing renders it, with ``gpgkey``
pointing at the packaged key instead of the web server, so that trust
comes from the package and not from whoever answers for the domain), the
public key under ``/etc/pki/rpm-gpg/``, and ``/usr/bin/mistralrs-flavour``
with the configured flavours written into it.

``doit publish`` builds it itself (:mod:`buildlib.publish.release`), from
the repository's public key as the publish pins it and the config, for
each channel it publishes to that lacks a current one, so that a
repository written only by CI has it too; ``doit release-package`` builds
the same package into dist/ for a look at it before publishing.

The package is built reproducibly: its build time, file times and build
host are fixed (``SOURCE_DATE_EPOCH`` = the key's creation time), so
building the same content again gives the same main header.  Its version
is at least ``host.release_package_version``; the publish raises it past
the channel's newest when the content (the files it installs) changed.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path


from ..config import Config
from ..layout import FLAVOUR_SCRIPT_TEMPLATE, PROJECT_LICENSE, RELEASE_SPEC_TEMPLATE, Layout
from ..rpmtools import rpmbuild
from ..run import Stopwatch, UserError, atomic_copy
from ..publish import signing
from ..publish import channels
from ..templates import render
from .gpgkey import PUBLIC_NAME
from ..config import Host

KEY_INSTALL_PATH = f"/etc/pki/rpm-gpg/{signing.KEY_FILE_NAME}"
PAYLOAD = "w19.zstdio"
"""Single-threaded: the same input always compresses to the same bytes."""


class ReleasePackageError(UserError):
    pass


def render_flavour_script(cfg: Config) -> str:
    flavours = sorted(cfg.flavours, key=lambda f: f.compute_cap)
    lines = "\n".join(f"{f.name} {f.compute_cap}" for f in flavours)
    return render(FLAVOUR_SCRIPT_TEMPLATE, flavour_lines=lines)


def render_repo_file(cfg: Config) -> str:
    """publishing's .repo file, its gpgkey= lines naming the packaged key."""
    return channels.render_repo_file(cfg, gpgkey=f"file://{KEY_INSTALL_PATH}")


def public_key(host: Host) -> tuple[str, str, int]:
    """(armored key, fingerprint, creation time) of host.key_dir's public key."""
    path = host.key_dir / PUBLIC_NAME
    try:
        armored = path.read_text()
    except FileNotFoundError:
        raise ReleasePackageError(
            f"no public key at {path}: run `doit setup:gpg-key` (or put the repository's public key there)"
        ) from None
    return (armored, *key_facts(armored, str(path)))


def key_facts(armored: str, where: str = "the repository's key") -> tuple[str, int]:
    """(fingerprint, creation time) of the one public key in armored."""
    with signing.private_gnupghome() as home:
        gpg = signing.python_gnupg(home)
        gpg.import_keys(armored)
        keys = gpg.list_keys()
    if len(keys) != 1:
        raise ReleasePackageError(f"{where} holds {len(keys)} public keys; expected exactly one")
    return keys[0]["fingerprint"], int(keys[0]["date"])


def release_inputs(cfg: Config, host: Host) -> dict:
    """The settings the package's content depends on (for doit's uptodate);
    the templates and the key are the task's file_dep.  Nothing is rendered
    here: task creation must stay cheap for every `doit` run."""
    return {
        "version": host.release_package_version,
        "dist": cfg.package.dist,
        "packager": cfg.package.packager,
        "base_url": cfg.publish.base_url,
        "metadata_expire": cfg.publish.metadata_expire,
        "channels": [[c.name, c.subdir] for c in cfg.channels],
        "flavours": [[f.name, f.compute_cap] for f in cfg.flavours],
    }


def render_spec(cfg: Config, version: int, fingerprint: str, created: int) -> str:
    day = datetime.fromtimestamp(created, timezone.utc)
    return render(RELEASE_SPEC_TEMPLATE, spec=True,
        version=version,
        base_url=cfg.publish.base_url.rstrip("/"),
        channels=[c.name for c in cfg.channels],
        key_name=signing.KEY_FILE_NAME,
        fingerprint=fingerprint,
        packager=cfg.package.packager,
        changelog_date=day.strftime("%a %b %d %Y"),
    )


def build_release_package(cfg: Config, layout: Layout, host: Host) -> Path:
    """Build dist/mistralrs-release-<version>-1<dist>.noarch.rpm, where
    ``doit publish`` takes it from (unsigned, like every package in dist/;
    publishing signs a copy for each channel)."""
    watch = Stopwatch("release-package")
    armored, fingerprint, created = public_key(host)
    built = build_release(cfg, layout, armored, host.release_package_version, fingerprint, created)
    dest = layout.release_rpm(host.release_package_version, cfg.package.dist)
    atomic_copy(built, dest)
    watch.done(f"{dest.name} (key {fingerprint[-16:]}, {len(cfg.flavours)} flavours)")
    return dest


def build_release(cfg: Config, layout: Layout, armored: str, version: int, fingerprint: str | None = None,
                  created: int | None = None) -> Path:
    """Build mistralrs-release-<version> with the public key armored in
    layout.release_topdir (scratch: each build starts afresh); the path of
    the package there."""
    if fingerprint is None or created is None:
        fingerprint, created = key_facts(armored)
    top = layout.release_topdir
    shutil.rmtree(top, ignore_errors=True)
    sources = top / "SOURCES"
    sources.mkdir(parents=True)
    (sources / "mistralrs.repo").write_text(render_repo_file(cfg))
    (sources / signing.KEY_FILE_NAME).write_text(armored)
    (sources / "mistralrs-flavour").write_text(render_flavour_script(cfg))
    shutil.copyfile(PROJECT_LICENSE, sources / PROJECT_LICENSE.name)
    spec = top / "mistralrs-release.spec"
    spec.write_text(render_spec(cfg, version, fingerprint, created))
    packages = rpmbuild(spec, top, defines={
        "_sourcedir": str(sources),
        "dist": cfg.package.dist,
        "_binary_payload": PAYLOAD,
        # Fedora's license directory, /usr/share/licenses/<name> (Debian's rpm adds -<version>)
        "_docdir_fmt": "%{NAME}",
        "_buildhost": "mistralrs-rpm",
        "use_source_date_epoch_as_buildtime": "1",
        "clamp_mtime_to_source_date_epoch": "1",
        "_build_id_links": "none",
    }, env={"SOURCE_DATE_EPOCH": str(created), "TZ": "UTC"})
    name = layout.release_rpm(version, cfg.package.dist).name
    built = next((p for p in packages if p.name == name), None)
    if built is None:
        raise ReleasePackageError(f"rpmbuild did not produce {name} in {top}")
    return built
