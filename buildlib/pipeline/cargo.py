"""One flavour's cargo build, and the build record written beside it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..config import SEMVER, Config, Flavour, Program
from ..layout import Layout, cargo_home
from ..run import CommandFailed, Stopwatch, UserError, log, output, run, sha256_of
from .cache import record_units
from .compile_cache import CompileCache
from .cargo_messages import executable_of, failure_line, read_messages
from .records import UNKNOWN, BuildRecord, ChangelogEntry
from .upstream import Source, ensure_tree


def build_inputs(cfg: Config, flavour: Flavour) -> dict:
    """Everything that decides what the build produces for one flavour, apart
    from the source (tracked through the source record).  A change to any of
    it rebuilds this flavour and no other."""
    return {
        "programs": [[list(p.first), p.package, p.binary] for p in cfg.upstream.programs],
        "features": list(flavour.features(cfg.build)),
        "compute_cap": flavour.compute_cap,
        "rustflags": cfg.build.rustflags,
        **({"cutlass_commit": commit} if (commit := cutlass_commit(cfg)) else {}),
    }


CUTLASS_COMPONENT = "cutlass"
"""The [[bundled]] entry whose commit the build passes on as
MISTRALRS_CUTLASS_COMMIT: upstream's build scripts clone CUTLASS at that
commit, so the package bundles exactly the CUTLASS its SBOM names."""


def cutlass_commit(cfg: Config) -> str:
    """The commit of the [[bundled]] entry named "cutlass" (in any case; '' where there is
    none, or it names no commit: upstream's build scripts then clone the
    commit they pin themselves)."""
    return next((c.commit for c in cfg.bundled.components if c.name.lower() == CUTLASS_COMPONENT), "")


def cuda_home(nvcc: str) -> Path:
    return Path(os.path.realpath(nvcc)).parent.parent


# Where the build's own paths appear in the binary (panic locations, debug
# file names, nvcc's __FILE__), these stable names stand in for them, so the
# binary does not depend on the checkout, cache or cargo home it was built in.
REMAPPED_SOURCE = "/usr/src/mistralrs"
REMAPPED_TARGET = "/usr/src/mistralrs-target"
REMAPPED_CARGO_HOME = "/usr/src/cargo-home"


def path_remaps(layout: Layout, flavour: Flavour, home: Path | None = None) -> list[tuple[Path, str]]:
    """(build path, stable name) pairs: the source trees' parent (one string
    for every commit, so switching refs leaves RUSTFLAGS alone and cargo's
    cache of dependencies valid), the flavour's target directory and cargo's
    home (registry sources, git checkouts)."""
    return [
        (layout.source_tree("0").parent.resolve(), REMAPPED_SOURCE),
        (layout.target_dir(flavour.name).resolve(), REMAPPED_TARGET),
        (home or cargo_home(), REMAPPED_CARGO_HOME),
    ]


def reproducible_rustflags(cfg: Config, layout: Layout, flavour: Flavour, home: Path | None = None) -> str:
    """config's build.rustflags plus the path remaps and ``-Wl,-x``: the
    linker drops local symbols, among them nvcc's per-process temporary
    file names (tmpxft_<pid>_...), which no two builds share."""
    for path, _ in path_remaps(layout, flavour, home):
        if any(c.isspace() for c in str(path)):
            raise UserError(f"{path} contains white space, which RUSTFLAGS cannot carry: use paths without spaces")
    remaps = [f"--remap-path-prefix={path}={name}" for path, name in path_remaps(layout, flavour, home)]
    return " ".join([cfg.build.rustflags, *remaps, "-C", "link-arg=-Wl,-x"]).strip()


def nvcc_flags(layout: Layout, flavour: Flavour) -> str:
    """NVCC_APPEND_FLAGS: the host compiler's __FILE__ and debug paths
    remapped like rustc's."""
    return " ".join(f"-Xcompiler -ffile-prefix-map={path}={name}" for path, name in path_remaps(layout, flavour)[:2])


def source_date_epoch(commit_date: str) -> int:
    """SOURCE_DATE_EPOCH: the upstream commit's time (git's %cI)."""
    try:
        return int(datetime.fromisoformat(commit_date).timestamp())
    except ValueError:
        raise UserError(f"commit date {commit_date!r} is not an ISO 8601 time; run `doit fetch` again") from None


def build_env(cfg: Config, layout: Layout, flavour: Flavour, sde: int | None = None,
              home: Path | None = None) -> dict[str, str]:
    """home: cargo's home (default: as cargo finds it; the rebuild check
    gives a fresh one)."""
    home = home or cargo_home()
    env = {
        "CUDA_COMPUTE_CAP": str(flavour.compute_cap),
        "CARGO_HOME": str(home),
        "RUSTFLAGS": reproducible_rustflags(cfg, layout, flavour, home),
        "NVCC_APPEND_FLAGS": nvcc_flags(layout, flavour),
        "CARGO_TARGET_DIR": str(layout.target_dir(flavour.name)),
        "CUDAFORGE_HOME": str(layout.cudaforge_home),
        "CUDAFORGE_THREADS": str(cfg.build.nvcc_threads),
        "RAYON_NUM_THREADS": str(cfg.build.nvcc_threads),
        # A panicking build script then prints its message last, not stack
        # frames: the one-line error quotes it (cargo_messages.failure_line).
        "RUST_BACKTRACE": "0",
    }
    if sde is not None:
        env["SOURCE_DATE_EPOCH"] = str(sde)
    commit = cutlass_commit(cfg)
    if commit:
        env["MISTRALRS_CUTLASS_COMMIT"] = commit
    if sys.__stderr__ is not None and sys.__stderr__.isatty():
        # cargo sees a pipe (its output is kept for error messages); the
        # person watching has a terminal, so keep its live progress bar.
        env.update(CARGO_TERM_PROGRESS_WHEN="always", CARGO_TERM_COLOR="always")
    nvcc = shutil.which("nvcc")
    if nvcc:
        toolkit = str(cuda_home(nvcc))
        env.update(CUDA_HOME=toolkit, CUDA_PATH=toolkit, CUDA_TOOLKIT_ROOT_DIR=toolkit)
    return env


def cargo_argv(cfg: Config, flavour: Flavour, source: Source) -> list[str]:
    argv = ["cargo", "build", "--release", "--message-format=json-render-diagnostics"]
    if not source.is_snapshot:
        argv.append("--locked")  # releases build exactly what upstream tagged
    argv += ["-p", cfg.upstream.program(source.version).package]
    features = flavour.features(cfg.build)
    if features:
        argv += ["--features", ",".join(features)]
    return argv


def check_cargo_version(source: Source, package: str, cargo_version: str) -> None:
    """The crate cargo builds must be the version the package will be named.

    For a release tag, its X.Y.Z must be the tag's: only a pre-release
    suffix may differ (v0.8.4-rc13 tags a Cargo.toml that already says
    0.8.4), which is said in one line.  Anything else (a tag moved onto
    another release's commit, a tag that names the wrong version) would give
    a package whose binary reports another version than its name, so it is
    refused.  A snapshot takes its version from the last tag in its history
    while the branch's Cargo.toml has often moved on: a difference is only
    said."""
    m = SEMVER.match(cargo_version)
    if m is None:
        raise UserError(f"{package} at {source.ref}: cargo reports version {cargo_version[:60]!r}, which is not semver")
    base = source.version.split("-", 1)[0]
    if cargo_version == source.version:
        return
    if source.is_snapshot:
        log(f"note: snapshot {source.ref[:12]} is numbered after tag v{source.version}; its Cargo.toml says {cargo_version}")
        return
    if m.group("core") != base:
        raise UserError(f"refusing {source.ref}: its {package} crate is version {cargo_version}, not {base}"
                        f" (the tag names another release's commit; a package named {source.rpm_version}"
                        f" would run version {cargo_version})")
    log(f"note: {source.ref} is version {source.version}; upstream's Cargo.toml says {cargo_version}"
        f" (only the pre-release suffix differs); packaging it as {source.rpm_version}")


def cargo_progress(messages: Path) -> str:
    """What cargo has done so far, from its JSON messages (CI's heartbeat
    line; cargo's own progress bar needs a terminal)."""
    compiled, scripts, last = 0, 0, b""
    with open(messages, "rb") as f:
        for line in f:
            if b'"reason":"compiler-artifact"' in line:
                compiled, last = compiled + 1, line
            elif b'"reason":"build-script-executed"' in line:
                scripts += 1
    name = ""
    if last:
        try:
            name = str(json.loads(last)["target"]["name"])[:64]
        except (ValueError, KeyError, TypeError):
            name = ""
    return (f"cargo: {compiled} units compiled, {scripts} build scripts run"
            + (f", last {name}" if name else "") + " (a build script compiling CUDA kernels prints nothing until done)")


def crate_version(tree: Path, package: str) -> str:
    """The version of workspace member ``package`` as cargo reads it (workspace
    inheritance included), from the manifests alone: no dependency is
    fetched, so a wrong tag is refused before an hour of compiling."""
    text = output(["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
                  cwd=tree, quiet=True)
    try:
        members = [p for p in json.loads(text)["packages"] if p.get("name") == package]
        version = members[0]["version"] if len(members) == 1 else None
    except (ValueError, KeyError, TypeError, IndexError):
        version = None
    if not isinstance(version, str):
        raise UserError(f"cargo metadata in {tree} does not list one package {package!r} with a version")
    return version


def tool_versions() -> dict[str, str]:
    versions = {}
    for name, argv in (("rustc", ["rustc", "--version"]), ("cargo", ["cargo", "--version"]), ("nvcc", ["nvcc", "--version"])):
        if shutil.which(argv[0]) is None:
            versions[name] = "absent"
            continue
        text = output(argv, quiet=True, check=False)
        versions[name] = text.splitlines()[-1] if text else UNKNOWN
    return versions


def build_flavour(cfg: Config, layout: Layout, flavour: Flavour, home: Path | None = None) -> dict:
    name = flavour.name
    source = Source.load(layout.source_record)
    watch = Stopwatch(f"build {name}")
    tree = ensure_tree(layout, source.commit)
    program = cfg.upstream.program(source.version)
    sde = source_date_epoch(source.commit_date)
    env = build_env(cfg, layout, flavour, sde, home)
    for d in (layout.target_dir(name), layout.cudaforge_home, layout.artifacts):
        d.mkdir(parents=True, exist_ok=True)
    check_cargo_version(source, program.package, crate_version(tree, program.package))
    messages = layout.cargo_messages(name)
    messages.parent.mkdir(parents=True, exist_ok=True)
    compile_cache = None
    if cfg.build.cache.enabled:
        # Started (and a shared backend checked) before cargo: a dead
        # backend is one line now, not hours of compiling everything.
        home = Path(env["CARGO_HOME"])
        compile_cache = CompileCache(cfg, layout, cache_basedirs(layout, flavour, tree, home), [tree.resolve(), home.resolve()])
        compile_cache.start()
        env.update(compile_cache.env())
    try:
        run(cargo_argv(cfg, flavour, source), cwd=tree, env=env, stdout_file=messages,
            progress=lambda: cargo_progress(messages))
        stats = compile_cache.stats() if compile_cache else None
    except CommandFailed as e:
        raise UserError(f"cargo build of {program.package} at {source.ref} for {name} failed (exit code "
                        f"{e.returncode}): {failure_line(e.stderr.decode(errors='replace'))}") from None
    finally:
        if compile_cache:
            compile_cache.stop()

    cargo_run, made, built = executable_made(layout, name, messages, program, source)
    artifact = layout.artifact(name)
    tmp = artifact.with_name(f".{artifact.name}.tmp{os.getpid()}")
    shutil.copy2(built, tmp)
    os.chmod(tmp, 0o755)
    digest = sha256_of(tmp)
    record = BuildRecord(
        source="cargo",
        ref=source.ref,
        commit=source.commit,
        version=source.version,
        rpm_version=source.rpm_version,
        flavour=flavour.name,
        compute_cap=flavour.compute_cap,
        features=flavour.features(cfg.build),
        package=program.package,
        binary_name=program.binary,
        package_id=made.package_id,
        cargo_version=made.version,
        cargo_executable=str(built),
        cargo_fresh=made.fresh,
        **tool_versions(),
        rustflags=cfg.build.rustflags,
        source_date_epoch=sde,
        sha256=digest,
        size=tmp.stat().st_size,
        duration_s=round(watch.seconds, 1),
        built_at=datetime.now(timezone.utc),
        changelog=tuple(ChangelogEntry.from_json(f"{layout.source_record}: changelog[{i}]", e)
                        for i, e in enumerate(source.changelog)),
        compile_cache=stats.to_json() if stats else None,
    )
    # The binary first, then its record: a record never describes a binary
    # that is not in place.
    os.replace(tmp, artifact)
    record.write(layout)
    record_units(layout, name, source, cargo_run, built)
    watch.done(f"{artifact.name} {record.size / 2**20:.1f} MiB, sm_{flavour.compute_cap}, "
               f"features {','.join(record.features) or '-'}; "
               + (stats.summary() if stats else "compile cache off"))
    return {}


def executable_made(layout: Layout, name: str, messages: Path, program: Program, source: Source) -> tuple:
    """cargo's messages of this run, the executable they report for the
    program, and its path: the binary cargo says this run made, never a file
    that merely exists in the (kept) target directory."""
    cargo_run = read_messages(messages)
    made = executable_of(cargo_run, program.package, program.binary)
    built = Path(made.executable)
    target_dir = layout.target_dir(name).resolve()
    if not built.resolve().is_relative_to(target_dir) or not built.is_file():
        raise UserError(f"cargo reported executable {built}, which is not a file under {target_dir}")
    check_cargo_version(source, program.package, made.version)
    return cargo_run, made, built


def cache_basedirs(layout: Layout, flavour: Flavour, tree: Path, home: Path) -> list[Path]:
    """The build's own directories, which sccache strips from preprocessed
    sources so that runners with other paths share nvcc's steps.  The
    source tree itself too: below the trees' parent its path names the
    commit, which changes with every version."""
    return [path for path, _ in path_remaps(layout, flavour, home)] + [
        tree.resolve(), layout.cudaforge_home.resolve()]


def adopt_prebuilt(cfg: Config, layout: Layout, flavour: Flavour, version: str) -> dict:
    """The manual path: a binary built elsewhere, dropped at
    artifacts/mistralrs-<flavour>, packaged without any cargo build."""
    from ..refs import parse_ref, rpm_version_of_tag, tag_version

    name = flavour.name
    ref = parse_ref(version if version.startswith("v") else f"v{version}")
    if not ref.is_tag:
        raise UserError(f"prebuilt version {version!r}: expected X.Y.Z or X.Y.Z-rcN")
    artifact = layout.artifact(name)
    if not artifact.is_file():
        raise UserError(f"{artifact} is missing: put the binary built elsewhere there first")
    watch = Stopwatch(f"adopt {name}")
    version = tag_version(ref.text)
    program = cfg.upstream.program(version)
    BuildRecord(
        source="prebuilt",
        ref=ref.text,
        commit=None,
        version=version,
        rpm_version=rpm_version_of_tag(ref.text),
        flavour=name,
        compute_cap=flavour.compute_cap,
        features=flavour.features(cfg.build),
        package=program.package,
        binary_name=program.binary,
        package_id=None, cargo_version=None, cargo_executable=None, cargo_fresh=None,
        rustc=UNKNOWN, cargo=UNKNOWN, nvcc=UNKNOWN, rustflags=UNKNOWN,
        sha256=sha256_of(artifact),
        size=artifact.stat().st_size,
        duration_s=0.0,
        built_at=datetime.fromtimestamp(artifact.stat().st_mtime, timezone.utc),
        changelog=(ChangelogEntry(rpm_version_of_tag(ref.text), ref.text, datetime.now(timezone.utc).date(), None),),
    ).write(layout)
    watch.done(f"{artifact.name} adopted as version {rpm_version_of_tag(ref.text)}")
    return {}
