"""``mistralrs-release``: the noarch package users install first.

It holds the ``.repo`` file (as publishing renders it, with ``gpgkey``
pointing at the packaged key instead of the web server, so that trust
comes from the package and not from whoever answers for the domain), the
public key under ``/etc/pki/rpm-gpg/``, and ``/usr/bin/mistralrs-flavour``
with the configured flavours written into it.

``doit release-package`` builds it into dist/, and ``doit publish`` takes
it from there to every channel (:func:`buildlib.publish.channels.channels_for`), so that it is in
whichever channel a user enables.

The package is built reproducibly: its build time, file times and build
host are fixed (``SOURCE_DATE_EPOCH`` = the key's creation time), so
building the same content again gives the same main header, which is what
publishing compares to decide that a package is already published.  A
change of content needs a new ``host.release_package_version``; publishing
refuses the same file name with other content.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path


from ..config import Config
from ..layout import FLAVOUR_SCRIPT_TEMPLATE, RELEASE_SPEC_TEMPLATE, Layout
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
    with signing.private_gnupghome() as home:
        gpg = signing.python_gnupg(home)
        gpg.import_keys(armored)
        keys = gpg.list_keys()
    if len(keys) != 1:
        raise ReleasePackageError(f"{path} holds {len(keys)} public keys; expected exactly one")
    return armored, keys[0]["fingerprint"], int(keys[0]["date"])


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


def render_spec(cfg: Config, host: Host, fingerprint: str, created: int) -> str:
    day = datetime.fromtimestamp(created, timezone.utc)
    return render(RELEASE_SPEC_TEMPLATE, spec=True,
        version=host.release_package_version,
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
    top = layout.release_topdir
    shutil.rmtree(top, ignore_errors=True)
    sources = top / "SOURCES"
    sources.mkdir(parents=True)
    (sources / "mistralrs.repo").write_text(render_repo_file(cfg))
    (sources / signing.KEY_FILE_NAME).write_text(armored)
    (sources / "mistralrs-flavour").write_text(render_flavour_script(cfg))
    spec = top / "mistralrs-release.spec"
    spec.write_text(render_spec(cfg, host, fingerprint, created))
    packages = rpmbuild(spec, top, defines={
        "_sourcedir": str(sources),
        "dist": cfg.package.dist,
        "_binary_payload": PAYLOAD,
        "_buildhost": "mistralrs-rpm",
        "use_source_date_epoch_as_buildtime": "1",
        "clamp_mtime_to_source_date_epoch": "1",
        "_build_id_links": "none",
    }, env={"SOURCE_DATE_EPOCH": str(created), "TZ": "UTC"})
    dest = layout.release_rpm(host.release_package_version, cfg.package.dist)
    built = next((p for p in packages if p.name == dest.name), None)
    if built is None:
        raise ReleasePackageError(f"rpmbuild did not produce {dest.name} in {top}")
    atomic_copy(built, dest)
    watch.done(f"{dest.name} (key {fingerprint[-16:]}, {len(cfg.flavours)} flavours)")
    return dest
