"""config.toml -> :class:`Config`: the file read once, each table by its
declarations (:mod:`.model`), then the checks that span keys."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import DEFAULT_CONFIG, RELEASE_PACKAGE
from ..run import read_regular_file
from . import patterns as P
from .bundled import BundledConfig, parse_bundled
from .host import Host, read_host
from .kinds import ChannelName
from .model import (Build, Channel, Doctor, Flavour, Package, Paths, Poll, Publish, Upstream,
                    package_name)
from .schema import ConfigError, Table, read, show

CONFIG_ENV = "MRPM_CONFIG"
REF_ENV = "MRPM_REF"
STABLE = ChannelName.STABLE
UNSTABLE = ChannelName.UNSTABLE
REQUIRED_CHANNELS = tuple(ChannelName)
DEBUG_SUFFIXES = ("-debuginfo", "-debugsource")
"""Package names dnf treats as the debug data of another package."""
CHANNEL_RESERVED_SUBDIRS = ("repodata",)
"""Directory names the top channel uses itself: a channel there would share its metadata."""


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
    bundled: BundledConfig = field(default_factory=BundledConfig)

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


def read_flavours(fl: Table) -> tuple[Flavour, ...]:
    flavours: list[Flavour] = []
    for name in fl.data:
        fl.known.append(name)
        if not P.FLAVOUR_NAME.match(name):
            raise ConfigError(f"flavours.{name}: a flavour name is lower-case letters, digits and '-', starting with a letter")
        package = package_name(name)
        # a flavour "release" would be mistralrs-release, which every user installs first
        if package == RELEASE_PACKAGE:
            raise ConfigError(f"flavours.{name}: its package would be {package}, the repository's release package;"
                              " name the flavour after its GPU generation")
        if package.endswith(DEBUG_SUFFIXES):
            raise ConfigError(f"flavours.{name}: a package named {package} is read by dnf as debug data of another"
                              " package; choose a name that does not end in -debuginfo or -debugsource")
        flavour = read(Flavour, fl.table(name), name=name)
        for other in flavours:
            if other.compute_cap == flavour.compute_cap:
                raise ConfigError(f"flavours.{name}.compute_cap = {flavour.compute_cap}: already used by flavour {other.name!r}")
        flavours.append(flavour)
    if not flavours:
        raise ConfigError("flavours: no flavour configured; add one such as [flavours.ampere] with compute_cap = 86")
    return tuple(flavours)


def read_channels(ch: Table) -> tuple[Channel, ...]:
    """Every channel has a directory of its own on the host."""
    channels: list[Channel] = []
    for name in ch.data:
        ch.known.append(name)
        if not P.FLAVOUR_NAME.match(name):
            raise ConfigError(f"channels.{show(name)}: a channel name is lower-case letters, digits and '-', starting with a letter")
        channel = read(Channel, ch.table(name), name=name)
        for other in channels:
            if other.subdir == channel.subdir:
                where = f'subdir = "{channel.subdir}"' if channel.subdir else 'subdir = "" (the top directory)'
                raise ConfigError(f"channels.{name}.subdir: {where} is already used by channel {other.name!r};"
                                  " two channels would publish into one directory and one metadata")
        if channel.subdir in CHANNEL_RESERVED_SUBDIRS:
            raise ConfigError(f"channels.{name}.subdir = {channel.subdir!r}: the top channel's metadata directory has"
                              " that name; choose another")
        channels.append(channel)
    for required in REQUIRED_CHANNELS:
        if required not in [c.name for c in channels]:
            raise ConfigError(f"channels.{required} is missing; expected a table with subdir = \"...\"")
    return tuple(channels)


def check_cuda_runtime(package: Package, build: Build) -> None:
    """A binary built with CUDA X.Y needs X.Y's runtime or a later minor of
    X (CUDA's minor-version compatibility), never an earlier one."""
    major, minor = map(int, build.cuda_version.split("."))
    first_major, first_minor = map(int, package.cuda_runtime.split("-")[0].split("."))
    if (first_major, first_minor) < (major, minor) or first_major != major:
        raise ConfigError(f"package.cuda_runtime = {show(package.cuda_runtime)}: the binary is built with CUDA"
                          f" {build.cuda_version} (build.cuda_version) and needs that runtime or a later {major}.x;"
                          f' expected a range such as "{major}.{minor}-{major}.9"')


def parse(data: dict, source: Path) -> Config:
    top = Table(data, "", base=source.parent)
    up = top.table("upstream")
    if "package" in up.data or "binary_names" in up.data:
        raise ConfigError("upstream.package and upstream.binary_names are replaced by [upstream.programs]:"
                          ' rows such as "0.7.0" = { package = "mistralrs-cli", binary = "mistralrs" }')
    upstream = read(Upstream, up)
    build = read(Build, top.table("build"))
    flavours = read_flavours(top.table("flavours"))
    channels = read_channels(top.table("channels"))
    p = top.table("package")
    if "license" in p.data:
        raise ConfigError(
            f"package.license = {show(p.data['license'])}: the License tag is computed from the crates the binary"
            " links and the [[bundled]] components; remove the key (declare non-crate code with [[bundled]])"
        )
    package = read(Package, p)
    check_cuda_runtime(package, build)
    publish = read(Publish, top.table("publish"))
    if publish.is_remote and not publish.host_key:
        raise ConfigError("publish.host_key is missing: a remote target needs its pinned host key (a known_hosts line)")
    poll = read(Poll, top.table("poll", {}))
    doctor = read(Doctor, top.table("doctor", {}))
    host = read_host(top.table("host", {}), publish, package.packager)
    top.known += ["bundled", "crate_license"]
    bundled = parse_bundled(data)
    paths = read(Paths, top.table("paths", {}), root=source.parent)
    top.finish()
    return Config(source=source, upstream=upstream, build=build, flavours=flavours, channels=channels,
                  package=package, publish=publish, paths=paths, poll=poll, host=host, doctor=doctor, bundled=bundled)


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
