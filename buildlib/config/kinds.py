"""The closed sets config.toml chooses from, as StrEnums: a value outside
one is refused by the schema, naming the members."""

from __future__ import annotations

from enum import StrEnum


class RebuildCheck(StrEnum):
    OFF = "off"
    RELEASES = "releases"


class CacheBackend(StrEnum):
    OFF = "off"
    LOCAL = "local"
    REDIS = "redis"
    S3 = "s3"
    WEBDAV = "webdav"


class ChannelName(StrEnum):
    """The channels every configuration has (others may be added)."""

    STABLE = "stable"
    """Final releases; enabled in mistralrs.repo."""
    UNSTABLE = "unstable"
    """Snapshots of the upstream branch; disabled in mistralrs.repo."""


class Gate(StrEnum):
    """Whether a flavour's package must pass `doit gate:<flavour>` on a GPU
    of its generation before `doit promote` adds it to its channel."""

    REQUIRED = "required"
    OFF = "off"
    """Promoted untested (no runner with that GPU); the index page says so."""


class Smoke(StrEnum):
    """What the gate runs with the installed binary, beyond its version and
    its libraries (buildlib/gate/smoke.py)."""

    CHAT = "chat"
    """serve a tiny random-weight model made here, ask one chat completion"""
    SELFTEST = "selftest"
    """the demo upstream's `selftest`, then `serve` and its /health and /v1/models"""
    VERSION = "version"
    """nothing more: `--version` and the libraries only"""


class KeyType(StrEnum):
    ED25519 = "ed25519"
    RSA4096 = "rsa4096"


class DoctorCheck(StrEnum):
    """The checks doctor.skip may leave out."""

    CUDNN = "cudnn"
    NCCL = "nccl"
    CUTLASS = "cutlass"
    MEMORY = "memory"
    COMPILER = "compiler"
    CACHE = "cache"
