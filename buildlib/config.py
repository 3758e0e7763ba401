"""config.toml -> frozen dataclasses, with every check in one place.

Nothing else in the project reads the raw TOML.  Every error names the key,
the value found and the form expected, and an unknown key names the nearest
known one.
"""

from __future__ import annotations

import dataclasses

import difflib
import math
import os
import re
import tomllib
import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .layout import DEFAULT_CONFIG, RELEASE_PACKAGE
from .refs import Ref, RefError, parse_ref
from .run import Exit, UserError, read_regular_file
from .spdx import spdx_problem

CONFIG_ENV = "MRPM_CONFIG"
REF_ENV = "MRPM_REF"
CACHE_ENV = "MRPM_CACHE"
"""Overrides paths.cache: CI runners point it at a directory that outlives
the job's workspace, so the mirror and the cargo target dirs are kept."""

# Digits are written [0-9], never \d: in a str pattern \d also matches other
# scripts' digits (full-width '１', Arabic-Indic '١'), and int() reads them.
FLAVOUR_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}\Z")
"""Flavour names and channel names: they become package names and paths."""
FEATURE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,100}\Z")
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\Z")
RUST_VERSION = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?\Z")
CUDA_VERSION = re.compile(r"^[0-9]+\.[0-9]+\Z")
REBUILD_CHECK = re.compile(r"^(off|releases)\Z")
# rpm's payload syntax; zstd's long window (L) only up to 27: rpm 4.18 writes
# L28 but cannot read it back.
PAYLOAD = re.compile(r"^(w[0-9]+(L(1[0-9]|2[0-7]))?(T[0-9]+)?\.zstdio|w[0-9]+(T[0-9]+)?\.(xzdio|gzdio|ufdio|bzdio|lzdio))\Z")
DEP_NAME = re.compile(r"^[A-Za-z0-9_.+()-]+( (>=|<=|=|>|<) [A-Za-z0-9_.+~^-]+)?\Z")
SSH_TARGET = re.compile(r"^(?P<user>[a-z_][a-z0-9_-]{0,31})@(?P<host>[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9a-fA-F:]+\])"
                        r":(?P<path>/[A-Za-z0-9._/+-]*)\Z")
LOCAL_TARGET = re.compile(r"^/[A-Za-z0-9._/+-]*\Z")
"""publish.target's path, local or on the host: absolute, in a character set
that no shell, rsync or ssh reads anything into (no ':', no spaces, no '~')."""
PLAIN_PATH = LOCAL_TARGET
"""Every directory or file the configuration names ([paths], MRPM_CACHE,
host.*_dir and the like), once resolved: these reach rpmbuild's --define
(where '%(...)' runs a command), rsync (where ':' makes a host), nginx's
configuration (where ';' ends a directive) and spec and shell lines."""

SSH_KEY_FILE = re.compile(r"^((~/)?[A-Za-z0-9._/+][A-Za-z0-9._/+-]*)?\Z")
"""publish.ssh_key: it reaches ssh's -i inside rsync's -e command, which
rsync splits into words itself."""

# --- values that reach a spec (both specs: the flavours' and mistralrs-release)
# Checked here when the configuration loads; templates.render(spec=True) also
# escapes '%' in every value it puts into a spec, so the two layers are
# independent.
SPEC_FREE_TEXT = re.compile(r"^[^%\s]([^%]{0,198}[^%\s])?\Z")
"""One line of text, no '%' (rpm's macro character), no leading or trailing
space; control characters and line breaks are refused for every string.
For text that may land at the start of a %description line (GPU names)."""
SUMMARY = re.compile(r"^\S(.{0,198}\S)?\Z")
"""package.summary: one line; a '%' is written '%%' in the Summary tag (the
only place it goes), so "100%" stays text."""
URL = re.compile(r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9._~/+,;=@!$&'()*:-]*)?\Z")
"""An http(s) URL without '%', spaces, quotes, '?' or '#': it goes into the
specs, the .repo file and the site."""
PACKAGER = re.compile(r"^[^<>%\s]([^<>%]{0,98}[^<>%\s])? <[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+>\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
HOST_KEY = re.compile(
    r"^((?P<hosts>[A-Za-z0-9.:\[\]_|/+=,-]+) )?"
    r"(?P<type>ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [ -~]{0,200})?\Z")
"""One known_hosts line (or just "type key"): no marker such as
@cert-authority, no wildcard host pattern, no second line."""
UPSTREAM_URL = re.compile(r"^((https?|ssh|git|file)://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+|[A-Za-z0-9._/~+][^\s]*)\Z")
# [[bundled]] and [[crate_license]]: what a Provides line and a crate's
# identity may hold (rpm's EVR characters, cargo's names, semver).
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z")
COMPONENT_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~^]{0,99}\Z")
COMPONENT_COMMIT = re.compile(r"^([0-9a-f]{40})?\Z")  # or empty: not pinned to a commit
COMPONENT_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~%/+-]*)?\Z")
EVIDENCE_PATH = re.compile(r"^[A-Za-z0-9._+-]{1,100}(/[A-Za-z0-9._+-]{1,100}){0,15}\Z")
CRATE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\Z")
# semver: X.Y.Z[-pre][+build]
SEMVER = re.compile(
    r"^(?P<core>(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*))"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?\Z"
)


class ConfigError(UserError):
    exit_code = Exit.CONFIG


@dataclass(frozen=True)
class Program:
    """What upstream's server is called from one upstream version on."""

    first: tuple[int, int, int]
    package: str
    """The cargo package that builds it (`cargo build -p <package>`)."""
    binary: str
    """The bin target's name: the installed program, the unit's ExecStart."""


@dataclass(frozen=True)
class Upstream:
    url: str
    branch: str
    ref: Ref
    """The ref to build: $MRPM_REF, else upstream.ref; checked at load."""
    programs: tuple[Program, ...]
    """Sorted by first version; a version below the first row is refused."""
    timeout: float = 120.0
    """Seconds a git clone or fetch may go without progress (no answer, or
    under 1 kB/s over http(s); no answer over ssh) before it is stopped."""

    def program(self, version: str) -> Program:
        """Package and binary at upstream version X.Y.Z (an rc suffix ignored)."""
        m = re.match(r"^([0-9]+)\.([0-9]+)\.([0-9]+)", version)
        if not m:
            raise ConfigError(f"upstream version {version!r}: expected X.Y.Z or X.Y.Z-rcN")
        base = tuple(int(p) for p in m.groups())
        chosen = None
        for program in self.programs:
            if base >= program.first:
                chosen = program
        if chosen is None:
            first = ".".join(map(str, self.programs[0].first))
            raise ConfigError(
                f"upstream version {version} is older than {first}, the first row of upstream.programs:"
                f" before 0.7.0 upstream's server is mistralrs-server, whose command line has no `serve`"
                f" subcommand for the unit; such versions are not packaged"
            )
        return chosen

    def binary_name(self, version: str) -> str:
        return self.program(version).binary

    @property
    def package(self) -> str:
        """The newest row's package (for messages that name no version)."""
        return self.programs[-1].package


CACHE_BACKENDS = ("off", "local", "redis", "s3", "webdav")
CACHE_SIZE = re.compile(r"^[1-9][0-9]*[KMGT]$")


@dataclass(frozen=True)
class BuildCache:
    """[build.cache]: sccache in front of rustc and nvcc.  "local" keeps it
    under the cache directory; "redis", "s3" and "webdav" share it between
    runners.  Secrets (passwords, keys, tokens) never come from here: the
    sccache server reads them from its environment (SCCACHE_REDIS_PASSWORD,
    AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SCCACHE_WEBDAV_TOKEN, ...)."""

    backend: str = "local"
    url: str = ""
    """redis:// endpoint, S3 endpoint (https://...), or WebDAV base URL."""
    bucket: str = ""
    """S3 only."""
    prefix: str = ""
    """S3/WebDAV key prefix (one store, several projects)."""
    size: str = "20G"
    """The local cache's size limit (sccache evicts the least recently used).
    A shared backend's limit is the server's (redis maxmemory, a bucket's
    lifecycle rule)."""

    @property
    def enabled(self) -> bool:
        return self.backend != "off"


@dataclass(frozen=True)
class Build:
    features: tuple[str, ...]
    rustflags: str
    nvcc_threads: int
    min_rust: str
    cuda_version: str
    min_free_gib: int
    rebuild_check: str = "off"
    """"releases": a release tag's RPM is built a second time, independently
    (rebuild-check), and published only if the two are the same bytes."""
    cache: BuildCache = BuildCache()

    @property
    def rebuild_releases(self) -> bool:
        return self.rebuild_check == "releases"


@dataclass(frozen=True)
class Flavour:
    name: str
    compute_cap: int
    gpus: tuple[str, ...]
    extra_features: tuple[str, ...] = ()

    def features(self, build: Build) -> tuple[str, ...]:
        return tuple(sorted(set(build.features + self.extra_features)))

    @property
    def package(self) -> str:
        """The flavour's RPM name."""
        return package_name(self.name)


def package_name(flavour: str) -> str:
    """The RPM name of the flavour named ``flavour``."""
    return f"mistralrs-{flavour}"


STABLE = "stable"
"""Releases and release candidates; enabled in mistralrs.repo."""
UNSTABLE = "unstable"
"""Snapshots of the upstream branch; disabled in mistralrs.repo."""
REQUIRED_CHANNELS = (STABLE, UNSTABLE)


@dataclass(frozen=True)
class Channel:
    name: str
    subdir: str
    """Path below <base>/fedora/<releasever>/<basearch>/ ("" for the top)."""

    @property
    def is_stable(self) -> bool:
        return self.name == STABLE


@dataclass(frozen=True)
class LocalTarget:
    """publish.target as a local directory (absolute)."""

    path: Path

    @property
    def is_remote(self) -> bool:
        return False

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class SshTarget:
    """publish.target as user@host:/path, reached with rsync over SSH."""

    user: str
    host: str
    path: PurePosixPath

    @property
    def is_remote(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.path}"


Target = LocalTarget | SshTarget


TARGET_FORM = "an absolute directory such as /srv/mistralrs-rpm, or user@host:/absolute/path"


def parse_target(text: str) -> Target:
    """A clean absolute local directory, or user@host:/absolute/path;
    anything else (a relative path, '..', a shell or ssh option, an rsync
    host:path in disguise) is refused, never taken for a local name."""
    m = SSH_TARGET.match(text)
    path = m.group("path") if m else text
    if not (m or LOCAL_TARGET.match(text)) or any(part in (".", "..") for part in path.split("/")):
        raise ConfigError(f"publish.target = {_show(text)}: expected {TARGET_FORM}")
    clean = PurePosixPath(path)  # collapses "//" and drops a trailing "/"
    if m:
        return SshTarget(m.group("user"), m.group("host"), clean)
    return LocalTarget(Path(clean))


DURATION = re.compile(r"^([0-9]+)([smhd]?)\Z")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """"90", "90s", "15m", "1h", "2d" -> seconds."""
    m = DURATION.match(text)
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds: int) -> str:
    """Seconds in dnf's (and config.toml's) shortest form: 3600 -> "1h"."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return str(seconds)


@dataclass(frozen=True)
class Package:
    payload: str
    url: str
    summary: str
    packager: str
    requires: tuple[str, ...]
    feature_requires: tuple[tuple[str, tuple[str, ...]], ...]
    dist: str
    releasever: str

    def requires_for(self, features: tuple[str, ...]) -> tuple[str, ...]:
        extra = [dep for feat, deps in self.feature_requires if feat in features for dep in deps]
        return tuple(dict.fromkeys(self.requires + tuple(extra)))


@dataclass(frozen=True)
class Publish:
    target: Target
    """A local directory, or user@host:/path reached over SSH."""
    host_key: str
    ssh_key: str
    ssh_key_env: str
    base_url: str
    retention: int
    key_file: str
    key_env: str
    passphrase_file: str
    passphrase_env: str
    metadata_expire: int
    """Seconds dnf keeps metadata (and the host keeps the previous files)."""
    key_fingerprint: str = ""
    """The repository's key pinned (40 upper-case hex digits), or "": the
    key on the host (RPM-GPG-KEY-mistralrs) decides.  Pinning another key
    than the host's is how the key is replaced on purpose."""

    @property
    def is_remote(self) -> bool:
        return self.target.is_remote


@dataclass(frozen=True)
class Poll:
    """The [poll] table: how `doit poll` asks GitHub."""

    api_url: str = "https://api.github.com"
    repository: str = ""
    """owner/name on GitHub; "" derives it from upstream.url."""
    token_env: str = "MRPM_GITHUB_TOKEN"
    """Environment variable holding an optional GitHub token.  Not
    GITHUB_TOKEN: in Gitea Actions that name is Gitea's own token."""
    timeout: float = 20.0
    retries: int = 3
    """Extra attempts after a 5xx answer or a connection error."""
    backoff: float = 2.0
    """Seconds before the first retry; doubled for each further one."""
    retrigger_after: float = 21600.0
    """Seconds before the same build (channel, ref, flavours) is started
    again while its packages are still missing: a build that fails must not
    take the GPU runners every 15 minutes."""
    snapshot_interval: float = 86400.0
    """Seconds from one snapshot build (unstable channel) started by the
    poll to the next: upstream's default branch moves many times a day, a
    build of every flavour takes hours."""
    dispatch_token_env: str = "MRPM_DISPATCH_TOKEN"
    """Environment variable holding the Gitea token (write access to the
    repository's actions) the poll starts the build workflows with."""

    LIMITS = {"timeout": (0.0, 600.0), "backoff": (0.0, 120.0), "retrigger_after": (0.0, 366 * 86400.0),
              "snapshot_interval": (0.0, 366 * 86400.0), "retries": (0, 10)}
    """Closed ranges, except that timeout must be above 0.  TOML has nan and
    inf: both fail a range check (nan compares false to everything)."""

    def __post_init__(self) -> None:
        for key, (low, high) in self.LIMITS.items():
            value = getattr(self, key)
            if not (low <= value <= high) or (key == "timeout" and value <= 0):
                what = "an integer" if key == "retries" else "seconds"
                bounds = f"above {low:.0f}" if key == "timeout" else f"from {low:.0f}"
                raise ConfigError(f"poll.{key} = {_show(value)}: expected {what} {bounds} up to {high:.0f}")


DOCTOR_CHECKS = ("cudnn", "nccl", "cutlass", "memory", "compiler", "cache")
"""The checks doctor.skip may leave out."""


@dataclass(frozen=True)
class Doctor:
    """The [doctor] table: what `doit doctor` checks beyond the toolchain."""

    skip: tuple[str, ...] = ()
    """Checks left out, for an upstream that needs no such thing (the demo
    upstream links no cuDNN or NCCL and clones no CUTLASS)."""


@dataclass(frozen=True)
class Paths:
    root: Path
    cache: Path
    build: Path
    artifacts: Path
    dist: Path


# --- the repository host ([host]) -------------------------------------------

DOMAIN = re.compile(r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
EMAIL = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,63}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z")
"""host.email (certbot's --email) and host.key_email (gpg's Name-Email):
plain ASCII addresses, never starting with '-' (an option to certbot)."""
OPTIONAL_EMAIL = re.compile(r"^(|" + EMAIL.pattern[1:-2] + r")\Z")
URL_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*/?\Z")
"""publish.base_url's path: nginx reads ';', '$', quotes and braces in a
location or a return, so none of them (nor '.' or '..' segments)."""
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?\Z")
EXPIRE = re.compile(r"^(0|[0-9]+[dwmy]?|[0-9]{4}-[0-9]{2}-[0-9]{2})\Z")
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"
DEFAULT_UPLOAD_USER = "mistralrs-upload"


@dataclass(frozen=True)
class Host:
    domain: str
    url_path: str
    """The repository's path on the web server, "" or "/mistralrs-rpm"."""
    https_port: int
    http_port: int
    repo_root: Path
    upload_user: str
    email: str
    cloudflare_zone: str
    cloudflare_token_file: str
    cloudflare_api: str
    ipv4: str
    ipv6: str
    upload_key: str
    key_name: str
    key_email: str
    key_type: str
    key_expire: str
    key_passphrase_file: str
    key_dir: Path
    nginx_site: Path
    nginx_conf: Path
    """The host's main nginx.conf, for ``nginx -t -c`` after the site changed."""
    letsencrypt_dir: Path
    cert_name: str
    reload_nginx: tuple[str, ...]
    repo_shell: Path
    release_package_version: int

    @property
    def cert_file(self) -> Path:
        return self.letsencrypt_dir / "live" / self.cert_name / "fullchain.pem"

    @property
    def cert_key_file(self) -> Path:
        return self.letsencrypt_dir / "live" / self.cert_name / "privkey.pem"

    @property
    def cloudflare_credentials(self) -> Path:
        """certbot-dns-cloudflare's credentials file (mode 0600)."""
        return self.letsencrypt_dir / "mistralrs-cloudflare.ini"

    @property
    def deploy_hook(self) -> Path:
        """Run by ``certbot renew`` after each renewal (any certificate)."""
        return self.letsencrypt_dir / "renewal-hooks" / "deploy" / "mistralrs-repo-nginx"

    def cloudflare_token(self) -> str:
        """The API token: host.cloudflare_token_file, else $CLOUDFLARE_API_TOKEN."""
        if self.cloudflare_token_file:
            path = Path(self.cloudflare_token_file).expanduser()
            try:
                token = path.read_text().strip()
            except OSError as e:
                raise ConfigError(f"host.cloudflare_token_file = \"{path}\": cannot read it ({e.strerror})") from None
        else:
            token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise ConfigError(
                f"no Cloudflare API token: set host.cloudflare_token_file to a file holding one"
                f" (or export {TOKEN_ENV}); the token needs the permission Zone.DNS:Edit on the zone"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]{20,200}", token):
            raise ConfigError("the Cloudflare API token has unexpected characters; expected the token itself, one line")
        return token


# --- what the binary bundles ([[bundled]], [[crate_license]]) -----------------


@dataclass(frozen=True)
class Evidence:
    """What proves a [[bundled]] component is in upstream's source at a
    commit: ``path`` (relative to the tree's root) exists, and, where
    ``contains`` is given, is a file that holds that text."""

    path: str
    contains: str = ""

    def describe(self) -> str:
        return f"{self.path} containing {self.contains!r}" if self.contains else self.path


@dataclass(frozen=True)
class BundledComponent:
    """Code compiled into the binary that no Cargo.lock lists."""

    name: str
    version: str
    license: str
    url: str
    commit: str = ""
    # None only in records read back (the licenses stage checked it then)
    evidence: Evidence | None = None


@dataclass(frozen=True)
class CrateLicense:
    """A license a person read in a crate that declares only a license file."""

    name: str
    version: str
    license: str


@dataclass(frozen=True)
class BundledConfig:
    components: tuple[BundledComponent, ...] = ()
    crate_licenses: tuple[CrateLicense, ...] = ()

    def crate_license(self, name: str, version: str) -> CrateLicense | None:
        for entry in self.crate_licenses:
            if entry.name == name and entry.version == version:
                return entry
        return None


@dataclass(frozen=True)
class Config:
    source: Path
    upstream: Upstream
    build: Build
    flavours: tuple[Flavour, ...]
    channels: tuple[Channel, ...]
    package: Package
    publish: Publish
    paths: Paths
    poll: Poll
    host: Host
    doctor: Doctor
    bundled: BundledConfig = BundledConfig()

    def flavour(self, name: str) -> Flavour:
        for f in self.flavours:
            if f.name == name:
                return f
        raise ConfigError(f"unknown flavour {name!r}; configured: {', '.join(f.name for f in self.flavours)}")

    def channel(self, name: str) -> Channel:
        for c in self.channels:
            if c.name == name:
                return c
        raise ConfigError(f"unknown channel {name!r}; configured: {', '.join(c.name for c in self.channels)}")


# --- parsing ---------------------------------------------------------------

_MISSING = object()


class _Table:
    """One TOML table being read; remembers which keys were used."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table, found {data!r}")
        self.data = data
        self.where = where
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type, default: Any = _MISSING, *, form: str = "") -> Any:
        self.known.append(name)
        if name not in self.data:
            if default is _MISSING:
                raise ConfigError(f"{self.key(name)} is missing; expected {form or kind.__name__}")
            return default
        value = self.data[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{self.key(name)} = {_show(value)}: expected {form or kind.__name__}")
        return value

    def string(self, name: str, default: Any = _MISSING, *, pattern: re.Pattern | None = None, form: str = "") -> str:
        value = self.get(name, str, default, form=form or "a string")
        _one_line(value, self.key(name))
        if pattern is not None and not pattern.match(value):
            raise ConfigError(f"{self.key(name)} = {_show(value)}: expected {form}")
        return value

    def strings(self, name: str, default: Any = _MISSING, *, pattern: re.Pattern | None = None, form: str = "") -> tuple[str, ...]:
        value = self.get(name, list, default, form=f"a list of strings ({form})" if form else "a list of strings")
        for item in value:
            if isinstance(item, str):
                _one_line(item, self.key(name))
            if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
                raise ConfigError(f"{self.key(name)} = {_show(value)}: item {_show(item)} is not {form or 'a string'}")
        return tuple(value)

    def number(self, name: str, default: float) -> float:
        """Seconds and the like: an int or a float, finite (TOML has nan and inf)."""
        value = self.get(name, (int, float), default, form="a number of seconds")
        if isinstance(value, bool):
            raise ConfigError(f"{self.key(name)} = {_show(value)}: expected a number of seconds")
        if not math.isfinite(value):
            raise ConfigError(f"{self.key(name)} = {_show(value)}: expected a finite number of seconds")
        return float(value)

    def table(self, name: str, default: Any = _MISSING) -> "_Table":
        return _Table(self.get(name, dict, default, form="a table"), self.key(name))

    def finish(self) -> None:
        for name in self.data:
            if name not in self.known:
                near = difflib.get_close_matches(name, self.known, n=1, cutoff=0.5)
                hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(self.known)}"
                raise ConfigError(f"unknown key {self.key(name)}{hint}")


_CACHE_URL = {"redis": re.compile(r"^rediss?://[^\s/@]+(/[0-9]+)?$"),
              "s3": re.compile(r"^https?://[^\s/@]+/?$"),
              "webdav": re.compile(r"^https?://[^\s@]+$")}
_CACHE_URL_FORM = {"redis": "redis://HOST:PORT[/DB] (a password goes in SCCACHE_REDIS_PASSWORD, never here)",
                   "s3": "the S3 endpoint, https://HOST[:PORT] (keys go in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
                   "webdav": "https://HOST[:PORT]/PATH (credentials go in SCCACHE_WEBDAV_USERNAME/_PASSWORD or _TOKEN)"}


def _build_cache(t: _Table) -> BuildCache:
    backend = t.string("backend", "local", form=" or ".join(f'"{b}"' for b in CACHE_BACKENDS))
    if backend not in CACHE_BACKENDS:
        raise ConfigError(f"{t.key('backend')} = {_show(backend)}: expected "
                          + " or ".join(f'"{b}"' for b in CACHE_BACKENDS))
    url = t.string("url", "")
    bucket = t.string("bucket", "", pattern=re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$|^$"), form="an S3 bucket name")
    prefix = t.string("prefix", "", pattern=re.compile(r"^[A-Za-z0-9._/-]*$"), form="letters, digits, . _ / -")
    size = t.string("size", "20G", pattern=CACHE_SIZE, form='a size such as "20G" (K, M, G or T)')
    t.finish()
    if backend in _CACHE_URL:
        if not url:
            raise ConfigError(f"{t.key('url')} is missing; [build.cache] backend = \"{backend}\" needs {_CACHE_URL_FORM[backend]}")
        if not _CACHE_URL[backend].match(url):
            raise ConfigError(f"{t.key('url')} = {_show(url)}: expected {_CACHE_URL_FORM[backend]}")
    elif url:
        raise ConfigError(f"{t.key('url')} = {_show(url)}: backend \"{backend}\" takes no url")
    if (backend == "s3") != bool(bucket):
        raise ConfigError(f"{t.key('bucket')}: " + ("backend \"s3\" needs a bucket" if backend == "s3"
                                                   else f"backend \"{backend}\" takes no bucket"))
    return BuildCache(backend=backend, url=url, bucket=bucket, prefix=prefix, size=size)


def _show(value: Any) -> str:
    """A value as TOML would write it, on one line whatever it holds."""
    if isinstance(value, str):
        shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value[:200])
        return '"' + shown.replace('"', '\\"') + '"' + ("..." if len(value) > 200 else "")
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value).replace("True", "true").replace("False", "false")


def _one_line(value: str, key: str) -> None:
    """The rule for every string in the configuration: one line of printable
    characters.  A line break or control character could add a line to a
    spec, a known_hosts file or a .repo file, or end a command's argument."""
    if not value.isprintable():
        raise ConfigError(f"{key} = {_show(value)}: contains a line break or control character; expected one line of text")


def _plain_path(key: str, value: Any, resolved: Path) -> Path:
    """resolved (value made absolute), if it passes PLAIN_PATH."""
    if not PLAIN_PATH.match(str(resolved)):
        where = "" if str(resolved) == value else f", that is {_show(str(resolved))},"
        raise ConfigError(f"{key} = {_show(value)}{where} has characters that rpm, a shell, rsync or nginx would read;"
                          f" expected a path of letters, digits and . _ + - / (move it, or name another directory)")
    return resolved


def _compute_cap(t: _Table) -> int:
    key = t.key("compute_cap")
    t.known.append("compute_cap")
    if "compute_cap" not in t.data:
        raise ConfigError(f"{key} is missing; expected an integer such as 86")
    value = t.data["compute_cap"]
    if isinstance(value, int) and not isinstance(value, bool) and 30 <= value <= 199:
        return value
    text = str(value)
    m = re.fullmatch(r"(?:sm_?)?([0-9]+)\.([0-9])", text) or re.fullmatch(r"sm_?([0-9]+)()", text)
    if m:
        suggestion = f"{m.group(1)}{m.group(2)}"
        raise ConfigError(f"{key} = {_show(value)}: write the compute capability as an integer without a dot: compute_cap = {suggestion}")
    raise ConfigError(f"{key} = {_show(value)}: expected an integer compute capability such as 86, 89, 90 or 120")


def _ref(from_env: str | None, in_file: str) -> Ref:
    """$MRPM_REF, else upstream.ref, checked here once."""
    text, where = (from_env, REF_ENV) if from_env else (in_file, "upstream.ref")
    if not text:
        raise ConfigError(f"upstream.ref is missing (and {REF_ENV} is unset): expected a release tag vX.Y.Z or a 40-hex commit id")
    try:
        return parse_ref(text)
    except RefError as e:
        raise ConfigError(f"{where}: {e}") from None


def _version_tuple(text: str, key: str) -> tuple[int, int, int]:
    if not VERSION.match(text):
        raise ConfigError(f"{key}: {_show(text)} is not a version of the form X.Y.Z")
    return tuple(int(p) for p in text.split("."))  # type: ignore[return-value]


def parse_host(h: _Table, publish: Publish, base: Path, packager: str) -> Host:
    """The [host] table (h), checked; publish is the parsed [publish]."""
    url = urlsplit(publish.base_url)
    domain = url.hostname or ""
    if not DOMAIN.match(domain):
        raise ConfigError(f"publish.base_url = \"{publish.base_url}\": the host set-up needs a domain name there")
    if not URL_PATH.match(url.path) or any(part in (".", "..") for part in url.path.split("/")):
        raise ConfigError(f"publish.base_url = {_show(publish.base_url)}: its path goes into nginx's site as a location;"
                          f" expected \"\" or segments of letters, digits and . _ ~ - such as /mistralrs-rpm")
    if isinstance(publish.target, SshTarget):
        repo_root = Path(publish.target.path)
        upload_user = publish.target.user
    else:
        repo_root = publish.target.path
        upload_user = DEFAULT_UPLOAD_USER
    packager_email = re.search(r"<([^>]+)>", packager).group(1)

    def path(name: str, default: str) -> Path:
        return _plain_path(h.key(name), h.data.get(name, default),
                           (base / Path(h.string(name, default)).expanduser()).resolve())

    ipv4 = h.string("ipv4", "")
    ipv6 = h.string("ipv6", "")
    for key, value, version in (("ipv4", ipv4, 4), ("ipv6", ipv6, 6)):
        if value:
            try:
                ok = ipaddress.ip_address(value).version == version
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"host.{key} = \"{value}\": expected an IPv{version} address, or \"\" for none")
    reload_nginx = h.strings("reload_nginx", ["systemctl", "reload", "nginx"], form="a command as a list of words")
    if not reload_nginx:
        raise ConfigError('host.reload_nginx = []: expected a command such as ["systemctl", "reload", "nginx"]')
    host = Host(
        domain=domain.lower(),
        url_path=url.path.rstrip("/"),
        https_port=url.port or 443,
        http_port=h.get("http_port", int, 80, form="a port number"),
        repo_root=repo_root,
        upload_user=upload_user,
        email=h.string("email", "", pattern=OPTIONAL_EMAIL, form="an e-mail address"),
        cloudflare_zone=h.string("cloudflare_zone", "", pattern=re.compile(r"^(|" + DOMAIN.pattern[1:-2] + r")\Z"),
                                 form="a DNS zone such as \"example.org\""),
        cloudflare_token_file=h.string("cloudflare_token_file", ""),
        cloudflare_api=h.string("cloudflare_api", "https://api.cloudflare.com/client/v4",
                                pattern=re.compile(r"^https?://[^\s]+\Z"), form="an http(s) URL").rstrip("/"),
        ipv4=ipv4,
        ipv6=ipv6,
        upload_key=h.string("upload_key", "", pattern=re.compile(r"^(|" + SSH_PUBLIC_KEY.pattern[1:-2] + r")\Z"),
                            form="one SSH public key line such as \"ssh-ed25519 AAAA... ci\""),
        key_name=h.string("key_name", "mistralrs-rpm repository", pattern=re.compile(r"^[^<>()\n]{5,}\Z"),
                          form="a name of 5 or more characters without <>()"),
        key_email=h.string("key_email", "", pattern=OPTIONAL_EMAIL, form="an e-mail address") or packager_email,
        key_type=h.string("key_type", "ed25519", pattern=re.compile(r"^(ed25519|rsa4096)\Z"), form='"ed25519" or "rsa4096"'),
        key_expire=h.string("key_expire", "0", pattern=EXPIRE, form='"0" (never), a period such as "2y", or a date YYYY-MM-DD'),
        key_passphrase_file=h.string("key_passphrase_file", "") or publish.passphrase_file,
        key_dir=path("key_dir", "keys"),
        nginx_site=path("nginx_site", "/etc/nginx/conf.d/mistralrs-repo.conf"),
        nginx_conf=path("nginx_conf", "/etc/nginx/nginx.conf"),
        letsencrypt_dir=path("letsencrypt_dir", "/etc/letsencrypt"),
        cert_name=h.string("cert_name", "mistralrs-repo", pattern=re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z"),
                           form="a certificate name (letters, digits, . _ -)"),
        reload_nginx=reload_nginx,
        repo_shell=path("repo_shell", "/usr/local/bin/repo-shell"),
        release_package_version=h.get("release_package_version", int, 1, form="an integer"),
    )
    for port_key, port in (("http_port", host.http_port),):
        if not 1 <= port <= 65535:
            raise ConfigError(f"host.{port_key} = {port}: expected a port number")
    if host.release_package_version < 1:
        raise ConfigError(f"host.release_package_version = {host.release_package_version}: expected 1 or more")
    if not USER_NAME.match(host.upload_user):
        raise ConfigError(f"publish.target: {host.upload_user!r} is not a valid user name for the upload account")
    h.finish()
    return host


DEBUG_SUFFIXES = ("-debuginfo", "-debugsource")
"""Package names dnf treats as the debug data of another package."""


def _check_flavour_package(name: str) -> None:
    """A flavour's package name must not be another package's of this
    repository, nor one dnf reads as a debug package: a flavour "release"
    would be mistralrs-release, which every user installs first."""
    package = package_name(name)
    if package == RELEASE_PACKAGE:
        raise ConfigError(f"flavours.{name}: its package would be {package}, the repository's release package;"
                          " name the flavour after its GPU generation")
    if package.endswith(DEBUG_SUFFIXES):
        raise ConfigError(f"flavours.{name}: a package named {package} is read by dnf as debug data of another"
                          " package; choose a name that does not end in -debuginfo or -debugsource")


CHANNEL_RESERVED_SUBDIRS = ("repodata",)
"""Directory names the top channel uses itself: a channel there would share its metadata."""


def _check_channel_subdir(name: str, subdir: str, earlier: list[Channel]) -> None:
    """Every channel has a directory of its own on the host."""
    for other in earlier:
        if other.subdir == subdir:
            where = f'subdir = "{subdir}"' if subdir else 'subdir = "" (the top directory)'
            raise ConfigError(f"channels.{name}.subdir: {where} is already used by channel {other.name!r};"
                              " two channels would publish into one directory and one metadata")
    if subdir in CHANNEL_RESERVED_SUBDIRS:
        raise ConfigError(f"channels.{name}.subdir = {subdir!r}: the top channel's metadata directory has that name;"
                          " choose another")


def _programs(table: "_Table") -> tuple[Program, ...]:
    """[upstream.programs]: "X.Y.Z" = { package = "...", binary = "..." }."""
    programs = []
    for first in table.data:
        table.known.append(first)
        row = table.table(first)
        programs.append(Program(
            first=_version_tuple(first, f"{table.key(first)} (key)"),
            package=row.string("package", pattern=PACKAGE_NAME, form='a cargo package name such as "mistralrs-cli"'),
            binary=row.string("binary", pattern=PACKAGE_NAME, form='a binary name such as "mistralrs"'),
        ))
        row.finish()
    if not programs:
        raise ConfigError('upstream.programs is empty; expected rows such as'
                          ' "0.7.0" = { package = "mistralrs-cli", binary = "mistralrs" }')
    return tuple(sorted(programs, key=lambda p: p.first))


def parse_bundled(data: dict) -> BundledConfig:
    """The ``[[bundled]]`` and ``[[crate_license]]`` arrays of config.toml
    (data: the whole file; other keys are not read here)."""
    components = []
    for i, raw in enumerate(_array(data, "bundled")):
        t = _Table(raw, f"bundled[{i}]")
        comp = BundledComponent(
            name=t.string("name", pattern=COMPONENT_NAME, form='a component name such as "cutlass"'),
            version=t.string("version", pattern=COMPONENT_VERSION, form='an rpm version such as "3.9.2" or "0^20250101git1a2b3c4"'),
            license=t.string("license", form="an SPDX license expression"),
            url=t.string("url", pattern=COMPONENT_URL, form="an https:// URL of the component's source"),
            commit=t.string("commit", "", pattern=COMPONENT_COMMIT, form="a full 40-hex commit id"),
        )
        _spdx_or_config_error(comp.license, t.key("license"))
        t.known.append("evidence")  # read last: a misspelt key is named first
        t.finish()
        components.append(replace(comp, evidence=_evidence(t)))
    names = [c.name for c in components]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"bundled: {_show(name)} is declared twice; keep one entry per component")

    crate_licenses = []
    for i, raw in enumerate(_array(data, "crate_license")):
        t = _Table(raw, f"crate_license[{i}]")
        entry = CrateLicense(
            name=t.string("name", pattern=CRATE_NAME, form="a crate name"),
            version=t.string("version", pattern=SEMVER, form='the crate\'s exact version such as "0.1.0"'),
            license=t.string("license", form="an SPDX license expression"),
        )
        t.finish()
        _spdx_or_config_error(entry.license, t.key("license"))
        if any((e.name, e.version) == (entry.name, entry.version) for e in crate_licenses):
            raise ConfigError(f"crate_license: {entry.name} {entry.version} is declared twice; keep one entry")
        crate_licenses.append(entry)
    return BundledConfig(components=tuple(components), crate_licenses=tuple(crate_licenses))


def _evidence(entry: _Table) -> Evidence:
    """bundled[i].evidence = { path = "dir/file", contains = "text" }: a path
    inside upstream's tree, in the form git prints it (no "..", no leading
    "/"; the licenses stage checks where it resolves)."""
    if "evidence" not in entry.data:
        raise ConfigError(f"{entry.key('evidence')} is missing; expected what proves the component is in upstream's"
                          ' source, e.g. evidence = { path = "dir/build.rs", contains = "text" }')
    t = entry.table("evidence")
    path = t.string("path", pattern=EVIDENCE_PATH, form='a relative path in upstream\'s tree such as "mistralrs-quant/build.rs"')
    if any(part in (".", "..") for part in path.split("/")):
        raise ConfigError(f"{t.key('path')} = {_show(path)}: expected a path inside upstream's tree, without . or ..")
    contains = t.string("contains", "", form="the text the file must contain")
    if "contains" in t.data and not 0 < len(contains) <= 200:
        raise ConfigError(f"{t.key('contains')} = {_show(contains)}: expected 1 to 200 characters")
    t.finish()
    return Evidence(path=path, contains=contains)


def _array(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key} = {_show(value)}: expected an array of tables ([[{key}]])")
    return value


def _spdx_or_config_error(text: str, key: str) -> None:
    problem = spdx_problem(text)
    if problem:
        raise ConfigError(f"{key} = {_show(text)}: {problem}")


def parse(data: dict, source: Path) -> Config:
    top = _Table(data, "")
    base = source.parent

    up = top.table("upstream")
    if "package" in up.data or "binary_names" in up.data:
        raise ConfigError("upstream.package and upstream.binary_names are replaced by [upstream.programs]:"
                          ' rows such as "0.7.0" = { package = "mistralrs-cli", binary = "mistralrs" }')
    programs = _programs(up.table("programs"))
    ref_in_file = up.string("ref", "", form="a release tag (vX.Y.Z) or a 40-hex commit id")
    upstream_url = up.string("url", pattern=UPSTREAM_URL, form="a git URL (https://, ssh://, git://, file://, user@host:path) or a local path")
    if "::" in upstream_url:
        raise ConfigError(f"upstream.url = {_show(upstream_url)}: git's <helper>::<address> form is not accepted; give a URL or a path")
    upstream = Upstream(
        url=upstream_url,
        branch=up.string("branch", "master", pattern=BRANCH_NAME, form="a branch name such as \"master\""),
        ref=_ref(os.environ.get(REF_ENV), ref_in_file),
        programs=programs,
        timeout=up.number("timeout", 120),
    )
    if upstream.timeout < 1:
        raise ConfigError(f"upstream.timeout = {upstream.timeout:g}: expected 1 second or more")
    up.finish()

    b = top.table("build")
    build = Build(
        features=b.strings("features", pattern=FEATURE_NAME, form="a cargo feature name"),
        rustflags=b.string("rustflags", "-C target-cpu=generic"),
        nvcc_threads=b.get("nvcc_threads", int, 2, form="an integer"),
        min_rust=b.string("min_rust", "1.94", pattern=RUST_VERSION, form="a Rust version such as \"1.94\""),
        cuda_version=b.string("cuda_version", pattern=CUDA_VERSION, form="a CUDA version such as \"13.0\""),
        min_free_gib=b.get("min_free_gib", int, 50, form="an integer (GiB)"),
        rebuild_check=b.string("rebuild_check", "off", pattern=REBUILD_CHECK, form='"off" or "releases"'),
    )
    if build.nvcc_threads < 1:
        raise ConfigError(f"build.nvcc_threads = {build.nvcc_threads}: expected 1 or more")
    build = dataclasses.replace(build, cache=_build_cache(b.table("cache", {})))
    b.finish()

    fl = top.table("flavours")
    flavours = []
    seen_caps: dict[int, str] = {}
    for name in fl.data:
        fl.known.append(name)
        if not FLAVOUR_NAME.match(name):
            raise ConfigError(f"flavours.{name}: a flavour name is lower-case letters, digits and '-', starting with a letter")
        _check_flavour_package(name)
        f = _Table(fl.data[name], f"flavours.{name}")
        flavour = Flavour(
            name=name,
            compute_cap=_compute_cap(f),
            gpus=f.strings("gpus", pattern=SPEC_FREE_TEXT, form="a GPU name (no '%', no leading or trailing space)"),
            extra_features=f.strings("extra_features", [], pattern=FEATURE_NAME, form="a cargo feature name"),
        )
        f.finish()
        if flavour.compute_cap in seen_caps:
            raise ConfigError(f"flavours.{name}.compute_cap = {flavour.compute_cap}: already used by flavour {seen_caps[flavour.compute_cap]!r}")
        seen_caps[flavour.compute_cap] = name
        flavours.append(flavour)
    if not flavours:
        raise ConfigError("flavours: no flavour configured; add one such as [flavours.ampere] with compute_cap = 86")

    ch = top.table("channels")
    channels = []
    for name in ch.data:
        ch.known.append(name)
        if not FLAVOUR_NAME.match(name):
            raise ConfigError(f"channels.{_show(name)}: a channel name is lower-case letters, digits and '-', starting with a letter")
        c = _Table(ch.data[name], f"channels.{name}")
        subdir = c.string("subdir", pattern=re.compile(r"^([a-z0-9][a-z0-9-]*)?\Z"), form='"" or a directory name such as "unstable"')
        c.finish()
        _check_channel_subdir(name, subdir, channels)
        channels.append(Channel(name=name, subdir=subdir))
    for required in REQUIRED_CHANNELS:
        if required not in [c.name for c in channels]:
            raise ConfigError(f"channels.{required} is missing; expected a table with subdir = \"...\"")

    p = top.table("package")
    if "license" in p.data:
        raise ConfigError(
            f"package.license = {_show(p.data['license'])}: the License tag is computed from the crates the binary"
            " links and the [[bundled]] components; remove the key (declare non-crate code with [[bundled]])"
        )
    feature_requires = p.table("feature_requires", {})
    fr = []
    for feat in feature_requires.data:
        if not FEATURE_NAME.match(feat):
            raise ConfigError(f"package.feature_requires.{_show(feat)}: expected a cargo feature name")
        fr.append((feat, feature_requires.strings(feat, pattern=DEP_NAME, form="a package name or soname")))
    package = Package(
        payload=p.string("payload", pattern=PAYLOAD, form='an rpm payload such as "w19.zstdio" or "w10L27T0.zstdio" (zstd window L at most 27)'),
        url=p.string("url", pattern=URL, form="an http(s) URL without '%', spaces, quotes, '?' or '#'"),
        summary=p.string("summary", pattern=SUMMARY, form="one line of at most 200 characters"),
        packager=p.string("packager", pattern=PACKAGER, form='"Name <email>", without \'%\''),
        requires=p.strings("requires", [], pattern=DEP_NAME, form="a package name or soname"),
        feature_requires=tuple(fr),
        dist=p.string("dist", ".fc43", pattern=re.compile(r"^\.[a-z0-9]+\Z"), form='a dist tag such as ".fc43"'),
        releasever=p.string("releasever", "43", pattern=re.compile(r"^[0-9]+\Z"), form='a release number such as "43"'),
    )
    p.finish()

    pub = top.table("publish")
    publish = Publish(
        target=parse_target(pub.string("target", form=TARGET_FORM)),
        host_key=pub.string("host_key", "", pattern=re.compile(r"^(|" + HOST_KEY.pattern[1:-2] + r")\Z"),
                            form='one known_hosts line such as "repo.example.org ssh-ed25519 AAAA..." (no marker, no wildcard)'),
        ssh_key=pub.string("ssh_key", "", pattern=SSH_KEY_FILE,
                           form="a key file path of letters, digits and . _ + - / (~/ for the home directory), or \"\""),
        ssh_key_env=pub.string("ssh_key_env", "MRPM_SSH_KEY", pattern=re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)?\Z"),
                               form="an environment variable name"),
        base_url=pub.string("base_url", pattern=URL, form="an http(s) URL without '%', spaces, quotes, '?' or '#'"),
        retention=pub.get("retention", int, 3, form="an integer"),
        key_file=pub.string("key_file", ""),
        key_env=pub.string("key_env", "MRPM_SIGNING_KEY", pattern=ENV_NAME, form="an environment variable name"),
        passphrase_file=pub.string("passphrase_file", ""),
        passphrase_env=pub.string("passphrase_env", "MRPM_SIGNING_PASSPHRASE", pattern=ENV_NAME, form="an environment variable name"),
        metadata_expire=parse_duration(pub.string("metadata_expire", "1h", pattern=DURATION, form='a duration such as "1h"')),
        key_fingerprint=pub.string("key_fingerprint", "", pattern=re.compile(r"^([0-9A-Fa-f]{4} ?){10}\Z|^\Z"),
                                   form="the key's whole fingerprint (40 hex digits) or \"\"").replace(" ", "").upper(),
    )
    if publish.retention < 1:
        raise ConfigError(f"publish.retention = {publish.retention}: expected 1 or more")
    if publish.is_remote and not publish.host_key:
        raise ConfigError("publish.host_key is missing: a remote target needs its pinned host key (a known_hosts line)")
    pub.finish()

    po = top.table("poll", {})
    poll = Poll(
        api_url=po.string("api_url", "https://api.github.com", pattern=re.compile(r"^https?://[^\s]+\Z"), form="an http(s) URL"),
        repository=po.string("repository", "", pattern=re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100})?\Z"),
                             form='"owner/name" or ""'),
        token_env=po.string("token_env", "MRPM_GITHUB_TOKEN", pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z"),
                            form="an environment variable name"),
        timeout=po.number("timeout", 20),
        retries=po.get("retries", int, 3, form="an integer"),
        backoff=po.number("backoff", 2.0),
        retrigger_after=po.number("retrigger_after", 21600),
        snapshot_interval=po.number("snapshot_interval", 86400),
        dispatch_token_env=po.string("dispatch_token_env", "MRPM_DISPATCH_TOKEN",
                                     pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z"), form="an environment variable name"),
    )
    if poll.timeout <= 0 or poll.retries < 0 or poll.backoff < 0 or poll.retrigger_after < 0:
        raise ConfigError("poll: timeout must be > 0, retries and backoff >= 0")
    po.finish()

    do = top.table("doctor", {})
    doctor = Doctor(skip=do.strings("skip", [], pattern=re.compile(f"^({'|'.join(DOCTOR_CHECKS)})\\Z"),
                                    form="one of " + ", ".join(DOCTOR_CHECKS)))
    do.finish()

    host = parse_host(top.table("host", {}), publish, base, package.packager)

    top.known += ["bundled", "crate_license"]
    bundled = parse_bundled(data)

    pa = top.table("paths", {})
    cache_key, cache = "paths.cache", pa.string("cache", ".cache")
    if os.environ.get(CACHE_ENV):
        cache_key, cache = CACHE_ENV, os.environ[CACHE_ENV]
        _one_line(cache, CACHE_ENV)

    def plain(key: str, value: str) -> Path:
        return _plain_path(key, value, (base / value).resolve())

    paths = Paths(
        root=base,
        cache=plain(cache_key, cache),
        build=plain("paths.build", pa.string("build", "build")),
        artifacts=plain("paths.artifacts", pa.string("artifacts", "artifacts")),
        dist=plain("paths.dist", pa.string("dist", "dist")),
    )
    pa.finish()
    top.finish()
    return Config(source=source, upstream=upstream, build=build, flavours=tuple(flavours),
                  channels=tuple(channels), package=package, publish=publish, paths=paths, poll=poll,
                  host=host, doctor=doctor, bundled=bundled)


def default_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).resolve()
    return DEFAULT_CONFIG


MAX_CONFIG_BYTES = 1 << 20
"""A configuration is a few KiB; anything past this is not one (/dev/zero)."""


def read_config_text(path: Path) -> str:
    """The configuration's text: a regular file of at most MAX_CONFIG_BYTES
    (run.read_regular_file: a FIFO or /dev/zero is refused), UTF-8."""
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES, "configuration", ConfigError)
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration at {path}: copy config.toml from the project's top directory and edit it"
            f" (or point {CONFIG_ENV} at one)"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); TOML files are UTF-8") from None


def load(path: Path | None = None) -> Config:
    path = path or default_path()
    text = read_config_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return parse(data, path.resolve())
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None
