"""Each channel's ``mistralrs-release``, kept current by the publish itself.

A repository that only CI writes must still answer the index page's first
command (``dnf install <channel>/mistralrs-release-…noarch.rpm``), and the
maintainer deletes the secret key from the host once CI has it.  So the
publish builds the package (:func:`buildlib.host.release_package.build_release`)
from what it has at hand: the repository's public key as it pinned it
(:class:`.anchor.Anchor`: the host's key file, or the signing key's public
half on a first publish) and the config.  Every channel a publish touches
ends up with a current one, signed and published with the rest, under the
same lock.

**Current** means: the channel's newest ``mistralrs-release`` installs the
same files, byte for byte (rpm's file digests in its header: the ``.repo``
file with the base URL and channels, the key, ``mistralrs-flavour`` with
the flavours), and its version is at least ``host.release_package_version``.
Otherwise the publish adds one whose version is the higher of
``host.release_package_version`` and one more than any the channel lists,
so the version rises by itself when the content changes (no setting to
bump, and no "same name, other content" refusal); the setting stays as a
floor a maintainer can raise (a change of the spec template alone, which
changes no installed file).  Versions never repeat within a channel, and
retention keeps the newest ``publish.retention`` as for every package.

``mistralrs-release`` packages in dist/ (``doit release-package``) are left
aside: the publish's own build is the one that goes up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..config import Config
from ..layout import Layout
from ..run import log, sha256_of
from .channels import RELEASE_PACKAGE
from .repodata import Metadata
from .rpms import LocalRpm, file_list, newest_first, read_rpms
from .transport import Transport


def installed_files(rpm: Path) -> dict[str, str]:
    """What a package installs: path -> "mode digest-algorithm digest"
    (:func:`.rpms.file_list`)."""
    algo, files = file_list(rpm)
    return {name: f"{mode} {algo} {digest}" for name, mode, digest in files}


def _version(text: str) -> int:
    return int(text) if text.isdigit() else 0


@dataclass
class ReleaseBuilder:
    """Builds mistralrs-release with the repository's key, once per version
    in a publish."""

    cfg: Config
    layout: Layout
    public_key: str
    built: dict[int, LocalRpm] = field(default_factory=dict)

    def build(self, version: int) -> LocalRpm:
        if version not in self.built:
            from ..host.release_package import build_release  # rpmbuild only when a publish needs it

            path = build_release(self.cfg, self.layout, self.public_key, version)
            self.built[version] = read_rpms([path])[0]
        return self.built[version]

    def for_channel(self, target: Transport, rel: PurePosixPath, old: Metadata, good: set[str], scratch: Path,
                    tag: str) -> tuple[LocalRpm | None, str | None]:
        """(the package to add, None) where the channel lacks a current
        mistralrs-release, else (None, the published one's file name).
        old: the channel's metadata; good: its packages found intact."""
        listed = {h: p for h, p in old.packages.items() if p.name == RELEASE_PACKAGE}
        floor = self.cfg.host.release_package_version
        version = max([floor] + [_version(p.version) + 1 for p in listed.values()])
        candidate = self.build(version)
        intact = {p.evr: h for h, p in listed.items() if h in good}
        if intact:
            href = intact[newest_first(list(intact))[0]]
            published = listed[href]
            target.fetch_files(rel, [href], scratch)
            copy = scratch / href
            same_file = copy.is_file() and (published.checksum_type != "sha256" or sha256_of(copy) == published.pkgid)
            if (same_file and _version(published.version) >= floor
                    and installed_files(copy) == installed_files(candidate.path)):
                return None, href
            why = ("its content changed" if same_file and _version(published.version) >= floor
                   else f"host.release_package_version is {floor}" if same_file
                   else f"{href} on the host is not what the metadata says")
        else:
            why = "the channel has none"
        log(f"{tag}: adding {candidate.path.name} ({why})")
        return candidate, None
