"""config.toml's tables as frozen dataclasses, each setting declared once:
its key, type, default, form and help (:func:`.schema.setting`)."""

from __future__ import annotations

import re
from dataclasses import Field, dataclass
from pathlib import Path

from ..refs import Ref, RefError, parse_ref
from . import patterns as P
from .kinds import CacheBackend, ChannelName, DoctorCheck, Gate, RebuildCheck, Smoke
from .schema import ConfigError, Spec, Table, optional, read, setting, show
from .targets import TARGET_FORM, Target, parse_duration, parse_target


def at_least(low: int | float, what: str = "") -> object:
    def check(value: int | float) -> str:
        return "" if value >= low else f"expected {what or f'{low} or more'}"
    return check


def up_to(high: float, what: str, *, above_zero: bool = False) -> object:
    """A closed range from 0 (or above 0); TOML's nan fails it too."""
    bounds = "above 0" if above_zero else "from 0"

    def check(value: int | float) -> str:
        fits = 0 <= value <= high and not (above_zero and value <= 0)
        return "" if fits else f"expected {what} {bounds} up to {high:.0f}"
    return check


ENV_FORM = "an environment variable name"


@dataclass(frozen=True, kw_only=True)
class Program:
    """What upstream's server is called from one upstream version on."""

    first: tuple[int, int, int]
    package: str = setting(pattern=P.PACKAGE_NAME, form='a cargo package name such as "mistralrs-cli"')
    """The cargo package that builds it (`cargo build -p <package>`)."""
    binary: str = setting(pattern=P.PACKAGE_NAME, form='a binary name such as "mistralrs"')
    """The bin target's name: the installed program, the unit's ExecStart."""
    smoke: Smoke = setting(Smoke.CHAT, form="one of " + ", ".join(Smoke))
    """What `doit gate` runs with this binary on the GPU (:class:`Smoke`)."""


@dataclass(frozen=True, kw_only=True)
class Upstream:
    url: str = setting(pattern=P.UPSTREAM_URL, form="a git URL (https://, ssh://, git://, file://, user@host:path) or a local path",
                       check=lambda url: "git's <helper>::<address> form is not accepted; give a URL or a path" if "::" in url else "",
                       help="git URL or local path")
    branch: str = setting("master", pattern=P.BRANCH_NAME, form='a branch name such as "master"',
                          help="snapshots must be on it")
    ref: Ref = setting(env="MRPM_REF", read=lambda t, f: read_ref(t, f), help="what a plain `doit` builds; `MRPM_REF` overrides it, and one of the two must be set")
    """The ref to build: $MRPM_REF, else upstream.ref; checked at load."""
    timeout: float = setting(120.0, check=at_least(1, "1 second or more"), shown_default="120",
                             help="seconds a clone or fetch may go without progress, at least 1")
    """Seconds a git clone or fetch may go without progress (no answer, or
    under 1 kB/s over http(s); no answer over ssh) before it is stopped."""
    programs: tuple[Program, ...] = setting(read=lambda t, f: read_programs(t, f), help="below")
    """Sorted by first version; a version below the first row is refused."""

    def program(self, version: str) -> Program:
        """Package and binary at upstream version X.Y.Z (an rc suffix ignored)."""
        m = re.match(r"^([0-9]+)\.([0-9]+)\.([0-9]+)", version)
        if not m:
            raise ConfigError(f"upstream version {version!r}: expected X.Y.Z or X.Y.Z-rcN")
        base = tuple(int(p) for p in m.groups())
        chosen = [program for program in self.programs if base >= program.first]
        if not chosen:
            first = ".".join(map(str, self.programs[0].first))
            raise ConfigError(
                f"upstream version {version} is older than {first}, the first row of upstream.programs:"
                f" before 0.7.0 upstream's server is mistralrs-server, whose command line has no `serve`"
                f" subcommand for the unit; such versions are not packaged"
            )
        return chosen[-1]

    def binary_name(self, version: str) -> str:
        return self.program(version).binary

    @property
    def package(self) -> str:
        """The newest row's package (for messages that name no version)."""
        return self.programs[-1].package


@dataclass(frozen=True, kw_only=True)
class BuildCache:
    """[build.cache]: sccache in front of rustc and nvcc.  "local" keeps it
    under the cache directory; "redis", "s3" and "webdav" share it between
    runners.  Secrets (passwords, keys, tokens) never come from here: the
    sccache server reads them from its environment (SCCACHE_REDIS_PASSWORD,
    AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SCCACHE_WEBDAV_TOKEN, ...)."""

    backend: CacheBackend = setting(CacheBackend.LOCAL, help="`<cache>/sccache`, limit `size`; `\"off\"`; or shared by all"
                                    " runners: `\"redis\"` / `\"s3\"` (+ `bucket`, `prefix`) / `\"webdav\"` with `url`")
    url: str = setting("", help="redis://, the S3 endpoint or the WebDAV base; never with a password")
    """redis:// endpoint, S3 endpoint (https://...), or WebDAV base URL."""
    bucket: str = setting("", pattern=optional(P.S3_BUCKET), form="an S3 bucket name", help="S3 only")
    prefix: str = setting("", pattern=P.KEY_PREFIX, form="letters, digits, . _ / -", help="a shared store's key prefix")
    """S3/WebDAV key prefix (one store, several projects)."""
    size: str = setting("20G", pattern=P.CACHE_SIZE, form='a size such as "20G" (K, M, G or T)',
                        help="the local store's limit; a shared one's is the server's own")
    """The local cache's size limit (sccache evicts the least recently used).
    A shared backend's limit is the server's (redis maxmemory, a bucket's
    lifecycle rule)."""

    @property
    def enabled(self) -> bool:
        return self.backend != CacheBackend.OFF


_CACHE_URL = {"redis": (re.compile(r"^rediss?://[^\s/@]+(/[0-9]+)?$"),
                        "redis://HOST:PORT[/DB] (a password goes in SCCACHE_REDIS_PASSWORD, never here)"),
              "s3": (re.compile(r"^https?://[^\s/@]+/?$"),
                     "the S3 endpoint, https://HOST[:PORT] (keys go in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"),
              "webdav": (re.compile(r"^https?://[^\s@]+$"),
                         "https://HOST[:PORT]/PATH (credentials go in SCCACHE_WEBDAV_USERNAME/_PASSWORD or _TOKEN)")}


def check_build_cache(cache: BuildCache, key: str) -> BuildCache:
    """What the backend needs (a url, an S3 bucket) and only that."""
    backend = cache.backend
    if backend in _CACHE_URL:
        pattern, form = _CACHE_URL[backend]
        if not cache.url:
            raise ConfigError(f"{key}.url is missing; [build.cache] backend = \"{backend}\" needs {form}")
        if not pattern.match(cache.url):
            raise ConfigError(f"{key}.url = {show(cache.url)}: expected {form}")
    elif cache.url:
        raise ConfigError(f"{key}.url = {show(cache.url)}: backend \"{backend}\" takes no url")
    if (backend == CacheBackend.S3) != bool(cache.bucket):
        raise ConfigError(f"{key}.bucket: " + ("backend \"s3\" needs a bucket" if backend == CacheBackend.S3
                                                else f"backend \"{backend}\" takes no bucket"))
    return cache


@dataclass(frozen=True, kw_only=True)
class Build:
    features: tuple[str, ...] = setting(pattern=P.FEATURE_NAME, form="a cargo feature name", help="cargo features")
    rustflags: str = setting("-C target-cpu=generic", help="upstream's `.cargo/config.toml` says `native`, which a package must not")
    nvcc_threads: int = setting(2, check=at_least(1), help="~5 GiB of memory each")
    min_rust: str = setting("1.94", pattern=P.RUST_VERSION, form='a Rust version such as "1.94"')
    cuda_version: str = setting(pattern=P.CUDA_VERSION, form='a CUDA version such as "13.0"', help='nvcc\'s version, e.g. `"13.0"`')
    min_free_gib: int = setting(50, form="an integer (GiB)", help="`config.toml` says 60")
    rebuild_check: RebuildCheck = setting(RebuildCheck.OFF, help='`"releases"`: a release tag\'s RPM is built a second time'
                                          " and published only if identical, see Threat model")
    """"releases": a release tag's RPM is built a second time, independently
    (rebuild-check), and published only if the two are the same bytes."""
    cache: BuildCache = setting(BuildCache(), convert=lambda cache, key: check_build_cache(cache, key), shown_default="", help="the table `[build.cache]`, below")

    @property
    def rebuild_releases(self) -> bool:
        return self.rebuild_check == RebuildCheck.RELEASES


def package_name(flavour: str) -> str:
    """The RPM name of the flavour named ``flavour``."""
    return f"mistralrs-{flavour}"


@dataclass(frozen=True, kw_only=True)
class Flavour:
    name: str
    compute_cap: int = setting(read=lambda t, f: read_compute_cap(t, f), help="integer: 86, 89, 90, 120, …; one flavour per value")
    gpus: tuple[str, ...] = setting(pattern=P.SPEC_FREE_TEXT, form="a GPU name (no '%', no leading or trailing space)",
                                    help="shown to users")
    extra_features: tuple[str, ...] = setting((), pattern=P.FEATURE_NAME, form="a cargo feature name")
    gate: Gate = setting(Gate.REQUIRED, form="one of " + ", ".join(Gate),
                         help='`doit promote` adds a package only after it passed its gate (`doit gate:hopper` for hopper) on a GPU'
                              ' of this compute capability; `"off"`: promoted untested ("not tested on hardware")')

    def features(self, build: Build) -> tuple[str, ...]:
        return tuple(sorted(set(build.features + self.extra_features)))

    @property
    def package(self) -> str:
        """The flavour's RPM name."""
        return package_name(self.name)


@dataclass(frozen=True, kw_only=True)
class Channel:
    name: str
    subdir: str = setting(pattern=P.CHANNEL_SUBDIR, form='"" or a directory name such as "unstable"',
                          help='below `fedora/<releasever>/<basearch>/`: `""` for `stable`, `"unstable"` for `unstable`')
    """Path below <base>/fedora/<releasever>/<basearch>/ ("" for the top)."""

    @property
    def is_stable(self) -> bool:
        return self.name == ChannelName.STABLE


DEP_FORM = 'a package name or soname, or NAME-{cuda} (one for each CUDA version of package.cuda_runtime)'
CUDA_PLACEHOLDER = "-{cuda}"
MAX_CUDA_MINORS = 32


def check_cuda_range(value: str) -> str:
    first_major, first_minor, last_major, last_minor = map(int, P.CUDA_RANGE.match(value).groups())
    if first_major != last_major:
        return "expected versions of one CUDA major (its libraries' sonames change with the major)"
    if not first_minor <= last_minor < first_minor + MAX_CUDA_MINORS:
        return f"expected the first version, then a later one at most {MAX_CUDA_MINORS - 1} minors on"
    return ""


@dataclass(frozen=True, kw_only=True)
class Package:
    payload: str = setting(pattern=P.PAYLOAD, form='an rpm payload such as "w19.zstdio" or "w10L27T0.zstdio" (zstd window L at most 27)',
                           help="rpm's payload compression; `config.toml`: `\"w10L27T0.zstdio\"`, see Packaging")
    url: str = setting(pattern=P.URL, form="an http(s) URL without '%', spaces, quotes, '?' or '#'")
    summary: str = setting(pattern=P.SUMMARY, form="one line of at most 200 characters")
    packager: str = setting(pattern=P.PACKAGER, form='"Name <email>", without \'%\'', help="`Name <email>`")
    requires: tuple[str, ...] = setting((), pattern=P.DEP_NAME, form=DEP_FORM,
                                        help="package names or sonames; `NAME-{cuda}`: one of NAME-X-Y for each CUDA X.Y of `cuda_runtime`")
    feature_requires: tuple[tuple[str, tuple[str, ...]], ...] = setting(
        (), read=lambda t, f: read_feature_requires(t, f), shown_default="`{}`",
        help="the table `[package.feature_requires]`: feature → extra requirements")
    dist: str = setting(".fc43", pattern=P.DIST_TAG, form='a dist tag such as ".fc43"', help="used where the build host has none")
    releasever: str = setting("43", pattern=P.RELEASEVER, form='a release number such as "43"')
    cuda_runtime: str = setting("13.0-13.9", pattern=P.CUDA_RANGE, check=check_cuda_range,
                                form='the first and last CUDA version of one major such as "13.0-13.9"',
                                help="the CUDA runtimes a requirement `NAME-{cuda}` accepts: it becomes"
                                     " `(NAME-13-0 or … or NAME-13-9)`, met by any one of NVIDIA's packages;"
                                     " starts at `build.cuda_version` or later")

    def cuda_suffixes(self) -> list[str]:
        """NVIDIA's package-name suffix for each CUDA version of cuda_runtime: "13-0", "13-1", ..."""
        major, first, _, last = map(int, P.CUDA_RANGE.match(self.cuda_runtime).groups())
        return [f"{major}-{minor}" for minor in range(first, last + 1)]

    def dependency(self, dep: str) -> str:
        """One requirement as the spec writes it: NAME-{cuda} becomes an rpm
        boolean dependency that any CUDA runtime of cuda_runtime meets."""
        if not dep.endswith(CUDA_PLACEHOLDER):
            return dep
        names = [f"{dep.removesuffix(CUDA_PLACEHOLDER)}-{suffix}" for suffix in self.cuda_suffixes()]
        return names[0] if len(names) == 1 else "(" + " or ".join(names) + ")"

    def requires_for(self, features: tuple[str, ...]) -> tuple[str, ...]:
        extra = [dep for feat, deps in self.feature_requires if feat in features for dep in deps]
        return tuple(dict.fromkeys(self.dependency(d) for d in self.requires + tuple(extra)))


@dataclass(frozen=True, kw_only=True)
class Publish:
    target: Target = setting(raw_type=str, convert=parse_target, form=TARGET_FORM, help="local directory or `user@host:/path`")
    """A local directory, or user@host:/path reached over SSH."""
    base_url: str = setting(pattern=P.URL, form="an http(s) URL without '%', spaces, quotes, '?' or '#'")
    host_key: str = setting("", pattern=optional(P.HOST_KEY), help="required for a remote target",
                            form='one known_hosts line such as "repo.example.org ssh-ed25519 AAAA..." (no marker, no wildcard)')
    ssh_key: str = setting("", pattern=P.SSH_KEY_FILE,
                           form="a key file path of letters, digits and . _ + - / (~/ for the home directory), or \"\"")
    ssh_key_env: str = setting("MRPM_SSH_KEY", pattern=optional(P.ENV_NAME), form=ENV_FORM)
    key_file: str = setting("")
    key_env: str = setting("MRPM_SIGNING_KEY", pattern=P.ENV_NAME, form=ENV_FORM)
    passphrase_file: str = setting("")
    passphrase_env: str = setting("MRPM_SIGNING_PASSPHRASE", pattern=P.ENV_NAME, form=ENV_FORM)
    key_fingerprint: str = setting("", pattern=optional(P.FINGERPRINT), form="the key's whole fingerprint (40 hex digits) or \"\"",
                                   convert=lambda v, k: v.replace(" ", "").upper(),
                                   help="the key on the host decides; see Publishing")
    """The repository's key pinned (40 upper-case hex digits), or "": the
    key on the host (RPM-GPG-KEY-mistralrs) decides.  Pinning another key
    than the host's is how the key is replaced on purpose."""
    retention: int = setting(3, check=at_least(1))
    metadata_expire: int = setting(3600, raw_type=str, pattern=P.DURATION, form='a duration such as "1h"', convert=parse_duration,
                                   shown_default='`"1h"`', help="")
    """Seconds dnf keeps metadata (and the host keeps the previous files)."""

    @property
    def is_remote(self) -> bool:
        return self.target.is_remote


DAYS_366 = 366 * 86400.0


@dataclass(frozen=True, kw_only=True)
class Poll:
    """The [poll] table: how `doit poll` asks GitHub."""

    api_url: str = setting("https://api.github.com", pattern=P.HTTP_URL, form="an http(s) URL")
    repository: str = setting("", pattern=optional(P.GITHUB_REPOSITORY), form='"owner/name" or ""', help="from `upstream.url`")
    """owner/name on GitHub; "" derives it from upstream.url."""
    token_env: str = setting("MRPM_GITHUB_TOKEN", pattern=P.ENV_NAME, form=ENV_FORM)
    """Environment variable holding an optional GitHub token.  Not
    GITHUB_TOKEN: in Gitea Actions that name is Gitea's own token."""
    timeout: float = setting(20.0, check=up_to(600, "seconds", above_zero=True), shown_default="20", help="up to 600")
    retries: int = setting(3, check=up_to(10, "an integer"), help="up to 10")
    """Extra attempts after a 5xx answer or a connection error."""
    backoff: float = setting(2.0, check=up_to(120, "seconds"), shown_default="2", help="up to 120")
    """Seconds before the first retry; doubled for each further one."""
    retrigger_after: float = setting(21600.0, check=up_to(DAYS_366, "seconds"), shown_default="21600",
                                     help="seconds, up to 366 days")
    """Seconds before the same build (channel, ref, flavours) is started
    again while its packages are still missing: a build that fails must not
    take the GPU runners every 15 minutes."""
    snapshot_interval: float = setting(86400.0, check=up_to(DAYS_366, "seconds"), shown_default="86400",
                                       help="seconds, up to 366 days")
    """Seconds from one snapshot build (unstable channel) started by the
    poll to the next: upstream's default branch moves many times a day, a
    build of every flavour takes hours."""
    dispatch_token_env: str = setting("MRPM_DISPATCH_TOKEN", pattern=P.ENV_NAME, form=ENV_FORM)
    """Environment variable holding the Gitea token (write access to the
    repository's actions) the poll starts the build workflows with."""


@dataclass(frozen=True, kw_only=True)
class Doctor:
    """The [doctor] table: what `doit doctor` checks beyond the toolchain."""

    skip: tuple[DoctorCheck, ...] = setting((), form="one of " + ", ".join(DoctorCheck),
                                            help="doctor checks to leave out (" + ", ".join(f"`{c}`" for c in DoctorCheck)
                                            + ") for an upstream that needs no such thing")
    """Checks left out, for an upstream that needs no such thing (the demo
    upstream links no cuDNN or NCCL and clones no CUTLASS)."""


@dataclass(frozen=True, kw_only=True)
class Paths:
    root: Path
    # MRPM_CACHE: CI runners point it at a directory that outlives the job's
    # workspace, so the mirror and the cargo target dirs are kept.
    cache: Path = setting(".cache", env="MRPM_CACHE", read=lambda t, f: read_path(t, f),
                          help="`MRPM_CACHE` overrides it")
    build: Path = setting("build", read=lambda t, f: read_path(t, f), shown_default="")
    artifacts: Path = setting("artifacts", read=lambda t, f: read_path(t, f), shown_default="")
    dist: Path = setting("dist", read=lambda t, f: read_path(t, f), shown_default="",
                         help="their own names")


# --- the values of a shape of their own (a Spec's read)


def read_ref(t: Table, f: Field) -> Ref:
    """$MRPM_REF, else upstream.ref, checked here once."""
    text, key = t.raw(f.name, "", env=f.metadata["spec"].env)
    if not text:
        raise ConfigError(f"upstream.ref is missing (and {key or 'MRPM_REF'} is unset): expected a release tag vX.Y.Z"
                          " or a 40-hex commit id")
    text = t.typed(key, text, str, Spec(form="a release tag (vX.Y.Z) or a 40-hex commit id"))
    try:
        return parse_ref(text)
    except RefError as e:
        raise ConfigError(f"{key}: {e}") from None


def read_programs(t: Table, f: Field) -> tuple[Program, ...]:
    """[upstream.programs]: "X.Y.Z" = { package = "...", binary = "..." }."""
    table = t.table(f.name)
    programs = []
    for first in table.data:
        table.known.append(first)
        if not P.VERSION.match(first):
            raise ConfigError(f"{table.key(first)} (key): {show(first)} is not a version of the form X.Y.Z")
        version = tuple(int(p) for p in first.split("."))
        programs.append(read(Program, table.table(first), first=version))
    if not programs:
        raise ConfigError('upstream.programs is empty; expected rows such as'
                          ' "0.7.0" = { package = "mistralrs-cli", binary = "mistralrs" }')
    return tuple(sorted(programs, key=lambda p: p.first))


def read_compute_cap(t: Table, f: Field) -> int:
    value, key = t.raw(f.name, form="an integer such as 86")
    if isinstance(value, int) and not isinstance(value, bool) and 30 <= value <= 199:
        return value
    text = str(value)
    m = re.fullmatch(r"(?:sm_?)?([0-9]+)\.([0-9])", text) or re.fullmatch(r"sm_?([0-9]+)()", text)
    if m:
        raise ConfigError(f"{key} = {show(value)}: write the compute capability as an integer without a dot:"
                          f" compute_cap = {m.group(1)}{m.group(2)}")
    raise ConfigError(f"{key} = {show(value)}: expected an integer compute capability such as 86, 89, 90 or 120")


def read_feature_requires(t: Table, f: Field) -> tuple[tuple[str, tuple[str, ...]], ...]:
    table = t.table(f.name, {})
    pairs = []
    for feature in table.data:
        if not P.FEATURE_NAME.match(feature):
            raise ConfigError(f"{t.key(f.name)}.{show(feature)}: expected a cargo feature name")
        pairs.append((feature, table.get(feature, tuple[str, ...], spec=Spec(pattern=P.DEP_NAME, form=DEP_FORM))))
    return tuple(pairs)


def read_path(t: Table, f: Field, *, expand: bool = False) -> Path:
    """A directory or file the configuration names, relative to the
    configuration's directory, resolved, and of PLAIN_PATH's characters:
    it reaches rpmbuild's --define, rsync, nginx's configuration and spec
    and shell lines."""
    value, key = t.raw(f.name, f.default, env=f.metadata["spec"].env)
    text = t.typed(key, value, str, Spec()) if key else value
    path = Path(text).expanduser() if expand else Path(text)
    resolved = (t.base / path).resolve()
    if not P.PLAIN_PATH.match(str(resolved)):
        where = "" if str(resolved) == text else f", that is {show(str(resolved))},"
        raise ConfigError(f"{key or t.key(f.name)} = {show(text)}{where} has characters that rpm, a shell, rsync or nginx"
                          " would read; expected a path of letters, digits and . _ + - / (move it, or name another directory)")
    return resolved
