"""One flavour's cargo build, and the build record written beside it."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..config import Config, Flavour
from ..layout import Layout
from ..run import Stopwatch, UserError, output, run, sha256_of
from .records import UNKNOWN, BuildRecord, ChangelogEntry
from .upstream import Source, ensure_tree


def build_inputs(cfg: Config, flavour: Flavour) -> dict:
    """Everything that decides what the build produces for one flavour, apart
    from the source (tracked through the source record).  A change to any of
    it rebuilds this flavour and no other."""
    return {
        "package": cfg.upstream.package,
        "features": list(flavour.features(cfg.build)),
        "compute_cap": flavour.compute_cap,
        "rustflags": cfg.build.rustflags,
        "binary_names": [[list(v), n] for v, n in cfg.upstream.binary_names],
    }


def cuda_home(nvcc: str) -> Path:
    return Path(os.path.realpath(nvcc)).parent.parent


def build_env(cfg: Config, layout: Layout, flavour: Flavour) -> dict[str, str]:
    env = {
        "CUDA_COMPUTE_CAP": str(flavour.compute_cap),
        "RUSTFLAGS": cfg.build.rustflags,
        "CARGO_TARGET_DIR": str(layout.target_dir(flavour.name)),
        "CUDAFORGE_HOME": str(layout.cudaforge_home),
        "CUDAFORGE_THREADS": str(cfg.build.nvcc_threads),
        "RAYON_NUM_THREADS": str(cfg.build.nvcc_threads),
    }
    if sys.__stderr__ is not None and sys.__stderr__.isatty():
        # cargo sees a pipe (its output is kept for error messages); the
        # person watching has a terminal, so keep its live progress bar.
        env.update(CARGO_TERM_PROGRESS_WHEN="always", CARGO_TERM_COLOR="always")
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = str(cuda_home(nvcc))
        env.update(CUDA_HOME=home, CUDA_PATH=home, CUDA_TOOLKIT_ROOT_DIR=home)
    return env


def cargo_argv(cfg: Config, flavour: Flavour, source: Source) -> list[str]:
    argv = ["cargo", "build", "--release"]
    if not source.is_snapshot:
        argv.append("--locked")  # releases build exactly what upstream tagged
    argv += ["-p", cfg.upstream.package]
    features = flavour.features(cfg.build)
    if features:
        argv += ["--features", ",".join(features)]
    return argv


def tool_versions() -> dict[str, str]:
    versions = {}
    for name, argv in (("rustc", ["rustc", "--version"]), ("cargo", ["cargo", "--version"]), ("nvcc", ["nvcc", "--version"])):
        if shutil.which(argv[0]) is None:
            versions[name] = "absent"
            continue
        text = output(argv, quiet=True, check=False)
        versions[name] = text.splitlines()[-1] if text else UNKNOWN
    return versions


def build_flavour(cfg: Config, layout: Layout, flavour: Flavour) -> dict:
    name = flavour.name
    source = Source.load(layout.source_record)
    watch = Stopwatch(f"build {name}")
    tree = ensure_tree(layout, source.commit)
    binary_name = cfg.upstream.binary_name(source.version)
    env = build_env(cfg, layout, flavour)
    for d in (layout.target_dir(name), layout.cudaforge_home, layout.artifacts):
        d.mkdir(parents=True, exist_ok=True)
    run(cargo_argv(cfg, flavour, source), cwd=tree, env=env)

    built = layout.target_dir(name) / "release" / binary_name
    if not built.is_file():
        raise UserError(f"cargo finished but {built} is missing: does {cfg.upstream.package} at {source.ref} "
                        f"build a binary named {binary_name!r}? (upstream.binary_names)")
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
        binary_name=binary_name,
        **tool_versions(),
        rustflags=cfg.build.rustflags,
        sha256=digest,
        size=tmp.stat().st_size,
        duration_s=round(watch.seconds, 1),
        built_at=datetime.now(timezone.utc),
        changelog=tuple(ChangelogEntry.from_json(f"{layout.source_record}: changelog[{i}]", e)
                        for i, e in enumerate(source.changelog)),
    )
    # The binary first, then its record: a record never describes a binary
    # that is not in place.
    os.replace(tmp, artifact)
    record.write(layout)
    watch.done(f"{artifact.name} {record.size / 2**20:.1f} MiB, sm_{flavour.compute_cap}, "
               f"features {','.join(record.features) or '-'}")
    return {}


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
    BuildRecord(
        source="prebuilt",
        ref=ref.text,
        commit=None,
        version=version,
        rpm_version=rpm_version_of_tag(ref.text),
        flavour=name,
        compute_cap=flavour.compute_cap,
        features=flavour.features(cfg.build),
        binary_name=cfg.upstream.binary_name(version),
        rustc=UNKNOWN, cargo=UNKNOWN, nvcc=UNKNOWN, rustflags=UNKNOWN,
        sha256=sha256_of(artifact),
        size=artifact.stat().st_size,
        duration_s=0.0,
        built_at=datetime.fromtimestamp(artifact.stat().st_mtime, timezone.utc),
        changelog=(ChangelogEntry(rpm_version_of_tag(ref.text), ref.text, datetime.now(timezone.utc).date(), None),),
    ).write(layout)
    watch.done(f"{artifact.name} adopted as version {rpm_version_of_tag(ref.text)}")
    return {}
