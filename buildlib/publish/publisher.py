"""Publishing: staging, metadata, the lock, upload, the swap, retention.

What the repository host holds (``publish.target``, a local directory or
``user@host:/path`` reached with rsync over SSH)::

    RPM-GPG-KEY-mistralrs            the public key
    mistralrs.repo                   the users' .repo file
    index.html, style.css            the index page (buildlib/publish/site.py)
    fedora/<releasever>/x86_64/      stable: packages + repodata/
    fedora/<releasever>/x86_64/unstable/   unstable: packages + repodata/

Which channel a package goes to (:func:`channels_for`): a package named in
``EVERY_CHANNEL`` (``mistralrs-release``, the repository's own configuration)
goes to every configured channel, like distributions' ``*-release``
packages, whatever its version; any other package by its version: a snapshot
(``^`` in the version) to unstable, everything else (releases and release
candidates) to stable.  ``doit publish --channel NAME`` publishes only that
channel's packages (``mistralrs-release`` included).  Packages are x86_64;
the one noarch package accepted is ``mistralrs-release`` (``NOARCH``).

**Packages move one way, up.**  createrepo_c runs here, where the key is, on
metadata alone: the channel's current ``repodata/`` (small) is fetched into
the staging directory, the new signed packages are put beside it, and
``createrepo_c --update --skip-stat --pkglist LIST`` reuses the old packages'
metadata by file name without their files (tested with createrepo_c 0.17.3:
with ``--skip-stat`` it never stats a cached package).  The explicit list
also keeps the unstable channel's packages, which live below the stable
channel's directory, out of the stable metadata.  Old metadata files stay
for ``publish.metadata_expire`` (``--retain-old-md-by-age``) for clients that
fetched the previous ``repomd.xml`` a moment before the swap.

**Sequence**, all under one lock held on the host: fetch the metadata;
refuse a name-version-release that is already published with other content;
sign copies of the new packages in staging (never dist/'s files) and check
every signature; build, sign and check the metadata; (1) upload the new
packages, no deletions; (2) upload the new metadata files (hashed names, no
deletions); (3) swap in ``repomd.xml``, ``repomd.xml.asc`` and our package
index (``mrpm-index.json``, below) in one ``rsync --delay-updates``, which
renames them into place together at the end; (4) delete pruned packages and
expired metadata files; once every
channel is done, (5) render the index page (:func:`buildlib.site.render_index`:
what each channel holds now, from this publish's metadata or, for a channel
it did not touch, from that channel's fetched ``repodata/``; the key's
fingerprint; the time of this publish) and upload ``index.html`` and
``style.css`` at the top together (``--delay-updates``).  A publish killed
before (3) leaves the old repository, whose files are all still there; one
killed after (3) leaves the new one plus files the next publish deletes.
(rsync's renames in (3) are separate renames microseconds apart; a client
fetches ``repomd.xml`` and its signature in two requests anyway, and retries
on a mismatch.)

**Same name, other content.**  A published package's signed bytes cannot be
reproduced (the signature carries its time), so each channel keeps
``repodata/mrpm-index.json``: the SHA-256 of each published package's main
header (``%{SHA256HEADER}``, which signing leaves alone) by its file's
checksum.  A package in dist/ whose file name is published with the same
header digest is already there and is skipped (publishing again uploads no
package bytes); with another digest the publish stops: raise the release.

**The lock.**  Local target: ``fcntl.flock`` on ``<target>/.publish.lock``.
Remote target: one SSH session runs ``lock``; the key's forced command
(``scripts/repo-shell``) takes ``flock`` on the same file and holds it until
its standard input closes, and otherwise runs nothing but ``rsync --server``
inside the repository.  A publish killed in any way closes its SSH
connection (the kernel closes the pipe to ssh; ssh's exit closes the
session), which releases the lock: no stale lock files, no timeouts to
guess.  The lock covers every step from fetching the metadata to pruning,
so two publishes (or the stable and the unstable one) never interleave and
the second one builds on the first one's metadata.

**CI.**  ``doit publish`` reads only dist/*.rpm and depends on no build task,
so a CI job that downloads the packages into dist/ publishes them with an
empty doit state and runs no build.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import lzma
import os
import re
import select
import shlex
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from . import signing
from ..config import STABLE, UNSTABLE, Channel, Config, Publish, SshTarget, format_duration
from ..layout import PUBLISH_LOCK_NAME, REPO_FILE_TEMPLATE, Layout
from ..run import CommandFailed, Stopwatch, UserError, atomic_write, log, output, require_tool, run
from ..templates import render

BASEARCH = "x86_64"
INDEX_NAME = "mrpm-index.json"
REPO_FILE_NAME = "mistralrs.repo"
REPO_TEMPLATE = REPO_FILE_TEMPLATE
LOCK_NAME = PUBLISH_LOCK_NAME
LOCK_TIMEOUT_S = 1800
BWLIMIT_ENV = "MRPM_PUBLISH_BWLIMIT"
"""Optional bandwidth limit in KiB/s (rsync --bwlimit): ``500`` for every
transfer, or ``packages:500,metadata:1`` per step; the tests use it to kill a
publish in the middle of an upload."""

NS = {"repo": "http://linux.duke.edu/metadata/repo", "common": "http://linux.duke.edu/metadata/common"}
SWAP_FILES = ("repomd.xml", "repomd.xml.asc", INDEX_NAME)
RELEASE_PACKAGE = "mistralrs-release"
EVERY_CHANNEL = frozenset({RELEASE_PACKAGE})
"""Packages published in every channel, whatever their version."""
NOARCH = frozenset({RELEASE_PACKAGE})
"""The only packages accepted as noarch (ours); everything else is x86_64."""
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~^-]*$")


class PublishError(UserError):
    pass


# --- where things go on the host -------------------------------------------


def channel_dir(cfg: Config, channel: Channel) -> PurePosixPath:
    """A channel's directory below the target, as on the host."""
    path = PurePosixPath("fedora", cfg.package.releasever, BASEARCH)
    return path / channel.subdir if channel.subdir else path


def channel_for_version(version: str) -> str:
    """snapshot (``^``) -> unstable; releases and candidates -> stable."""
    return UNSTABLE if "^" in version else STABLE


def channels_for(name: str, version: str, configured: Sequence[str]) -> list[str]:
    """The channels a package goes to, decided by its name first: a package
    in ``EVERY_CHANNEL`` (``mistralrs-release``) goes to every configured
    channel, so that whichever channel a user enables carries the package
    that configures it (as Fedora's ``fedora-repos`` is in every repository);
    any other package to the one channel of its version
    (:func:`channel_for_version`)."""
    if name in EVERY_CHANNEL:
        return list(configured)
    return [channel_for_version(version)]


def repo_id(channel: str) -> str:
    """A channel's section name in mistralrs.repo: ``mistralrs`` for stable,
    ``mistralrs-<channel>`` for the others (``dnf --enablerepo=...``)."""
    return "mistralrs" if channel == STABLE else f"mistralrs-{channel}"


def default_gpgkey(cfg: Config) -> str:
    """The public key on the repository host, beside mistralrs.repo."""
    return f"{cfg.publish.base_url.rstrip('/')}/{signing.KEY_FILE_NAME}"


def render_repo_file(cfg: Config, gpgkey: str | None = None) -> str:
    """The users' mistralrs.repo.  ``gpgkey``: where dnf finds the public
    key; by default the key file on the repository host
    (:func:`default_gpgkey`); the release package passes the packaged key's
    ``file:///etc/pki/rpm-gpg/...``."""
    channels = [
        {"id": repo_id(c.name), "name": c.name,
         "path": f"fedora/$releasever/$basearch/{c.subdir + '/' if c.subdir else ''}",
         "enabled": c.is_stable}
        for c in cfg.channels
    ]
    key = gpgkey or default_gpgkey(cfg)
    if not re.fullmatch(r"(https?|file)://\S+", key):
        raise PublishError(f"gpgkey {key!r}: expected an https://, http:// or file:// URL")
    return render(REPO_TEMPLATE, base_url=cfg.publish.base_url.rstrip("/"), channels=channels,
                           gpgkey=key, metadata_expire=format_duration(cfg.publish.metadata_expire))


def expire_minutes(seconds: int) -> int:
    return max(1, -(-seconds // 60))


# --- packages --------------------------------------------------------------


@dataclass(frozen=True)
class LocalRpm:
    path: Path
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    header_sha256: str

    @property
    def evr(self) -> str:
        return f"{self.epoch}:{self.version}-{self.release}"

    def channels(self, configured: Sequence[str]) -> list[str]:
        return channels_for(self.name, self.version, configured)


def read_rpms(paths: Sequence[Path]) -> list[LocalRpm]:
    """Name, EVR and main-header digest of each package (one rpm call)."""
    if not paths:
        return []
    qf = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{SHA256HEADER}\\n"
    proc = run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", qf, *paths], capture=True, check=False, quiet=True)
    lines = proc.stdout.decode().splitlines()
    if proc.returncode != 0 or len(lines) != len(paths):
        raise PublishError(f"rpm could not read the packages in {paths[0].parent}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    rpms = []
    for path, line in zip(paths, lines):
        name, epoch, version, release, arch, digest = line.split("\t")
        if not FILE_NAME.match(path.name):
            raise PublishError(f"{path.name}: unexpected characters in a package file name")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise PublishError(f"{path.name}: has no SHA-256 header digest; rebuild it with rpm 4.14 or newer")
        if arch == "noarch" and name not in NOARCH:
            raise PublishError(f"{path.name}: noarch, but the repository is {BASEARCH}-only; the only noarch "
                               f"package it takes is ours ({', '.join(sorted(NOARCH))})")
        if arch not in (BASEARCH, "noarch"):
            raise PublishError(f"{path.name}: architecture {arch}, but the repository is {BASEARCH}-only")
        rpms.append(LocalRpm(path, name, epoch, version, release, arch, digest))
    return rpms


def newest_first(evrs: Sequence[str]) -> list[str]:
    """EVR strings ("E:V-R") newest first, in rpm's own order (rpm.vercmp)."""
    if len(evrs) < 2:
        return list(evrs)
    for evr in evrs:
        if not re.fullmatch(r"[0-9]+:[A-Za-z0-9._+~^]+-[A-Za-z0-9._+~^]+", evr):
            raise PublishError(f"unexpected version {evr!r}")
    items = ",".join(f'"{e}"' for e in evrs)
    lua = f"%{{lua: local t={{{items}}}; table.sort(t, function(a,b) return rpm.vercmp(a,b) > 0 end); print(table.concat(t, ' '))}}"
    return output(["rpm", "--eval", lua], quiet=True).split()


# --- published metadata ----------------------------------------------------


@dataclass(frozen=True)
class Published:
    name: str
    evr: str
    href: str
    pkgid: str


@dataclass
class Metadata:
    packages: dict[str, Published] = field(default_factory=dict)
    """by href (file name in the channel directory)"""
    index: dict[str, str] = field(default_factory=dict)
    """pkgid -> SHA-256 of the main header"""
    files: set[str] = field(default_factory=set)
    """every file name in repodata/"""


def _open_compressed(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".xz"):
        return lzma.open(path, "rb")
    if path.name.endswith(".xml"):
        return open(path, "rb")
    raise PublishError(f"{path.name}: compression not supported here (expected .gz or .xz)")


def repomd_locations(repodata: Path) -> dict[str, str]:
    root = ET.parse(repodata / "repomd.xml").getroot()
    return {d.get("type"): d.find("repo:location", NS).get("href") for d in root.findall("repo:data", NS)}


def read_metadata(repodata: Path) -> Metadata:
    md = Metadata()
    if not (repodata / "repomd.xml").exists():
        return md
    md.files = {p.name for p in repodata.iterdir() if p.is_file()}
    primary = repodata.parent / repomd_locations(repodata)["primary"]
    with _open_compressed(primary) as f:
        for _, el in ET.iterparse(f):
            if el.tag != f"{{{NS['common']}}}package":
                continue
            v = el.find("common:version", NS)
            href = el.find("common:location", NS).get("href")
            md.packages[href] = Published(
                name=el.find("common:name", NS).text,
                evr=f"{v.get('epoch') or '0'}:{v.get('ver')}-{v.get('rel')}",
                href=href,
                pkgid=el.find("common:checksum", NS).text,
            )
            el.clear()
    index = repodata / INDEX_NAME
    if index.exists():
        md.index = json.loads(index.read_text()).get("header_sha256", {})
    return md


# --- the target ------------------------------------------------------------


def _bwlimit(what: str | None) -> int | None:
    value = os.environ.get(BWLIMIT_ENV, "").strip()
    if not value:
        return None
    try:
        if value.isdigit():
            return int(value)
        limits = dict(item.split(":") for item in value.split(","))
        return int(limits[what]) if what in limits else None
    except ValueError:
        raise PublishError(f"{BWLIMIT_ENV}={value!r}: expected KiB/s such as 500, or packages:500,metadata:1") from None


def _host_key_error(target: "Target", ssh_stderr: str) -> "PublishError | None":
    """ssh's many-line host key complaint as one line naming publish.host_key."""
    if target.remote and ("Host key verification failed" in ssh_stderr or "HOST IDENTIFICATION HAS CHANGED" in ssh_stderr
                          or "No ED25519 host key is known" in ssh_stderr or "host key for" in ssh_stderr):
        return PublishError(f"{target.host} did not show the host key pinned in publish.host_key: check that line against"
                            f" the host's key (ssh-keyscan {target.host}) before trusting a new one")
    return None


def _raise_host_key_error(target: "Target", ssh_stderr: str) -> None:
    error = _host_key_error(target, ssh_stderr)
    if error:
        raise error


class Target:
    """The repository host: rsync to a local directory or over SSH."""

    def __init__(self, publish: Publish, scratch: Path):
        self.publish = publish
        self.scratch = scratch
        self.remote = publish.target.is_remote
        if isinstance(publish.target, SshTarget):
            self.user, self.host, self.root = publish.target.user, publish.target.host, str(publish.target.path)
            self.ssh = self._ssh_argv(publish)
            self.prefix = f"{self.user}@{self.host}:"
        else:
            self.root = str(publish.target.path)
            self.ssh = []
            self.prefix = ""
        self.bytes_sent: dict[str, int] = {}

    def _ssh_argv(self, publish: Publish) -> list[str]:
        """ssh with the pinned host key only; the port comes from the pinned
        line's ``[host]:port`` form (known_hosts pins a key per port)."""
        fields = publish.host_key.split()
        if len(fields) < 2:
            raise PublishError(f'publish.host_key = "{publish.host_key}": expected a known_hosts line "host ssh-ed25519 AAAA..."')
        port = "22"
        if fields[0].startswith(("ssh-", "ecdsa-", "sk-")):  # a bare key: pin it for the target host
            line = f"{self.host} {publish.host_key}"
        else:
            line = publish.host_key
            pm = re.fullmatch(r"\[(.+)\]:([0-9]+)", fields[0])
            if pm:
                port = pm.group(2)
        known_hosts = self.scratch / "known_hosts"
        known_hosts.write_text(line + "\n")
        argv = [require_tool("ssh", "install openssh-client"), "-p", port,
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
                "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3"]
        identity = self._identity(publish)
        if identity:
            argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        return argv

    def _identity(self, publish: Publish) -> str:
        """The SSH key: a file (publish.ssh_key), or the key itself in the
        environment variable publish.ssh_key_env (a CI secret), written to a
        private file in the scratch directory for this publish only."""
        if publish.ssh_key:
            return str(Path(publish.ssh_key).expanduser())
        secret = os.environ.get(publish.ssh_key_env, "") if publish.ssh_key_env else ""
        if not secret.strip():
            return ""
        path = self.scratch / "id_upload"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.strip() + "\n")
        return str(path)

    def url(self, rel: PurePosixPath | str, trailing: bool = True) -> str:
        path = f"{self.root}/{rel}" if str(rel) not in ("", ".") else self.root
        return self.prefix + path + ("/" if trailing else "")

    def rsync(self, args: Sequence[str | os.PathLike], *, stats: str | None = None, check: bool = True,
              capture: bool = True) -> subprocess.CompletedProcess:
        argv = [require_tool("rsync", "install rsync")]
        if self.remote:
            argv += ["-e", shlex.join(self.ssh)]
        limit = _bwlimit(stats)
        if limit:
            argv += [f"--bwlimit={limit}"]
        if stats:
            argv += ["--stats"]
        try:
            proc = run([*argv, *args], capture=capture, check=check)
        except CommandFailed as e:
            _raise_host_key_error(self, e.stderr_tail)
            raise
        if proc.returncode != 0 and proc.stderr:
            _raise_host_key_error(self, proc.stderr.decode(errors="replace"))
        if stats and proc.stdout:
            field_name = rb"received" if stats == "fetch" else rb"sent"
            m = re.search(rb"Total bytes " + field_name + rb": ([\d,.]+)", proc.stdout)
            if m:
                self.bytes_sent[stats] = self.bytes_sent.get(stats, 0) + int(re.sub(rb"[,.]", b"", m.group(1)))
        return proc

    # -- reading

    def list_dir(self, rel: PurePosixPath) -> dict[str, bool] | None:
        """{name: is_dir} of a directory on the host, or None if it is missing."""
        proc = self.rsync(["--list-only", "--no-h", self.url(rel)], check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")
            if "No such file or directory" in err and proc.returncode == 23:
                return None
            raise PublishError(f"cannot list {self.url(rel)}: rsync exit {proc.returncode}: {err.strip()[-300:]}")
        entries = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            parts = line.split(None, 4)
            if len(parts) == 5 and parts[4] != ".":
                entries[parts[4]] = parts[0].startswith("d")
        return entries

    def fetch(self, rel: PurePosixPath, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.rsync(["-rt", self.url(rel), f"{dest}/"], stats="fetch")

    # -- writing (never overwrites a package: the caller decides what to send)

    def upload(self, local_dir: Path, names: Sequence[str], rel: PurePosixPath, *, what: str,
               delay_updates: bool = False, checksum: bool = False) -> None:
        if not names:
            return
        listing = self.scratch / f"files-{what}.txt"
        listing.write_text("".join(f"{n}\n" for n in names))
        args = ["-rt", "--perms", "--chmod=D755,F644", f"--files-from={listing}"]
        if delay_updates:
            args.append("--delay-updates")
        if checksum:
            args.append("--checksum")
        self.rsync([*args, f"{local_dir}/", self.url(rel)], stats=what)

    def delete(self, rel: PurePosixPath, names: Sequence[str]) -> None:
        """Delete these files of one directory on the host (rsync from an
        empty directory, so that rsync access is all the host grants)."""
        if not names:
            return
        empty = self.scratch / "empty"
        empty.mkdir(exist_ok=True)
        rules = self.scratch / "delete-rules.txt"
        rules.write_text("".join(f"+ /{n}\n" for n in names) + "- *\n")
        self.rsync(["-r", "--delete", f"--filter=merge {rules}", f"{empty}/", self.url(rel)], stats="delete")

    # -- the lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        if self.remote:
            with self._remote_lock():
                yield
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            with open(Path(self.root) / LOCK_NAME, "a") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log(f"waiting for the publish lock on {self.root}")
                    fcntl.flock(f, fcntl.LOCK_EX)
                yield

    @contextlib.contextmanager
    def _remote_lock(self) -> Iterator[None]:
        # A long-lived session cannot go through run(): it is the lock.
        argv = [*self.ssh, f"{self.user}@{self.host}", "lock"]
        log(f"+ {shlex.join(argv)}")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            buf = b""
            while not buf.endswith(b"locked\n"):
                ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise PublishError(f"no publish lock on {self.host} after {LOCK_TIMEOUT_S} s; another publish holds it")
                chunk = os.read(proc.stdout.fileno(), 64)
                if not chunk:
                    proc.wait()
                    err = proc.stderr.read().decode(errors="replace").strip()
                    _raise_host_key_error(self, err)
                    raise PublishError(f"cannot take the publish lock on {self.host} (ssh exit {proc.returncode}): {err[-300:]}")
                buf += chunk
                if buf.endswith(b"waiting\n"):
                    log(f"waiting for the publish lock on {self.host}")
                    buf = b""
            yield
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- one channel -----------------------------------------------------------


@dataclass
class ChannelReport:
    channel: str
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    metadata_rebuilt: bool = False


def _select_kept(packages: dict[str, str], retention: int) -> tuple[list[str], list[str]]:
    """packages: href -> (name, evr) flattened as 'name\tevr'; newest
    ``retention`` per name are kept."""
    by_name: dict[str, dict[str, str]] = {}
    for href, key in packages.items():
        name, evr = key.split("\t")
        by_name.setdefault(name, {})[evr] = href
    kept, pruned = [], []
    for name, evrs in sorted(by_name.items()):
        order = newest_first(list(evrs))
        kept += [evrs[e] for e in order[:retention]]
        pruned += [evrs[e] for e in order[retention:]]
    return sorted(kept), sorted(pruned)


def _createrepo(stage: Path, pkglist: Sequence[str], update: bool, keep_minutes: int, workers: int = 4) -> None:
    listing = stage / ".pkglist"
    listing.write_text("".join(f"{h}\n" for h in pkglist))
    args = [require_tool("createrepo_c", "install createrepo-c"), "--quiet", "--no-database",
            "--pkglist", listing, "--workers", str(workers)]
    if update:
        args += ["--update", "--skip-stat", f"--retain-old-md-by-age={keep_minutes}m"]
    run([*args, stage], capture=True)


def publish_channel(cfg: Config, layout: Layout, target: Target, key: signing.SigningKey, channel: Channel,
                    rpms: Sequence[LocalRpm]) -> ChannelReport:
    report = ChannelReport(channel.name)
    rel = channel_dir(cfg, channel)
    stage = layout.staging(channel.name)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    tag = f"publish[{channel.name}]"

    listing = target.list_dir(rel) or {}
    if "repodata" in listing:
        target.fetch(rel / "repodata", stage / "repodata")
    old = read_metadata(stage / "repodata")
    remote_md_files = set(old.files)
    signature_ok = False
    if old.packages or (stage / "repodata" / "repomd.xml").exists():
        try:
            signing.verify_repomd(key.public_key, key.fingerprint, stage / "repodata")
            signature_ok = True
        except signing.SigningError as e:
            log(f"{tag}: the published metadata's signature is not good ({e}); rebuilding it")

    new: list[LocalRpm] = []
    for rpm in rpms:
        href = rpm.path.name
        pub = old.packages.get(href)
        if pub is None:
            new.append(rpm)
        elif old.index.get(pub.pkgid) == rpm.header_sha256:
            report.skipped.append(href)
        else:
            raise PublishError(
                f"{href} is already published in channel {channel.name} with other content;"
                " a published package is never overwritten: raise the release and package again"
            )

    candidates = {href: f"{p.name}\t{p.evr}" for href, p in old.packages.items()}
    candidates.update({r.path.name: f"{r.name}\t{r.evr}" for r in new})
    kept, pruned = _select_kept(candidates, cfg.publish.retention)
    new = [r for r in new if r.path.name in kept]  # a package older than N retained ones is not worth adding
    report.kept, report.pruned = kept, [h for h in pruned if h in old.packages]
    stray = sorted(n for n, is_dir in listing.items() if not is_dir and n.endswith(".rpm") and n not in kept
                   and n not in {r.path.name for r in new})

    if not new and not report.pruned and signature_ok:
        log(f"{tag}: up to date ({len(report.skipped)} already published)")
        target.delete(rel, stray)
        report.pruned += stray
        return report

    # sign copies in staging; dist/ keeps the unsigned originals
    for rpm in new:
        shutil.copyfile(rpm.path, stage / rpm.path.name)
    staged = [stage / r.path.name for r in new]
    signing.sign_rpms(key, staged)
    signing.verify_rpms(key.public_key, key.fingerprint, staged)

    _createrepo(stage, kept, update=bool(old.packages) or (stage / "repodata" / "repomd.xml").exists(),
                keep_minutes=expire_minutes(cfg.publish.metadata_expire))
    built = read_metadata(stage / "repodata")
    if sorted(built.packages) != kept:
        raise PublishError(f"{tag}: createrepo_c produced metadata for {sorted(built.packages)}, expected {kept}")
    header_digest = {r.path.name: r.header_sha256 for r in new}
    index = {}
    for href, pub in built.packages.items():
        digest = header_digest.get(href) or old.index.get(pub.pkgid)
        if digest:
            index[pub.pkgid] = digest
    atomic_write(stage / "repodata" / INDEX_NAME, json.dumps({"header_sha256": index}, indent=1, sort_keys=True) + "\n")
    signing.sign_repomd(key, stage / "repodata")
    # the last word before anything leaves this machine
    signing.verify_rpms(key.public_key, key.fingerprint, staged)
    signing.verify_repomd(key.public_key, key.fingerprint, stage / "repodata")
    report.metadata_rebuilt = True

    repodata = stage / "repodata"
    md_files = sorted(p.name for p in repodata.iterdir() if p.is_file())
    hashed = [n for n in md_files if n not in SWAP_FILES and n not in remote_md_files]
    log(f"{tag}: uploading {len(staged)} package(s)")
    target.upload(stage, [p.name for p in staged], rel, what="packages")
    log(f"{tag}: uploading {len(hashed)} metadata file(s)")
    target.upload(repodata, hashed, rel / "repodata", what="metadata")
    log(f"{tag}: swapping in repomd.xml")
    target.upload(repodata, list(SWAP_FILES), rel / "repodata", what="swap", delay_updates=True, checksum=True)
    log(f"{tag}: pruning")
    target.delete(rel, sorted(set(report.pruned) | set(stray)))
    target.delete(rel / "repodata", sorted(remote_md_files - set(md_files)))
    report.pruned = sorted(set(report.pruned) | set(stray))
    report.added = [p.name for p in staged]
    return report


# --- the whole publish -----------------------------------------------------


def _upload_top(cfg: Config, target: Target, key: signing.SigningKey) -> None:
    """Public key, .repo file and the channel directories."""
    top = target.scratch / "top"
    top.mkdir()
    (top / signing.KEY_FILE_NAME).write_text(key.public_key)
    (top / REPO_FILE_NAME).write_text(render_repo_file(cfg))
    names = [signing.KEY_FILE_NAME, REPO_FILE_NAME]
    for channel in cfg.channels:
        path = channel_dir(cfg, channel)
        (top / path).mkdir(parents=True, exist_ok=True)
        names.append(str(path))
    target.upload(top, names, PurePosixPath("."), what="top", checksum=True)


def published_files(cfg: Config, target: Target, channel: Channel) -> list[str]:
    """The package file names a channel's published metadata lists (its
    ``repodata/`` fetched into the scratch directory; packages never)."""
    from . import site

    rel = channel_dir(cfg, channel)
    listing = target.list_dir(rel) or {}
    if not listing.get("repodata"):
        return []
    dest = target.scratch / "published" / channel.name / "repodata"
    target.fetch(rel / "repodata", dest)
    return site.packages_in(dest)


def _upload_index(cfg: Config, target: Target, key: signing.SigningKey, reports: Sequence[ChannelReport],
                  when: datetime) -> dict[str, list[str]]:
    """Render the index page from what every channel holds now and upload
    index.html and style.css at the top, together (step 5)."""
    from . import site

    done = {r.channel: sorted(r.kept) for r in reports}
    held = {c.name: done[c.name] if c.name in done else published_files(cfg, target, c) for c in cfg.channels}
    out = target.scratch / "site"
    out.mkdir()
    files = site.render_index(cfg, out, held, key.fingerprint, when)
    target.upload(out, [f.name for f in files], PurePosixPath("."), what="site", delay_updates=True, checksum=True)
    return held


def publish_dist(cfg: Config, layout: Layout, channel: str | None = None) -> dict:
    """Publish dist/*.rpm: each to its channels (:func:`channels_for`), or
    only to ``channel``; then the index page at the top."""
    watch = Stopwatch("publish")
    if channel:
        cfg.channel(channel)  # validates the name
    paths = sorted(layout.dist.glob("*.rpm"))
    if not paths:
        raise PublishError(f"nothing to publish: {layout.dist} holds no RPMs (run `doit package`, or put the packages there)")
    rpms = read_rpms(paths)
    configured = [c.name for c in cfg.channels]
    by_channel: dict[str, list[LocalRpm]] = {}
    for rpm in rpms:
        targets = rpm.channels(configured)
        for name in targets:
            if name not in configured:
                raise PublishError(f"{rpm.path.name} belongs to channel {name}, which config.toml has no [channels.{name}] for")
        if channel and channel not in targets:
            log(f"publish: {rpm.path.name} belongs to channel {', '.join(targets)}; not publishing it (--channel {channel})")
            continue
        for name in targets if not channel else [channel]:
            by_channel.setdefault(name, []).append(rpm)
    if not by_channel:
        raise PublishError(f"nothing to publish for channel {channel}: dist/ holds no package of that channel")
    reports = []
    layout.build.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mrpm-publish-") as scratch:
        target = Target(cfg.publish, Path(scratch))
        with signing.signing_key(cfg.publish, layout.gnupg_parent) as key, target.lock():
            _upload_top(cfg, target, key)
            for name in configured:
                if name in by_channel:
                    reports.append(publish_channel(cfg, layout, target, key, cfg.channel(name), by_channel[name]))
            log("publish: index page")
            held = _upload_index(cfg, target, key, reports, datetime.now(timezone.utc))
        sent = dict(target.bytes_sent)
    summary = "; ".join(
        f"{r.channel}: +{len(r.added)} ={len(r.skipped)} -{len(r.pruned)}" for r in reports
    )
    watch.done(f"{summary}; package bytes sent {sent.get('packages', 0)}")
    return {
        "channels": {r.channel: {"added": r.added, "skipped": r.skipped, "pruned": r.pruned, "kept": r.kept,
                                 "metadata_rebuilt": r.metadata_rebuilt} for r in reports},
        "index": held,
        "bytes_sent": sent,
        "seconds": round(watch.seconds, 2),
    }
