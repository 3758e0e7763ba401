"""config.toml -> frozen dataclasses, with every check in one place.

Nothing else in the project reads the raw TOML.  Every error names the key,
the value found and the form expected, and an unknown key names the nearest
known one.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .layout import DEFAULT_CONFIG
from .refs import Ref, RefError, parse_ref
from .run import UserError
from .spdx import spdx_problem

CONFIG_ENV = "MRPM_CONFIG"
REF_ENV = "MRPM_REF"
CACHE_ENV = "MRPM_CACHE"
"""Overrides paths.cache: CI runners point it at a directory that outlives
the job's workspace, so the mirror and the cargo target dirs are kept."""

FLAVOUR_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}\Z")
FEATURE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,100}\Z")
VERSION = re.compile(r"^\d+\.\d+\.\d+\Z")
RUST_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?\Z")
CUDA_VERSION = re.compile(r"^\d+\.\d+\Z")
# rpm's payload syntax; zstd's long window (L) only up to 27: rpm 4.18 writes
# L28 but cannot read it back.
PAYLOAD = re.compile(r"^(w\d+(L(1\d|2[0-7]))?(T\d+)?\.zstdio|w\d+(T\d+)?\.(xzdio|gzdio|ufdio|bzdio|lzdio))\Z")
DEP_NAME = re.compile(r"^[A-Za-z0-9_.+()-]+( (>=|<=|=|>|<) [A-Za-z0-9_.+~^-]+)?\Z")
SSH_TARGET = re.compile(r"^(?P<user>[a-z_][a-z0-9_-]*)@(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(?P<path>/[A-Za-z0-9._/-]+)\Z")
# [[bundled]] and [[crate_license]]: what a Provides line and a crate's
# identity may hold (rpm's EVR characters, cargo's names, semver).
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z")
COMPONENT_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~^]{0,99}\Z")
COMPONENT_COMMIT = re.compile(r"^([0-9a-f]{40})?\Z")  # or empty: not pinned to a commit
COMPONENT_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~%/+-]*)?\Z")
CRATE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\Z")
# semver: X.Y.Z[-pre][+build]
SEMVER = re.compile(
    r"^(?P<core>(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*))"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?\Z"
)


class ConfigError(UserError):
    pass


@dataclass(frozen=True)
class Upstream:
    url: str
    branch: str
    package: str
    ref: Ref
    """The ref to build: $MRPM_REF, else upstream.ref; checked at load."""
    binary_names: tuple[tuple[tuple[int, int, int], str], ...]
    """(first version, binary name) pairs, sorted by version."""

    def binary_name(self, version: str) -> str:
        """The binary's name at upstream version X.Y.Z (rc suffix ignored)."""
        base = tuple(int(p) for p in re.match(r"^(\d+)\.(\d+)\.(\d+)", version).groups())
        name = None
        for first, candidate in self.binary_names:
            if base >= first:
                name = candidate
        if name is None:
            raise ConfigError(
                f"upstream.binary_names: no entry covers version {version}; add one such as \"0.0.0\" = \"mistralrs-server\""
            )
        return name


@dataclass(frozen=True)
class Build:
    features: tuple[str, ...]
    rustflags: str
    nvcc_threads: int
    min_rust: str
    cuda_version: str
    min_free_gib: int


@dataclass(frozen=True)
class Flavour:
    name: str
    compute_cap: int
    gpus: tuple[str, ...]
    extra_features: tuple[str, ...] = ()

    def features(self, build: Build) -> tuple[str, ...]:
        return tuple(sorted(set(build.features + self.extra_features)))


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


def parse_target(text: str, base: Path) -> Target:
    """A local directory (relative to the config file's directory) or
    user@host:/path."""
    m = SSH_TARGET.match(text)
    if m:
        return SshTarget(m.group("user"), m.group("host"), PurePosixPath(m.group("path").rstrip("/") or "/"))
    return LocalTarget((base / Path(text).expanduser()).resolve())


DURATION = re.compile(r"^(\d+)([smhd]?)\Z")
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


DOCTOR_CHECKS = ("cudnn", "nccl", "cutlass", "memory", "compiler")
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
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?\Z")
EXPIRE = re.compile(r"^(0|\d+[dwmy]?|\d{4}-\d{2}-\d{2})\Z")
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
class BundledComponent:
    """Code compiled into the binary that no Cargo.lock lists."""

    name: str
    version: str
    license: str
    url: str
    commit: str = ""


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
        if pattern is not None and not pattern.match(value):
            raise ConfigError(f"{self.key(name)} = {_show(value)}: expected {form}")
        return value

    def strings(self, name: str, default: Any = _MISSING, *, pattern: re.Pattern | None = None, form: str = "") -> tuple[str, ...]:
        value = self.get(name, list, default, form=f"a list of strings ({form})" if form else "a list of strings")
        for item in value:
            if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
                raise ConfigError(f"{self.key(name)} = {_show(value)}: item {_show(item)} is not {form or 'a string'}")
        return tuple(value)

    def table(self, name: str, default: Any = _MISSING) -> "_Table":
        return _Table(self.get(name, dict, default, form="a table"), self.key(name))

    def finish(self) -> None:
        for name in self.data:
            if name not in self.known:
                near = difflib.get_close_matches(name, self.known, n=1, cutoff=0.5)
                hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(self.known)}"
                raise ConfigError(f"unknown key {self.key(name)}{hint}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return repr(value).replace("True", "true").replace("False", "false")


def _compute_cap(t: _Table) -> int:
    key = t.key("compute_cap")
    t.known.append("compute_cap")
    if "compute_cap" not in t.data:
        raise ConfigError(f"{key} is missing; expected an integer such as 86")
    value = t.data["compute_cap"]
    if isinstance(value, int) and not isinstance(value, bool) and 30 <= value <= 199:
        return value
    text = str(value)
    m = re.fullmatch(r"(?:sm_?)?(\d+)\.(\d)", text) or re.fullmatch(r"sm_?(\d+)()", text)
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
    if isinstance(publish.target, SshTarget):
        repo_root = Path(publish.target.path)
        upload_user = publish.target.user
    else:
        repo_root = publish.target.path
        upload_user = DEFAULT_UPLOAD_USER
    packager_email = re.search(r"<([^>]+)>", packager).group(1)

    def path(name: str, default: str) -> Path:
        return (base / Path(h.string(name, default)).expanduser()).resolve()

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
        email=h.string("email", "", pattern=re.compile(r"^(|[^@\s]+@[^@\s]+\.[^@\s]+)\Z"), form="an e-mail address"),
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
        key_email=h.string("key_email", "", pattern=re.compile(r"^(|[^@\s]+@[^@\s]+\.[^@\s]+)\Z"), form="an e-mail address") or packager_email,
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
        t.finish()
        _spdx_or_config_error(comp.license, t.key("license"))
        components.append(comp)
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
    names_table = up.table("binary_names")
    binary_names = []
    for first, name in names_table.data.items():
        names_table.known.append(first)
        if not isinstance(name, str) or not PACKAGE_NAME.match(name):
            raise ConfigError(f"{names_table.key(first)} = {_show(name)}: expected a binary name such as \"mistralrs\"")
        binary_names.append((_version_tuple(first, f"{names_table.key(first)} (key)"), name))
    if not binary_names:
        raise ConfigError('upstream.binary_names is empty; expected entries such as "0.8.5" = "mistralrs"')
    ref_in_file = up.string("ref", "", form="a release tag (vX.Y.Z) or a 40-hex commit id")
    upstream = Upstream(
        url=up.string("url", form="a git URL or a local path"),
        branch=up.string("branch", "master", pattern=BRANCH_NAME, form="a branch name such as \"master\""),
        package=up.string("package", "mistralrs-cli", pattern=PACKAGE_NAME, form="a cargo package name"),
        ref=_ref(os.environ.get(REF_ENV), ref_in_file),
        binary_names=tuple(sorted(binary_names)),
    )
    up.finish()

    b = top.table("build")
    build = Build(
        features=b.strings("features", pattern=FEATURE_NAME, form="a cargo feature name"),
        rustflags=b.string("rustflags", "-C target-cpu=generic"),
        nvcc_threads=b.get("nvcc_threads", int, 2, form="an integer"),
        min_rust=b.string("min_rust", "1.94", pattern=RUST_VERSION, form="a Rust version such as \"1.94\""),
        cuda_version=b.string("cuda_version", pattern=CUDA_VERSION, form="a CUDA version such as \"13.0\""),
        min_free_gib=b.get("min_free_gib", int, 50, form="an integer (GiB)"),
    )
    if build.nvcc_threads < 1:
        raise ConfigError(f"build.nvcc_threads = {build.nvcc_threads}: expected 1 or more")
    b.finish()

    fl = top.table("flavours")
    flavours = []
    seen_caps: dict[int, str] = {}
    for name in fl.data:
        fl.known.append(name)
        if not FLAVOUR_NAME.match(name):
            raise ConfigError(f"flavours.{name}: a flavour name is lower-case letters, digits and '-', starting with a letter")
        f = _Table(fl.data[name], f"flavours.{name}")
        flavour = Flavour(
            name=name,
            compute_cap=_compute_cap(f),
            gpus=f.strings("gpus", form="a list of GPU names"),
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
        c = _Table(ch.data[name], f"channels.{name}")
        subdir = c.string("subdir", pattern=re.compile(r"^([a-z0-9][a-z0-9-]*)?\Z"), form='"" or a directory name such as "unstable"')
        c.finish()
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
        fr.append((feat, feature_requires.strings(feat, pattern=DEP_NAME, form="a package name or soname")))
    package = Package(
        payload=p.string("payload", pattern=PAYLOAD, form='an rpm payload such as "w19.zstdio" or "w10L27T0.zstdio" (zstd window L at most 27)'),
        url=p.string("url"),
        summary=p.string("summary"),
        packager=p.string("packager", pattern=re.compile(r"^[^<>\n]+ <[^<>@\s]+@[^<>\s]+>\Z"), form='"Name <email>"'),
        requires=p.strings("requires", [], pattern=DEP_NAME, form="a package name or soname"),
        feature_requires=tuple(fr),
        dist=p.string("dist", ".fc43", pattern=re.compile(r"^\.[a-z0-9]+\Z"), form='a dist tag such as ".fc43"'),
        releasever=p.string("releasever", "43", pattern=re.compile(r"^\d+\Z"), form='a release number such as "43"'),
    )
    p.finish()

    pub = top.table("publish")
    publish = Publish(
        target=parse_target(pub.string("target", form="a local directory or user@host:/path"), base),
        host_key=pub.string("host_key", ""),
        ssh_key=pub.string("ssh_key", ""),
        ssh_key_env=pub.string("ssh_key_env", "MRPM_SSH_KEY", pattern=re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)?\Z"),
                               form="an environment variable name"),
        base_url=pub.string("base_url", pattern=re.compile(r"^https?://[^\s]+\Z"), form="an http(s) URL"),
        retention=pub.get("retention", int, 3, form="an integer"),
        key_file=pub.string("key_file", ""),
        key_env=pub.string("key_env", "MRPM_SIGNING_KEY"),
        passphrase_file=pub.string("passphrase_file", ""),
        passphrase_env=pub.string("passphrase_env", "MRPM_SIGNING_PASSPHRASE"),
        metadata_expire=parse_duration(pub.string("metadata_expire", "1h", pattern=DURATION, form='a duration such as "1h"')),
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
        timeout=float(po.get("timeout", (int, float), 20, form="seconds")),
        retries=po.get("retries", int, 3, form="an integer"),
        backoff=float(po.get("backoff", (int, float), 2.0, form="seconds")),
        retrigger_after=float(po.get("retrigger_after", (int, float), 21600, form="seconds")),
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
    cache = pa.string("cache", ".cache")
    paths = Paths(
        root=base,
        cache=(base / (os.environ.get(CACHE_ENV) or cache)).resolve(),
        build=(base / pa.string("build", "build")).resolve(),
        artifacts=(base / pa.string("artifacts", "artifacts")).resolve(),
        dist=(base / pa.string("dist", "dist")).resolve(),
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


def load(path: Path | None = None) -> Config:
    path = path or default_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration at {path}: copy config.toml from the project's top directory and edit it"
            f" (or point {CONFIG_ENV} at one)"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return parse(data, path.resolve())
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None
