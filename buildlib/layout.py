"""Every path the pipeline reads or writes, defined once."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .run import UserError

RELEASE_PACKAGE = "mistralrs-release"
"""The package that configures users' dnf for the repository (its name is
also a file name here, so it lives in this module)."""

PROJECT = Path(__file__).resolve().parent.parent
RPM_DIR = PROJECT / "rpm"
KERNEL_COPIES = Path("/tmp/mrpm-nvcc")


class _Paths(Protocol):
    cache: Path
    build: Path
    artifacts: Path
    dist: Path


class _Configured(Protocol):
    """What Layout.of reads of a :class:`buildlib.config.Config`: config
    imports this module (DEFAULT_CONFIG, RELEASE_PACKAGE), so a real import
    back would be a circle; the protocol types it without one."""

    @property
    def paths(self) -> _Paths: ...


@dataclass(frozen=True)
class Layout:
    cache: Path
    build: Path
    artifacts: Path
    dist: Path

    @classmethod
    def of(cls, cfg: _Configured) -> "Layout":
        return cls(cache=cfg.paths.cache, build=cfg.paths.build, artifacts=cfg.paths.artifacts, dist=cfg.paths.dist)

    # doit's own state; sqlite3 keeps both runs' records when two overlap
    @property
    def dep_file(self) -> Path:
        return self.build / "doit-state.sqlite3"

    # fetch
    @property
    def mirror(self) -> Path:
        return self.cache / "upstream.git"

    @property
    def source_trees(self) -> Path:
        return self.cache / "src"

    def source_tree(self, commit: str) -> Path:
        return self.source_trees / commit

    @property
    def source_record(self) -> Path:
        return self.build / "source.json"

    # build
    @property
    def target_dirs(self) -> Path:
        return self.cache / "target"

    def target_dir(self, flavour: str) -> Path:
        return self.target_dirs / flavour

    def cargo_messages(self, flavour: str) -> Path:
        """cargo's JSON messages of the flavour's last build."""
        return self.build / "cargo" / f"{flavour}.jsonl"

    def units_manifest(self, flavour: str) -> Path:
        """Which compiled units each version's build used (kept with the
        target dir it describes; read by clean-cache)."""
        return self.target_dir(flavour) / "mrpm-units.json"

    @property
    def compile_cache(self) -> Path:
        """sccache's local store ([build.cache] backend = "local")."""
        return self.cache / "sccache"

    @property
    def nvcc_wrapper(self) -> Path:
        """The nvcc the kernel build scripts are given (NVCC): runs the real
        one through sccache.  Its bin/ sits beside include/ and lib64/ links,
        as cudaforge derives the toolkit from NVCC's grandparent."""
        return self.build / "sccache" / "cuda" / "bin" / "nvcc"

    @property
    def kernel_copies(self) -> Path:
        """Where the nvcc wrapper copies kernel directories to compile them
        (pipeline/nvcc_relocate.py): one absolute path on every runner,
        whatever its cache, so sccache's keys for cicc and cudafe++, which
        hold the source's absolute path, agree between runners and versions.
        Copies are named by their content; /tmp's cleaner may take them."""
        return KERNEL_COPIES

    @property
    def sccache_log(self) -> Path:
        return self.build / "sccache" / "server.log"

    @property
    def cudaforge_home(self) -> Path:
        return self.cache / "cudaforge"

    def artifact(self, flavour: str) -> Path:
        return self.artifacts / f"mistralrs-{flavour}"

    def build_record(self, flavour: str) -> Path:
        return self.artifacts / f"mistralrs-{flavour}.json"

    def verify_record(self, flavour: str) -> Path:
        return self.artifacts / f"mistralrs-{flavour}.verified.json"

    # licenses: what the binary bundles (pipeline/licenses.py)
    def bundle_record(self, flavour: str) -> Path:
        return self.build / "licenses" / f"mistralrs-{flavour}.json"

    def license_archive(self, flavour: str) -> Path:
        """LICENSE.dependencies, cargo-vendor.txt and the crates' license
        texts, one tar file (one Source of the spec)."""
        return self.build / "licenses" / flavour / LICENSE_ARCHIVE_NAME

    def license_files(self, flavour: str) -> Path:
        """Where the licenses stage lays the archive's files out before
        packing them (removed once packed)."""
        return self.build / "licenses" / flavour / "files"

    # package
    def sbom(self, flavour: str) -> Path:
        """The CycloneDX SBOM the spec task writes beside the spec."""
        return self.build / "spec" / flavour / SBOM_NAME

    def spec(self, flavour: str) -> Path:
        return self.build / "spec" / flavour / f"mistralrs-{flavour}.spec"

    def rpm_topdir(self, flavour: str) -> Path:
        return self.build / "rpmbuild" / flavour

    def rpm_record(self, flavour: str) -> Path:
        return self.build / "rpm" / f"mistralrs-{flavour}.json"

    def rebuild_record(self, flavour: str) -> Path:
        """Written by a rebuild-check that found the rebuild identical."""
        return self.build / "rpm" / f"mistralrs-{flavour}.rebuilt.json"

    # poll
    @property
    def poll_state(self) -> Path:
        """ETags and answers of the GitHub API, kept between polls."""
        return self.cache / "poll" / "state.json"

    @property
    def poll_decision(self) -> Path:
        return self.build / "poll" / "decision.json"

    # publish
    def staging(self, channel: str) -> Path:
        return self.build / "publish" / channel

    def gate_dir(self, flavour: str) -> Path:
        """Where `doit gate:<flavour>` works: its dnf root, the model it makes, its record."""
        return self.build / "gate" / flavour

    def gate_record(self, flavour: str) -> Path:
        return self.gate_dir(flavour) / "gate.json"

    @property
    def publish_digests(self) -> Path:
        """SHA-256 of a local target's published files, by what identifies
        their bytes on disk (transport_local.DigestMemo)."""
        return self.build / "publish-digests.json"

    @property
    def gnupg_parent(self) -> Path:
        return self.build / "gnupg"

    # the mistralrs-release package (repository configuration for users)
    @property
    def release_topdir(self) -> Path:
        return self.build / "rpmbuild" / RELEASE_PACKAGE

    def release_rpm(self, version: int, dist: str) -> Path:
        return self.dist / f"{RELEASE_PACKAGE}-{version}-1{dist}.noarch.rpm"


SPEC_TEMPLATE = RPM_DIR / "mistralrs.spec.j2"
UNIT_TEMPLATE = RPM_DIR / "systemd" / "mistralrs@.service"
UNIT_EXAMPLE = RPM_DIR / "systemd" / "mistralrs@.conf.example"
SYSUSERS = RPM_DIR / "systemd" / "mistralrs.sysusers"
COMPAT_MACROS = RPM_DIR / "compat.macros"
RPMLINT_FILTERS = RPM_DIR / "rpmlint.toml"
RPMLINT_LICENSES = RPM_DIR / "rpmlint-licenses.toml"
NVIDIA_DEVICES_UNIT = RPM_DIR / "systemd" / "mistralrs-nvidia-devices.service"
RELEASE_SPEC_TEMPLATE = RPM_DIR / "release" / "mistralrs-release.spec.j2"
PROJECT_LICENSE = PROJECT / "LICENSE"
"""This project's license: what mistralrs-release (our own files) ships as %license."""
RPMLINT_RELEASE_FILTERS = RPM_DIR / "release" / "rpmlint.toml"
FLAVOUR_SCRIPT_TEMPLATE = RPM_DIR / "release" / "mistralrs-flavour.j2"
NGINX_SITE_TEMPLATE = RPM_DIR / "nginx" / "mistralrs-repo.conf.j2"
CERTBOT_HOOK_TEMPLATE = RPM_DIR / "nginx" / "certbot-deploy-hook.sh.j2"
SITE_DIR = RPM_DIR / "site"
SITE_INDEX_TEMPLATE = SITE_DIR / "index.html.j2"
SITE_STYLESHEET = SITE_DIR / "style.css"
REPO_FILE_TEMPLATE = RPM_DIR / "mistralrs.repo.j2"
REPO_SHELL = PROJECT / "scripts" / "repo-shell"
WORKFLOW_DIR = PROJECT / ".gitea" / "workflows"
DODO = PROJECT / "dodo.py"
DEFAULT_CONFIG = PROJECT / "config.toml"
DEFAULT_DEMO_DIR = PROJECT / ".demo"
DEMO_DIR_ENV = "MRPM_DEMO_DIR"
_DEMO_DIR_CHARS = re.compile(r"[A-Za-z0-9._+/-]+")


def demo_dir() -> Path:
    """Where scripts/demo keeps everything it makes: $MRPM_DEMO_DIR, else
    .demo/ in the checkout.  The path reaches nginx's configuration, so it
    is held to plain characters."""
    value = os.environ.get(DEMO_DIR_ENV, "")
    if not value:
        return DEFAULT_DEMO_DIR
    path = Path(value).absolute()
    if not _DEMO_DIR_CHARS.fullmatch(str(path)):
        raise UserError(f"{DEMO_DIR_ENV}={value!r}: expected a path of letters, digits and . _ + - /")
    return path
DEMO_UPSTREAM_SOURCES = PROJECT / "examples" / "demo-upstream"
DEMO_UPSTREAM_HISTORY = PROJECT / "examples" / "demo-upstream-history"

LICENSE_ARCHIVE_NAME = "mistralrs-licenses.tar"
SBOM_NAME = "sbom.cdx.json"
INSTALLED_SBOM = "/usr/share/mistralrs/" + SBOM_NAME
"""Where a flavour package installs its SBOM (rpm/mistralrs.spec.j2)."""
SBOM_SUFFIX = ".cdx.json"


def sbom_beside(rpm_file: str) -> str:
    """The SBOM's file name beside an RPM in dist/ and in a channel:
    name-version-release.arch.rpm -> name-version-release.arch.cdx.json."""
    return rpm_file.removesuffix(".rpm") + SBOM_SUFFIX


GATE_SUFFIX = ".gate.json"


def gate_beside(rpm_file: str) -> str:
    """A package's gate record beside it in staging (and, once promoted, in
    its channel): name-version-release.arch.rpm -> ….gate.json."""
    return rpm_file.removesuffix(".rpm") + GATE_SUFFIX


STAGING_SUBDIR = "staging"
"""A channel's staging area, the directory of that name inside the channel's
own: signed packages and signed metadata, served, named by no .repo file."""

# On the repository host (a local directory or the SSH target's root)
PUBLISH_LOCK_NAME = ".publish.lock"
"""The lock every publish holds on the repository root; scripts/repo-shell
spells it too (a test checks the two agree)."""


def cargo_home() -> Path:
    """cargo's home as cargo itself finds it (CARGO_HOME, else ~/.cargo)."""
    return Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo").resolve()
