"""What the binary bundles that no Cargo.lock lists: [[bundled]], and the
licenses a person read: [[crate_license]]."""

from __future__ import annotations

from dataclasses import Field, dataclass

from ..spdx import spdx_problem
from . import patterns as P
from .schema import ConfigError, Table, read, setting, show

SPDX = "an SPDX license expression"


def _relative(path: str) -> str:
    return "expected a path inside upstream's tree, without . or .." if {".", ".."} & set(path.split("/")) else ""


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """What proves a [[bundled]] component is in upstream's source at a
    commit: ``path`` (relative to the tree's root) exists, and, where
    ``contains`` is given, is a file that holds that text."""

    path: str = setting(pattern=P.EVIDENCE_PATH, check=_relative,
                        form='a relative path in upstream\'s tree such as "mistralrs-quant/build.rs"')
    contains: str = setting("", form="the text the file must contain",
                            check=lambda text: "" if 0 < len(text) <= 200 else "expected 1 to 200 characters")

    def describe(self) -> str:
        return f"{self.path} containing {self.contains!r}" if self.contains else self.path


def read_evidence(entry: Table, f: Field) -> Evidence | None:
    """bundled[i].evidence = { path = "dir/file", contains = "text" }: a path
    inside upstream's tree, in the form git prints it (no "..", no leading
    "/"; the licenses stage checks where it resolves).  Read last: a
    misspelt key of the entry is named first."""
    entry.known.append(f.name)
    entry.finish()
    if f.name not in entry.data:
        raise ConfigError(f"{entry.key(f.name)} is missing; expected what proves the component is in upstream's"
                          ' source, e.g. evidence = { path = "dir/build.rs", contains = "text" }')
    return read(Evidence, entry.table(f.name))


@dataclass(frozen=True, kw_only=True)
class BundledComponent:
    """Code compiled into the binary that no Cargo.lock lists."""

    name: str = setting(pattern=P.COMPONENT_NAME, form='a component name such as "cutlass"')
    version: str = setting(pattern=P.COMPONENT_VERSION, form='an rpm version such as "3.9.2" or "0^20250101git1a2b3c4"',
                           help='an rpm version; `"0"`: upstream copied it without one')
    license: str = setting(form=SPDX, check=spdx_problem, help="SPDX")
    url: str = setting(pattern=P.COMPONENT_URL, form="an https:// URL of the component's source")
    commit: str = setting("", pattern=P.COMPONENT_COMMIT, form="a full 40-hex commit id", help="40 hex")
    evidence: Evidence | None = setting(None, read=read_evidence, compare=True, shown_default="",
                                        help="what proves it is in upstream's source: `path` (in upstream's tree, must"
                                        " exist) and optionally `contains` (a text that file must hold); an entry whose"
                                        " evidence the tree lacks is left out, with a line")
    """None only in records read back (the licenses stage checked it then)."""


@dataclass(frozen=True, kw_only=True)
class CrateLicense:
    """A license a person read in a crate that declares only a license file."""

    name: str = setting(pattern=P.CRATE_NAME, form="a crate name")
    version: str = setting(pattern=P.SEMVER, form='the crate\'s exact version such as "0.1.0"', help="exact")
    license: str = setting(form=SPDX, check=spdx_problem, help="SPDX")


@dataclass(frozen=True)
class BundledConfig:
    components: tuple[BundledComponent, ...] = ()
    crate_licenses: tuple[CrateLicense, ...] = ()

    def crate_license(self, name: str, version: str) -> CrateLicense | None:
        for entry in self.crate_licenses:
            if entry.name == name and entry.version == version:
                return entry
        return None


def _array(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key} = {show(value)}: expected an array of tables ([[{key}]])")
    return value


def parse_bundled(data: dict) -> BundledConfig:
    """The ``[[bundled]]`` and ``[[crate_license]]`` arrays of config.toml
    (data: the whole file; other keys are not read here)."""
    components = [read(BundledComponent, Table(raw, f"bundled[{i}]")) for i, raw in enumerate(_array(data, "bundled"))]
    names = [c.name for c in components]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"bundled: {show(name)} is declared twice; keep one entry per component")
    crate_licenses: list[CrateLicense] = []
    for i, raw in enumerate(_array(data, "crate_license")):
        entry = read(CrateLicense, Table(raw, f"crate_license[{i}]"))
        if any((e.name, e.version) == (entry.name, entry.version) for e in crate_licenses):
            raise ConfigError(f"crate_license: {entry.name} {entry.version} is declared twice; keep one entry")
        crate_licenses.append(entry)
    return BundledConfig(components=tuple(components), crate_licenses=tuple(crate_licenses))
