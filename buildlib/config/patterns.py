"""The forms of config.toml's values (and of the records' fields that
repeat them), as patterns.

Digits are written [0-9], never \\d: in a str pattern \\d also matches
other scripts' digits (full-width '１', Arabic-Indic '١'), and int() reads
them.
"""

from __future__ import annotations

import re

FLAVOUR_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}\Z")
"""Flavour names and channel names: they become package names and paths."""
FEATURE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,100}\Z")
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\Z")
RUST_VERSION = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?\Z")
CUDA_VERSION = re.compile(r"^[0-9]+\.[0-9]+\Z")
# rpm's payload syntax; zstd's long window (L) only up to 27: rpm 4.18 writes
# L28 but cannot read it back.
PAYLOAD = re.compile(r"^(w[0-9]+(L(1[0-9]|2[0-7]))?(T[0-9]+)?\.zstdio|w[0-9]+(T[0-9]+)?\.(xzdio|gzdio|ufdio|bzdio|lzdio))\Z")
DEP_NAME = re.compile(r"^([A-Za-z0-9_.+()-]+( (>=|<=|=|>|<) [A-Za-z0-9_.+~^-]+)?|[A-Za-z0-9_.+-]+-\{cuda\})\Z")
"""A requirement: a name or soname, with an optional version comparison;
or NAME-{cuda}, which package.cuda_runtime turns into an rpm boolean
"(NAME-13-0 or NAME-13-1 or ...)"."""
CUDA_RANGE = re.compile(r"^([0-9]+)\.([0-9]+)-([0-9]+)\.([0-9]+)\Z")
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


DOMAIN = re.compile(r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
EMAIL = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,63}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z")
"""host.email (certbot's --email) and host.key_email (gpg's Name-Email):
plain ASCII addresses, never starting with '-' (an option to certbot)."""
URL_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*/?\Z")
"""publish.base_url's path: nginx reads ';', '$', quotes and braces in a
location or a return, so none of them (nor '.' or '..' segments)."""
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?\Z")
EXPIRE = re.compile(r"^(0|[0-9]+[dwmy]?|[0-9]{4}-[0-9]{2}-[0-9]{2})\Z")
DURATION = re.compile(r"^([0-9]+)([smhd]?)\Z")
CACHE_SIZE = re.compile(r"^[1-9][0-9]*[KMGT]$")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
KEY_PREFIX = re.compile(r"^[A-Za-z0-9._/-]*$")
CHANNEL_SUBDIR = re.compile(r"^([a-z0-9][a-z0-9-]*)?\Z")
DIST_TAG = re.compile(r"^\.[a-z0-9]+\Z")
RELEASEVER = re.compile(r"^[0-9]+\Z")
HTTP_URL = re.compile(r"^https?://[^\s]+\Z")
GITHUB_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}\Z")
FINGERPRINT = re.compile(r"^([0-9A-Fa-f]{4} ?){10}\Z")
KEY_NAME = re.compile(r"^[^<>()\n]{5,}\Z")
CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
