"""The README's configuration table, rendered from the declarations.

``python -m buildlib.config.readme`` prints the rows; tests/test_readme.py
holds the README to them.  A key reads ``key`` (default: help), or
``key`` (help) where it has no default.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from .bundled import BundledComponent, CrateLicense
from .host import Host
from .model import Build, BuildCache, Channel, Doctor, Flavour, Package, Paths, Poll, Program, Publish, Upstream
from .schema import spec_of

PROGRAMS = ("first upstream version → { `package`, `binary`, `smoke` }: the cargo package to build, its bin target,"
            " and what `doit gate` runs with it on the GPU (`smoke`: `\"chat\"`, the default: a tiny random-weight"
            " model made by the gate, served and asked one chat completion; `\"selftest\"`: the demo upstream's"
            " `selftest`, `serve`, `/health`, `/v1/models`; `\"version\"`: only `--version` and the libraries)."
            " `config.toml` has one row, `\"0.7.0\" = { package = \"mistralrs-cli\", binary = \"mistralrs\" }`, which"
            " covers 0.7.0–0.8.4 (where upstream still carries the old `mistralrs-server` package beside it) and"
            " everything after. Versions before the first row are refused: up to 0.6.x upstream's only server is"
            " `mistralrs-server`, whose command line has no `serve` subcommand for the unit. Add a row when upstream"
            " renames the package or binary.")

TABLES: tuple[tuple[str, Any, str, str], ...] = (
    # label, the dataclass declaring its keys, words before them, words after them
    ("[upstream]", Upstream, "", "."),
    ("[upstream.programs]", None, PROGRAMS, ""),
    ("[build]", Build, "", "."),
    ("[build.cache]", BuildCache,
     "sccache in front of rustc (`RUSTC_WRAPPER`) and of every nvcc call of the kernel build scripts (`NVCC`, which"
     " cudaforge honours: a wrapper script, toolkit links beside it): ",
     ". Credentials only from the environment (`SCCACHE_REDIS_PASSWORD`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,"
     " `SCCACHE_WEBDAV_TOKEN`); a URL with a password is refused. A shared backend that does not answer fails the"
     " build in one line before cargo starts (no silent fallback to hours of compiling). The build record's"
     " `compile_cache` and the build's summary line give rustc and nvcc-step hits. Runners share rustc hits only"
     " with the same absolute `paths.cache` and `CARGO_HOME` (sccache 0.16 keys rustc on its command line and"
     " working directory); at other paths every nvcc step is shared (see \"The compile cache\")."),
    ("[flavours.<name>]", Flavour, "",
     ". At least one flavour. A flavour's package is `mistralrs-<name>`, so `release` (the release package's name)"
     " and names ending in `-debuginfo`/`-debugsource` are refused."),
    ("[channels.<name>]", Channel, "",
     "; both channels must exist. Each channel has a directory of its own: two channels with one `subdir`, or a"
     " `subdir` named `repodata`, are refused."),
    ("[package]", Package, "",
     ". There is no `license` key: the License tag is computed, and a `license` key is refused."),
    ("[[bundled]]", BundledComponent, "code compiled into the binary that no `Cargo.lock` lists, one entry each: ",
     ". The real upstream's are in `config.toml`; the demo declares two stand-ins, whose evidence is in"
     " `examples/demo-upstream/mistralrs-core/kernels/`."),
    ("[[crate_license]]", CrateLicense, "",
     " of a crate that names only a license file, after a person read it. None by default."),
    ("[publish]", Publish, "", "."),
    ("[poll]", Poll, "", "."),
    ("[doctor]", Doctor, "", "."),
    ("[host]", Host,
     "the repository host's set-up (see Running the repository host); every key has a default: ",
     ". `config.toml` lists each with its default."),
    ("[paths]", Paths, "", ", relative to the config file."),
)


def toml(value: Any) -> str:
    """A default as config.toml writes it."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def describe(f: dataclasses.Field) -> str:
    spec = spec_of(f)
    default = spec.shown_default
    if default is None:
        shown = "" if f.default is dataclasses.MISSING else toml(f.default)
        default = shown if isinstance(f.default, (int, float)) and not isinstance(f.default, enum.Enum) else shown and f"`{shown}`"
    inner = f"{default}: {spec.help}" if default and spec.help else default or spec.help
    return f"`{f.name}`" + (f" ({inner})" if inner else "")


def keys(cls: Any) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if spec_of(f) is not None] if cls else []


def rows() -> list[str]:
    """The table's body, one markdown row per table of config.toml."""
    return [f"| `{label}` | {intro}{', '.join(describe(f) for f in keys(cls))}{outro} |"
            for label, cls, intro, outro in TABLES]


def keys_by_table() -> dict[str, set[str]]:
    """label -> the keys declared there ("" -> the top-level tables)."""
    out = {label: {f.name for f in keys(cls)} for label, cls, _, _ in TABLES if cls}
    out["[upstream.programs]"] = {f.name for f in keys(Program)}
    out[""] = {label.strip("[]").split(".")[0] for label, *_ in TABLES}
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
