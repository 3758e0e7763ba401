"""What the binary bundles: the crates it links, their licenses, and the
non-crate code declared in config.

The graph is the one Fedora's cargo2rpm reads for licenses: ``cargo tree
-p PACKAGE --edges=no-build,no-dev,no-proc-macro`` with the configured
features, for the one target we build (x86_64 Linux).  Build-only and
dev-only dependencies and proc-macro crates (with whatever only they pull
in) are left out; so are crates that only another workspace member's
features would pull in (cargo metadata alone resolves features for the
whole workspace at once).  ``cargo metadata`` then gives each crate's
license, license file, directory and source, and Cargo.lock the checksums.
Everything else is derived from that one typed :class:`Bundle`:

* the ``License:`` tag, one SPDX expression (every crate's expression is
  parsed and validated with license-expression; an unknown or non-SPDX
  license is refused in one line naming the crate);
* ``LICENSE.dependencies`` (cargo2rpm's ``%{cargo_license}`` lines,
  ``MIT OR Apache-2.0: serde v1.0.228``, sorted and unique);
* ``cargo-vendor.txt`` (cargo2rpm's ``%cargo_vendor_manifest`` lines,
  ``name vX.Y.Z`` or ``name vX.Y.Z (url?query#commit8)`` for git ones,
  workspace members left out).  cargo2rpm lists every vendored crate there
  (build, dev and proc-macro ones too, all features, all targets); ours
  lists what the binary links, the same set as the provides;
* ``Provides: bundled(crate(NAME)) = VERSION`` lines, with the version
  written exactly as Fedora's generator writes it from cargo-vendor.txt, so
  that on a Fedora build host the two sets are the same provides;
* the license files the crates ship, to install as ``%license``.

Non-crate code (CUTLASS, flash-attention kernels, ...) is declared in config
(``[[bundled]]``) and appears in the License tag, LICENSE.dependencies and
the provides (``bundled(NAME) = VERSION``), but not in cargo-vendor.txt:
Fedora's generator would turn each line there into a ``bundled(crate(...))``
provide, which would be false for them.  Which entries the tree at the
packaged commit holds, upstream's own license texts and the checks on every
file named by upstream content: :mod:`buildlib.pipeline.license_files`.

A crate whose Cargo.toml names only a license file (no ``license``) has no
machine-readable license: a person reads the file and declares it in config
(``[[crate_license]]`` with the crate's name, exact version and SPDX
expression); without that the crate is refused.  The version is part of the
declaration so that an update of the crate asks again.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import CRATE_NAME, SEMVER, BundledComponent, BundledConfig
from ..layout import cargo_home
from ..run import UserError, atomic_write, output
from ..spdx import cargo_legacy, combine, normalize, spdx_problem
from .license_files import LicenseFiles, LicenseText, crate_license_files, present_components, upstream_licenses
from .license_files import UPSTREAM_FILE_LIMIT, read_contained  # noqa: F401  (tests import them from here)

TARGET = "x86_64-unknown-linux-gnu"
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"

# A git source as cargo writes it: git+URL[?query]#commit
GIT_SOURCE = re.compile(
    r"^git\+(?P<url>https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~%/+-]*)?)"
    r"(?P<query>\?(branch|tag|rev)=[A-Za-z0-9._/+-]+)?#(?P<commit>[0-9a-f]{40})\Z"
)


# --- the graph ---------------------------------------------------------------


@dataclass(frozen=True)
class Crate:
    name: str
    version: str
    source: str  # "" for path packages (workspace members and path deps)
    license: str  # validated, normalized SPDX expression
    declared_license: str  # as the crate wrote it ("" for license-file-only)
    license_from_config: bool
    checksum: str  # sha256 from Cargo.lock for registry crates, else ""
    directory: Path
    license_files: tuple[Path, ...]
    workspace_member: bool
    # The directory its license files must stay in: its own for a registry or
    # git crate, upstream's tree for a path crate.  "." in records read back.
    root: Path = Path(".")

    @property
    def is_local(self) -> bool:
        return not self.source

    @property
    def git(self) -> re.Match | None:
        return GIT_SOURCE.match(self.source)

    @property
    def git_url(self) -> str:
        m = self.git
        return m.group("url") if m else ""

    @property
    def git_commit(self) -> str:
        m = self.git
        return m.group("commit") if m else ""

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}" + (f"+git{self.git_commit}" if self.git else "")

    def display(self) -> str:
        """``name vX.Y.Z`` or, for git, ``name vX.Y.Z (url?query#commit8)``:
        cargo tree's ``{p}``, which cargo2rpm writes."""
        m = self.git
        if m:
            return f"{self.name} v{self.version} ({m.group('url')}{m.group('query') or ''}#{m.group('commit')[:8]})"
        return f"{self.name} v{self.version}"

    def rpm_version(self) -> str:
        """The provide's version, as cargo2rpm's parse-vendor-manifest writes
        it: pre-release after "~" with "-" as "_", build metadata dropped,
        git ones "+git<commit8>"."""
        m = SEMVER.match(self.version)
        assert m is not None  # checked when the crate was read
        version = m.group("core")
        if m.group("pre"):
            version += "~" + m.group("pre").replace("-", "_")
        if self.git:
            version += f"+git{self.git_commit[:8]}"
        return version

    def license_dir(self) -> str:
        """Directory name of this crate's license texts in the package."""
        suffix = f"+git{self.git_commit[:8]}" if self.git else ""
        return f"{self.name}-{self.version}{suffix}"


@dataclass(frozen=True)
class Bundle:
    package: str
    crates: tuple[Crate, ...]  # sorted by (name, version, source), the packaged crate included
    components: tuple[BundledComponent, ...]  # sorted by name
    edges: tuple[tuple[str, tuple[str, ...]], ...]  # crate key -> linked dependency keys, sorted
    license: str
    # Upstream's own license texts (the packaged crate's license-file, else
    # LICENSE*/COPYING* at the workspace root): their paths in the tree, and
    # the tree.  Packed at the top of the license archive under their names.
    upstream_licenses: tuple[Path, ...] = ()
    tree: Path = Path(".")

    @property
    def root(self) -> Crate:
        return next(c for c in self.crates if c.name == self.package and c.workspace_member)

    @property
    def vendored(self) -> tuple[Crate, ...]:
        """Crates that come from outside the upstream tree."""
        return tuple(c for c in self.crates if not c.is_local)

    def license_dependencies(self) -> str:
        """LICENSE.dependencies: ``EXPR: name vX.Y.Z`` per linked crate
        (workspace members too) and per declared component, sorted, unique."""
        lines = {f"{c.declared_license and cargo_legacy(c.declared_license) or c.license}: {c.display()}" for c in self.crates}
        for comp in self.components:
            lines.add(f"{comp.license}: {_component_display(comp)}")
        return "".join(f"{line}\n" for line in sorted(lines))

    def vendor_manifest(self) -> str:
        """cargo-vendor.txt: the linked crates from outside the tree."""
        return "".join(f"{line}\n" for line in sorted({c.display() for c in self.vendored}))

    def provides(self) -> tuple[str, ...]:
        crates = {f"bundled(crate({c.name})) = {c.rpm_version()}" for c in self.vendored}
        comps = {f"bundled({c.name}) = {c.version}" for c in self.components}
        return tuple(sorted(crates)) + tuple(sorted(comps))

    def license_texts(self) -> tuple[LicenseText, ...]:
        """Every license file to pack: upstream's own at the top, then each
        linked crate's under crates/<crate>-<version>/."""
        out = [LicenseText(path, self.tree, "upstream's license text", path.name) for path in self.upstream_licenses]
        for crate in self.crates:
            what = f"crate {crate.name} v{crate.version}"
            for path in crate.license_files:
                out.append(LicenseText(path, crate.root, what, f"crates/{crate.license_dir()}/{path.name}"))
        return tuple(out)


def _component_display(comp: BundledComponent) -> str:
    return f"{comp.name} v{comp.version} ({comp.url}" + (f"#{comp.commit})" if comp.commit else ")")


def cargo_metadata(workspace: Path, package: str, features: Iterable[str], *, target: str = TARGET,
                   env: Mapping[str, str] | None = None) -> dict:
    """``cargo metadata`` for the packaged crate's features, offline and locked
    (env: added to cargo's environment, e.g. the build's CARGO_HOME)."""
    argv = [
        "cargo", "metadata", "--locked", "--offline", "--format-version", "1",
        "--filter-platform", target,
    ]
    features = sorted(set(features))
    if features:
        argv += ["--features", ",".join(f if "/" in f else f"{package}/{f}" for f in features)]
    text = output(argv, cwd=workspace, quiet=True, env=env)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"cargo metadata in {workspace} did not print JSON ({exc})") from None


def read_lock(workspace: Path) -> dict[tuple[str, str, str], str]:
    """(name, version, source) -> checksum, from the workspace's Cargo.lock."""
    path = workspace / "Cargo.lock"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    sums = {}
    for pkg in data.get("package", []):
        if "checksum" in pkg:
            sums[(pkg["name"], pkg["version"], pkg.get("source", ""))] = pkg["checksum"]
    return sums


def cargo_tree(workspace: Path, package: str, features: Iterable[str], *, target: str = TARGET,
               env: Mapping[str, str] | None = None) -> list[str]:
    """The linked graph of ``package`` as cargo tree prints it: cargo2rpm's
    edges (no build, dev or proc-macro dependencies), the package's own
    features only, one target; every line "DEPTH{p}"."""
    argv = [
        "cargo", "tree", "--locked", "--offline", "-p", package,
        "--edges", "no-build,no-dev,no-proc-macro", "--target", target,
        "--prefix", "depth", "--format", "{p}",
    ]
    features = sorted(set(features))
    if features:
        argv += ["--features", ",".join(features)]
    return output(argv, cwd=workspace, quiet=True, env=env).splitlines()


TREE_LINE = re.compile(r"^(?P<depth>[0-9]+)(?P<pkg>\S+ v\S+( \(.*\))?)\Z")


def resolve(metadata: dict, tree: list[str], checksums: Mapping[tuple[str, str, str], str], package: str,
            config: BundledConfig, *, workspace: Path, cargo_home: Path) -> Bundle:
    """The Bundle of ``package``: its linked graph from cargo tree's lines,
    each crate's data from cargo metadata.

    cargo metadata alone cannot give the graph: it resolves features for the
    whole workspace at once, so a crate that only another member's features
    pull in (upstream's mistralrs-pyo3 turns on mistralrs-core's optional
    pyo3) would look linked.  cargo tree -p resolves the package alone, as
    ``cargo build -p`` does.

    workspace: upstream's tree (path crates and their files must lie in it);
    cargo_home: the CARGO_HOME whose registry and git checkouts hold the
    other crates (or they are vendored in the tree)."""
    check_member(metadata, package)
    packages = {p["id"]: p for p in metadata["packages"]}
    members = set(metadata["workspace_members"])
    by_display = {_tree_display(p): pid for pid, p in packages.items()}

    linked: dict[str, set[str]] = {}
    stack: list[str] = []  # the path from the root to the line being read
    for line in tree:
        if not line.strip():
            continue
        repeat = line.endswith(" (*)")  # printed before; its dependencies are not repeated
        m = TREE_LINE.match(line[: -len(" (*)")] if repeat else line)
        if not m:
            raise UserError(f"cannot read cargo tree's line {line!r}")
        depth, shown = int(m.group("depth")), m.group("pkg")
        pid = by_display.get(shown)
        if pid is None:
            raise UserError(f"cargo tree shows {shown!r}, which cargo metadata does not list")
        if depth > len(stack) or (depth == 0 and linked):
            raise UserError(f"cargo tree's output is not one tree (at line {line!r})")
        del stack[depth:]
        linked.setdefault(pid, set())
        if stack:
            linked[stack[-1]].add(pid)
        stack.append(pid)
    if not linked:
        raise UserError(f"cargo tree printed nothing for package {package!r}")

    places = _Places(workspace, cargo_home)
    crates = {pid: _crate(packages[pid], pid in members, checksums, config, places) for pid in linked}
    edges = tuple(sorted((crates[pid].key, tuple(sorted({crates[d].key for d in deps}))) for pid, deps in linked.items()))
    ordered = tuple(sorted(crates.values(), key=lambda c: (c.name, _version_key(c.version), c.source)))
    components = tuple(sorted(config.components, key=lambda c: c.name))
    license = combine([c.license for c in ordered] + [normalize(c.license) for c in components])
    root = next(packages[pid] for pid in linked if pid in members and packages[pid]["name"] == package)
    return Bundle(package=package, crates=ordered, components=components, edges=edges, license=license,
                  upstream_licenses=upstream_licenses(workspace, root), tree=workspace)


def check_member(metadata: dict, package: str) -> None:
    packages = {p["id"]: p for p in metadata["packages"]}
    names = sorted(packages[pid]["name"] for pid in metadata["workspace_members"])
    if package not in names:
        raise UserError(f"package {package!r} is not a member of the workspace (members: {', '.join(names)})")


def _tree_display(pkg: dict) -> str:
    """How cargo tree's {p} shows a package of cargo metadata."""
    source = pkg.get("source") or ""
    base = f"{pkg['name']} v{pkg['version']}"
    if not source:
        return f"{base} ({Path(pkg['manifest_path']).parent})"
    m = GIT_SOURCE.match(source)
    if m:
        return f"{base} ({m.group('url')}{m.group('query') or ''}#{m.group('commit')[:8]})"
    return base if source == CRATES_IO else f"{base} ({source})"


def _version_key(version: str) -> tuple:
    m = SEMVER.match(version)
    core = tuple(int(p) for p in m.group("core").split(".")) if m else (0, 0, 0)
    return core, version


@dataclass(frozen=True)
class _Places:
    """Where crates may come from: upstream's tree, and cargo's registry
    sources and git checkouts."""

    workspace: Path
    cargo_home: Path

    def root_of(self, what: str, directory: Path, source: str) -> Path:
        """The directory a crate's files must stay in; the crate's own
        directory must lie in the tree (a path crate) or in cargo's caches
        or the tree (vendored sources)."""
        tree = Path(os.path.realpath(self.workspace))
        real = Path(os.path.realpath(directory))
        if not source:
            if not real.is_relative_to(tree):
                raise UserError(f"{what}: a path crate at {directory}, outside upstream's tree {tree}:"
                                " refusing to package files from outside it")
            return tree
        home = Path(os.path.realpath(self.cargo_home))
        allowed = (home / "registry" / "src", home / "git" / "checkouts", tree)
        if not any(real.is_relative_to(base) for base in allowed):
            raise UserError(f"{what}: its source is at {directory}, neither in upstream's tree nor in cargo's"
                            f" registry or git checkouts under {home}")
        return real


def _crate(pkg: dict, member: bool, checksums, config: BundledConfig, places: _Places) -> Crate:
    name, version, source = pkg["name"], pkg["version"], pkg.get("source") or ""
    what = f"crate {name} v{version}"
    if not CRATE_NAME.match(name) or not SEMVER.match(version):
        raise UserError(f"{what}: name or version has characters a spec cannot hold")
    if source and not (source == CRATES_IO or GIT_SOURCE.match(source)):
        raise UserError(f"{what}: source {source!r} is neither crates.io nor a git repository pinned to a commit")
    directory = Path(pkg["manifest_path"]).parent
    root = places.root_of(what, directory, source)
    declared = pkg.get("license") or ""
    license_file = pkg.get("license_file") or ""
    override = config.crate_license(name, version)
    declare = (f'read it and declare it in config.toml: [[crate_license]] name = "{name}", version = "{version}",'
               ' license = "<SPDX expression>"')
    if override is not None:
        license = normalize(override.license)
    elif declared:
        problem = spdx_problem(cargo_legacy(declared))
        if problem:
            raise UserError(f"{what} declares license {declared!r}: {problem}; read its license and"
                            f" {declare.removeprefix('read it and ')}")
        license = normalize(cargo_legacy(declared))
    elif license_file:
        raise UserError(f"{what} declares no SPDX license, only a license file ({license_file}); {declare}")
    else:
        raise UserError(f"{what} declares neither a license nor a license file; find its license in its source"
                        f" and declare it in config.toml: [[crate_license]] name = \"{name}\", version = \"{version}\","
                        ' license = "<SPDX expression>"')
    return Crate(
        name=name,
        version=version,
        source=source,
        license=license,
        declared_license=declared if override is None else "",
        license_from_config=override is not None,
        checksum=checksums.get((name, version, source), "") if source == CRATES_IO else "",
        directory=directory,
        license_files=crate_license_files(what, directory, root, license_file),
        workspace_member=member,
        root=root,
    )


def collect(workspace: Path, package: str, features: Iterable[str], config: BundledConfig, *, target: str = TARGET,
            env: Mapping[str, str] | None = None) -> Bundle:
    """The Bundle of ``package`` in the upstream tree at ``workspace`` (env:
    added to cargo's environment)."""
    metadata = cargo_metadata(workspace, package, features, target=target, env=env)
    check_member(metadata, package)
    tree = cargo_tree(workspace, package, features, target=target, env=env)
    config = replace(config, components=present_components(workspace, config.components))

    home = Path(env["CARGO_HOME"]) if env and env.get("CARGO_HOME") else cargo_home()
    return resolve(metadata, tree, read_lock(workspace), package, config, workspace=workspace, cargo_home=home)


def write_license_files(bundle: Bundle, dest: Path) -> LicenseFiles:
    """LICENSE.dependencies, cargo-vendor.txt, upstream's license texts and
    crates/<crate>/<file> under dest.  Each text is read again through
    read_contained, not trusted from when the bundle was computed."""
    files = LicenseFiles()
    atomic_write(dest / files.license_dependencies, bundle.license_dependencies())
    atomic_write(dest / files.vendor_manifest, bundle.vendor_manifest())
    texts = []
    for text in bundle.license_texts():
        atomic_write(dest / text.dest, text.read())
        texts.append(text.dest)
    return LicenseFiles(texts=tuple(texts))
