"""Upstream fidelity (issue 11), each case on a tiny upstream made for the
test with real git and cargo: the binary packaged is the one this cargo run
made; snapshots are numbered from the highest release in their history and
must be on upstream.branch; a moved tag is noticed and rebuilt; a failed
build's line shows the panic; the programs table follows upstream's history;
%changelog is in version order; clean-cache keeps the newest versions."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import date, datetime, timezone

import pytest

from buildlib import config as configmod
from buildlib.layout import Layout
from buildlib.pipeline.cargo_messages import failure_line, package_name_version
from buildlib.pipeline.history import compare_versions
from buildlib.pipeline.licenses import write_bundle
from buildlib.pipeline.records import BuildRecord, ChangelogEntry
from buildlib.pipeline.spec import spec_text
from buildlib.pipeline.upstream import fetch
from buildlib.pipeline.verify import verify_artifact
from buildlib.run import UserError
from pipeline import demo_config, ran, run_doit, vercmp, write_config
from test_package import fixture_bundle
from tiny_upstream import TinyUpstream

STAGES = ("fetch", "build", "verify")


def tiny_config(tmp_path, upstream, programs=None, **changes):
    """The project's config.toml on a tiny upstream: one flavour, no cargo features."""
    data = demo_config(tmp_path, upstream.path, tmp_path / "cache", flavours=("ampere",), build__features=[],
                       **changes)
    if programs is not None:
        data["upstream"]["programs"] = programs
    return write_config(tmp_path, data)


def load(config, monkeypatch, ref):
    monkeypatch.setenv("MRPM_REF", ref)
    cfg = configmod.load(config)
    return cfg, Layout.of(cfg)


def run_artifact(layout) -> str:
    return subprocess.run([str(layout.artifact("ampere"))], check=True, capture_output=True, text=True).stdout.strip()


# --- 1. the binary comes from this cargo run ---------------------------------


@pytest.mark.slow
def test_warm_target_dir_and_a_lagging_programs_table_never_package_an_old_binary(tmp_path):
    up = TinyUpstream(tmp_path / "up")
    up.commit("0.1.0", {"mistralrs-cli": ["mistralrs-server"]})
    up.tag("v0.1.0")
    up.commit("0.2.0", {"mistralrs-cli": ["mistralrs"]})  # upstream renamed the binary
    up.tag("v0.2.0")
    # the table lags: it does not know the rename yet
    lagging = {"0.1.0": {"package": "mistralrs-cli", "binary": "mistralrs-server"}}
    config = tiny_config(tmp_path, up, lagging)
    layout = Layout.of(configmod.load(config))

    rc, _, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.1.0"})
    assert rc == 0, err
    assert run_artifact(layout) == "mistralrs-cli 0.1.0"
    # the target dir is warm: target/release/mistralrs-server is v0.1.0's
    assert (tmp_path / "cache" / "target" / "ampere" / "release" / "mistralrs-server").is_file()

    rc, results, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.2.0"})
    assert rc != 0 and results["build:ampere"] == "fail"
    assert "cargo built package mistralrs-cli 0.2.0 with binary mistralrs, not 'mistralrs-server'" in err
    assert "upstream.programs" in err and "Traceback" not in err
    # nothing claims to be 0.2.0, and verify refuses the old artifact for the new source
    assert json.loads(layout.build_record("ampere").read_text())["version"] == "0.1.0"
    cfg = configmod.load(config)
    with pytest.raises(UserError, match=r"built from v0\.1\.0 .* fetched source is v0\.2\.0"):
        verify_artifact(cfg, layout, cfg.flavour("ampere"))

    # with the table fixed, the right binary (this run's, reporting 0.2.0)
    fixed = {**lagging, "0.2.0": {"package": "mistralrs-cli", "binary": "mistralrs"}}
    config = tiny_config(tmp_path, up, fixed)
    rc, _, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.2.0"})
    assert rc == 0, err
    assert run_artifact(layout) == "mistralrs-cli 0.2.0"
    record = json.loads(layout.build_record("ampere").read_text())
    assert record["binary_name"] == "mistralrs" and record["package"] == "mistralrs-cli"
    assert package_name_version(record["package_id"]) == ("mistralrs-cli", "0.2.0")
    assert record["cargo_executable"].endswith("/release/mistralrs")
    assert "--message-format=json-render-diagnostics" in err


@pytest.mark.slow
def test_verify_refuses_a_record_without_cargo_provenance(tmp_path):
    up = TinyUpstream(tmp_path / "up")
    up.commit("0.7.0")
    up.tag("v0.7.0")
    config = tiny_config(tmp_path, up)
    assert run_doit(config, *STAGES, env={"MRPM_REF": "v0.7.0"})[0] == 0
    layout = Layout.of(configmod.load(config))
    record = json.loads(layout.build_record("ampere").read_text())
    cfg = configmod.load(config)
    for field, value, message in (("package_id", None, "no cargo package id"),
                                  ("package_id", record["package_id"].replace("mistralrs-cli", "mistralrs-server"),
                                   "built from package mistralrs-server")):
        layout.build_record("ampere").write_text(json.dumps({**record, field: value}))
        with pytest.raises(UserError, match=message):
            verify_artifact(cfg, layout, cfg.flavour("ampere"))


def test_package_ids_in_both_of_cargos_forms():
    assert package_name_version("mistralrs-cli 0.9.2 (path+file:///x/mistralrs-cli)") == ("mistralrs-cli", "0.9.2")
    assert package_name_version("path+file:///x/mistralrs-cli#0.9.2") == ("mistralrs-cli", "0.9.2")
    assert package_name_version("path+file:///x/cli#mistralrs-cli@0.8.4") == ("mistralrs-cli", "0.8.4")
    assert package_name_version("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.1") == ("serde", "1.0.1")


# --- 7. package and binary by version, as upstream's history has them ----------


@pytest.mark.slow
def test_mistralrs_is_packaged_for_0_7_0_to_0_8_4_and_0_6_is_refused(tmp_path):
    up = TinyUpstream(tmp_path / "up")
    up.commit("0.6.3", {"mistralrs-server": ["mistralrs-server"]})
    up.tag("v0.6.3")
    both = {"mistralrs-server": ["mistralrs-server"], "mistralrs-cli": ["mistralrs"]}
    up.commit("0.7.0", both)
    up.tag("v0.7.0")
    up.commit("0.8.4", both)  # an rc tag whose Cargo.toml already says the final version
    up.tag("v0.8.4-rc1")
    up.tag("v0.8.4")
    config = tiny_config(tmp_path, up)  # the project's default [upstream.programs]
    layout = Layout.of(configmod.load(config))
    for ref, version in (("v0.7.0", "0.7.0"), ("v0.8.4-rc1", "0.8.4"), ("v0.8.4", "0.8.4")):
        rc, _, err = run_doit(config, *STAGES, env={"MRPM_REF": ref})
        assert rc == 0, err
        assert "-p mistralrs-cli" in err
        assert run_artifact(layout) == f"mistralrs-cli {version}"
        record = json.loads(layout.build_record("ampere").read_text())
        assert (record["binary_name"], record["ref"]) == ("mistralrs", ref)
        noted = "v0.8.4-rc1 is version 0.8.4-rc1; upstream's Cargo.toml says 0.8.4" in err
        assert noted == (ref == "v0.8.4-rc1"), err

    rc, results, err = run_doit(config, "fetch", env={"MRPM_REF": "v0.6.3"})
    assert rc != 0 and results["fetch"] == "fail"
    lines = sorted({line for line in err.splitlines() if line.startswith("error:")})  # the report repeats it
    assert len(lines) == 1 and "0.6.3 is older than 0.7.0" in lines[0] and "not packaged" in lines[0], err


@pytest.mark.slow
@pytest.mark.parametrize("cargo_version", ["0.8.5", "0.9.3", "0.9.2-rc1"])
def test_a_tag_whose_crate_is_another_release_is_refused_before_cargo_builds(tmp_path, cargo_version):
    """A tag moved onto an older release's commit (or one naming the wrong
    version) would give mistralrs-<flavour>-0.9.2 whose binary reports
    0.8.5; only a pre-release suffix may differ (the rc1 case packs)."""
    up = TinyUpstream(tmp_path / "up")
    up.commit(cargo_version)
    up.tag("v0.9.2")
    config = tiny_config(tmp_path, up)
    rc, results, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.9.2"})
    layout = Layout.of(configmod.load(config))
    if cargo_version == "0.9.2-rc1":
        assert rc == 0, err
        assert run_artifact(layout) == "mistralrs-cli 0.9.2-rc1"
        return
    assert rc != 0 and results["build:ampere"] == "fail", err
    lines = {line for line in err.splitlines() if line.startswith("error:")}
    assert any(f"refusing v0.9.2: its mistralrs-cli crate is version {cargo_version}, not 0.9.2" in line
               for line in lines), err
    # refused before cargo compiled anything, not an hour later
    assert not list(layout.target_dir("ampere").glob("release/mistralrs*")), err
    assert not layout.artifact("ampere").exists() and not layout.build_record("ampere").exists()


def test_the_crate_version_check_after_the_build_is_the_same_rule():
    """cargo's own report of the package it built is checked as well (the
    early check reads the manifests; a build script cannot change a version,
    but the check costs nothing)."""
    from buildlib.pipeline.cargo import check_cargo_version
    from buildlib.pipeline.upstream import Source

    tag = Source(ref="v0.9.2", commit="a" * 40, version="0.9.2", rpm_version="0.9.2", is_snapshot=False,
                 commit_date="2026-03-01T12:00:00+00:00", changelog=(), tree="")
    check_cargo_version(tag, "mistralrs-cli", "0.9.2")
    check_cargo_version(tag, "mistralrs-cli", "0.9.2-alpha.1+build5")
    for bad in ("0.8.5", "0.9.20", "1.9.2", "not-a-version"):
        with pytest.raises(UserError):
            check_cargo_version(tag, "mistralrs-cli", bad)
    snapshot = Source(ref="b" * 40, commit="b" * 40, version="0.9.2", rpm_version="0.9.2^20260301.1gitbbbbbbb",
                      is_snapshot=True, commit_date="2026-03-01T12:00:00+00:00", changelog=(), tree="")
    check_cargo_version(snapshot, "mistralrs-cli", "0.9.3")  # master moved on after the tag: said, not refused


# --- 2. snapshot numbering -----------------------------------------------------


@pytest.mark.parametrize("late_tag", [False, True], ids=["same-second", "same-second+late"])
def test_snapshot_base_is_the_highest_release_in_history_despite_same_second_and_late_tags(tmp_path, monkeypatch,
                                                                                           late_tag):
    up = TinyUpstream(tmp_path / "up")
    same_second = "2026-03-01T12:00:00+00:00"
    first = up.commit("0.9.1", date=same_second)
    up.tag("v0.9.1")
    up.commit("0.9.2", date=same_second)  # a scripted release: the same second
    up.tag("v0.9.2")
    if late_tag:  # 0.6.0 tagged (annotated) months later on the first commit
        up.tag("v0.6.0", first, annotated_at="2026-09-01T00:00:00+00:00")
    up.tag("not-a-release")
    head = up.commit("0.9.2", date="2026-03-02T08:00:00+00:00", note="after the release")
    every_version = {"0.0.0": {"package": "mistralrs-cli", "binary": "mistralrs"}}
    cfg, layout = load(tiny_config(tmp_path, up, every_version), monkeypatch, head)
    source = fetch(cfg, layout)
    assert source.is_snapshot and source.version == "0.9.2"
    assert source.rpm_version == f"0.9.2^20260302.1git{head[:7]}", source.rpm_version
    assert vercmp(source.rpm_version, "0.9.2") == 1
    # the changelog data in version order, not date order
    assert [e["tag"] for e in source.changelog] == [None, "v0.9.2", "v0.9.1"] + (["v0.6.0"] if late_tag else [])


@pytest.mark.slow
def test_a_commit_off_the_branch_is_refused(tmp_path, monkeypatch):
    up = TinyUpstream(tmp_path / "up")
    up.commit("0.9.2")
    up.tag("v0.9.2")
    up.git("checkout", "--quiet", "-b", "side")
    side = up.commit("0.9.2", note="side branch only")
    up.git("checkout", "--quiet", "master")
    on_master = up.commit("0.9.2", note="on master")
    cfg, layout = load(tiny_config(tmp_path, up), monkeypatch, side)
    with pytest.raises(configmod.UserError) as e:
        fetch(cfg, layout)
    assert str(e.value) == (f"commit {side[:12]} is not on upstream's branch master (upstream.branch): "
                            "refusing to build it as a snapshot of master")
    assert not layout.source_record.exists()
    # through doit: one line
    rc, _, err = run_doit(cfg.source, "fetch", env={"MRPM_REF": side})
    assert rc != 0 and f"error: commit {side[:12]} is not on upstream's branch master" in err
    # the branch's own commit is fine; the branch is a setting
    cfg, layout = load(cfg.source, monkeypatch, on_master)
    assert fetch(cfg, layout).commit == on_master
    no_branch = configmod.load(tiny_config(tmp_path, up, upstream__branch="release/next"))
    with pytest.raises(configmod.UserError, match=r"^cannot fetch branch release/next \(upstream.branch\) from .*"
                                                 r"couldn't find remote ref refs/heads/release/next"):
        fetch(no_branch, layout)
    side_cfg = configmod.load(tiny_config(tmp_path, up, upstream__branch="side"))
    monkeypatch.setenv("MRPM_REF", side)
    assert fetch(configmod.load(side_cfg.source), layout).commit == side


# --- 4. a moved tag --------------------------------------------------------------


@pytest.mark.slow
def test_a_moved_tag_is_noticed_and_rebuilt(tmp_path):
    up = TinyUpstream(tmp_path / "up")
    first = up.commit("0.7.0", note="first")
    up.tag("v0.7.0")
    config = tiny_config(tmp_path, up)
    layout = Layout.of(configmod.load(config))
    rc, results, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.7.0"})
    assert rc == 0, err
    assert json.loads(layout.build_record("ampere").read_text())["commit"] == first
    rc, results, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.7.0"})
    assert rc == 0 and ran(results) == set(), results

    moved = up.commit("0.7.0", note="retagged")
    up.tag("v0.7.0", moved)  # upstream moves the tag
    rc, results, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.7.0"})
    assert rc == 0, err
    assert f"tag v0.7.0 moved upstream: was {first[:12]}, now {moved[:12]}" in err
    assert ran(results) == {"fetch", "build:ampere", "verify:ampere"}, results
    assert json.loads(layout.build_record("ampere").read_text())["commit"] == moved
    assert json.loads(layout.source_record.read_text())["commit"] == moved


# --- 5. a failed build's line ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backtrace", ["1", "full"])
def test_a_build_script_panic_is_the_error_line_whatever_rust_backtrace_says(tmp_path, backtrace):
    up = TinyUpstream(tmp_path / "up")
    up.commit("0.7.0", build_rs='fn main() { let cap = "none"; '
                                'panic!("CUDA_COMPUTE_CAP={cap}: no GPU to ask"); }\n')
    up.tag("v0.7.0")
    config = tiny_config(tmp_path, up)
    rc, results, err = run_doit(config, "build", env={"MRPM_REF": "v0.7.0", "RUST_BACKTRACE": backtrace})
    assert rc != 0 and results["build:ampere"] == "fail"
    (line,) = {line for line in err.splitlines() if line.startswith("error: cargo build")}
    assert "panicked at" in line and "CUDA_COMPUTE_CAP=none: no GPU to ask" in line, line


def test_failure_line_picks_the_panic_or_the_compiler_error():
    panic = ("error: failed to run custom build command for `x v0.1.0`\n\nCaused by:\n"
             "  process didn't exit successfully: `/t/build-script-build` (exit status: 101)\n  --- stderr\n\n"
             "  thread 'main' panicked at build.rs:1:13:\n  nvcc not found\n  stack backtrace:\n"
             "     0: rust_begin_unwind\n     1: core::panicking::panic_fmt\n"
             "  note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n")
    assert failure_line(panic) == "thread 'main' panicked at build.rs:1:13: nvcc not found"
    compile_error = ("   Compiling x v0.1.0\nerror[E0425]: cannot find value `y` in this scope\n"
                     " --> src/main.rs:1:20\n  |\n\nerror: could not compile `x` (bin \"x\") due to 1 previous error\n")
    assert failure_line(compile_error) == "error[E0425]: cannot find value `y` in this scope --> src/main.rs:1:20"


# --- 6. %changelog ---------------------------------------------------------------------


def test_changelog_is_in_version_order_and_lists_only_final_releases(tmp_path):
    cfg = configmod.load(write_config(tmp_path, demo_config(tmp_path, tmp_path, tmp_path / "cache",
                                                            flavours=("ampere",))))
    layout = Layout.of(cfg)
    layout.artifact("ampere").parent.mkdir(parents=True, exist_ok=True)
    layout.artifact("ampere").write_bytes(b"\x7fELF")
    same_day = date(2026, 3, 1)
    entries = (
        ChangelogEntry("0.9.3", "v0.9.3", date(2026, 3, 5), "a" * 40),
        # three tags of one scripted release run (same second), listed out of order
        ChangelogEntry("0.9.1", "v0.9.1", same_day, "b" * 40),
        ChangelogEntry("0.9.2", "v0.9.2", same_day, "c" * 40),
        ChangelogEntry("0.9.2~rc1", "v0.9.2-rc1", same_day, "d" * 40),
        ChangelogEntry("0.9.1~rc2", "v0.9.1-rc2", date(2026, 2, 20), "0" * 40),
        # a late tag: an old version tagged after the newest
        ChangelogEntry("0.8.9", "v0.8.9", date(2026, 4, 1), "e" * 40),
        # before the first row of upstream.programs (0.7.0): never packaged
        ChangelogEntry("0.6.3", "v0.6.3", date(2026, 1, 1), "f" * 40),
    )
    record = BuildRecord(flavour="ampere", source="cargo", ref="v0.9.3", commit="a" * 40, version="0.9.3",
                         rpm_version="0.9.3", compute_cap=86, features=(), package="mistralrs-cli",
                         binary_name="mistralrs", package_id="mistralrs-cli 0.9.3 (path+file:///x/mistralrs-cli)",
                         cargo_version="0.9.3", cargo_executable="/x/target/release/mistralrs", cargo_fresh=False,
                         rustc="rustc", cargo="cargo", nvcc="nvcc", rustflags="", sha256="0" * 64, size=4,
                         duration_s=1.0, built_at=datetime(2026, 3, 6, tzinfo=timezone.utc), changelog=entries)
    # only final releases, each at the Release that brought it (1), whatever
    # was packaged here or published: no rc besides the one packaged now
    expected = ["0.9.3-1", "0.9.2-1", "0.9.1-1", "0.8.9-1"]
    # the spec's License, provides and SBOM come from the licenses stage's record
    write_bundle(layout, "ampere", fixture_bundle(), commit=record.commit, version=record.version,
                 source_date_epoch=int(record.built_at.timestamp()), features=record.features)
    text = spec_text(cfg, layout, cfg.flavour("ampere"), record, "1", "0" * 64)
    headers = re.findall(r"^\* (.+) - (\S+)$", text.split("%changelog", 1)[1], re.M)
    assert [v for _, v in headers] == expected
    assert [d[:15] for d, _ in headers] == ["Thu Mar 05 2026", "Sun Mar 01 2026", "Sun Mar 01 2026",
                                           "Sun Mar 01 2026"]  # the late tag's date clamped
    spec = tmp_path / "x.spec"
    spec.write_text(text)
    # rpm's own spec parser accepts the order (it refuses dates that rise going down)
    parsed = subprocess.run(["rpmspec", "-q", "--srpm", "--qf", "[%{CHANGELOGNAME}\n]", str(spec)],
                            capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    assert [line.rsplit(" - ", 1)[1] for line in parsed.stdout.splitlines()] == expected


@pytest.mark.parametrize("a, b", [
    ("0.9.2", "0.9.10"), ("0.9.2~rc1", "0.9.2"), ("0.9.2^20260301.1gitabcdef0", "0.9.3~rc1"),
    ("0.9.2", "0.9.2^20260301.1gitabcdef0"), ("0.9.2^20260301.2gitabcdef0", "0.9.2^20260301.10git0000000"),
    ("1.0a", "1.0"), ("1.0", "1.0.1"), ("1.0~rc1", "1.0~rc2"), ("0.9.2", "0.9.2"), ("1.a", "1.1"),
])
def test_version_order_is_rpms(a, b):
    """history orders versions by the one shared comparison (rpm.labelCompare);
    a version alone, without epoch and release, compares as rpm compares it."""
    sign = lambda n: (n > 0) - (n < 0)  # noqa: E731
    assert sign(compare_versions(a, b)) == vercmp(a, b) and sign(compare_versions(b, a)) == vercmp(b, a)


# --- 10. clean-cache ---------------------------------------------------------------------


@pytest.mark.slow
def test_clean_cache_keeps_the_newest_versions_and_reports_what_it_freed(tmp_path):
    up = TinyUpstream(tmp_path / "up")
    commits = {}
    for version in ("0.7.0", "0.7.1", "0.7.2"):
        commits[version] = up.commit(version)
        up.tag(f"v{version}")
    config = tiny_config(tmp_path, up)
    layout = Layout.of(configmod.load(config))
    # built out of version order: the newest by version are kept, not the last built
    for version in ("0.7.1", "0.7.2", "0.7.0"):
        rc, _, err = run_doit(config, "fetch", "build", env={"MRPM_REF": f"v{version}"})
        assert rc == 0, err
    trees = {v: layout.source_tree(c) for v, c in commits.items()}
    assert all(t.is_dir() for t in trees.values())
    deps = layout.target_dir("ampere") / "release" / "deps"
    units_before = {p.name for p in deps.iterdir()}

    rc, results, err = run_doit(config, "clean-cache", "--keep", "1")
    assert rc == 0, err
    # 0.7.2 is the newest version; 0.7.0 is the source fetched now: both kept
    assert trees["0.7.2"].is_dir() and trees["0.7.0"].is_dir() and not trees["0.7.1"].exists()
    assert re.search(r"clean-cache: source trees: \d+\.\d MiB freed", err), err
    assert re.search(r"==> clean-cache: kept the newest 1 version\(s\) per flavour; \d+\.\d MiB freed in all", err)
    units_after = {p.name for p in deps.iterdir()}
    assert units_after < units_before
    manifest = json.loads(layout.units_manifest("ampere").read_text())
    assert list(manifest) == [commits["0.7.2"]]
    # the kept version's units are all there: cargo rebuilds nothing for it
    rc, _, err = run_doit(config, "fetch", "build", env={"MRPM_REF": "v0.7.2"})
    assert rc == 0, err
    record = json.loads(layout.build_record("ampere").read_text())
    assert record["cargo_fresh"] is True and "Compiling" not in err
    # a version whose units were removed compiles again
    rc, _, err = run_doit(config, "fetch", "build", env={"MRPM_REF": "v0.7.1"})
    assert rc == 0 and json.loads(layout.build_record("ampere").read_text())["cargo_fresh"] is False


# --- the source record is checked before its values reach git, paths or cargo ---------


@pytest.mark.parametrize("field, value", [
    ("commit", "../../victim"), ("commit", "--upload-pack=touch x"), ("ref", "v1.0;id"),
    ("version", "0.9.2\nRelease: 99"), ("rpm_version", "0.9.2%(id)"), ("is_snapshot", True), ("version", "0.9.3"),
])
def test_a_tampered_source_record_is_refused_and_nothing_is_removed(tmp_path, monkeypatch, field, value):
    up = TinyUpstream(tmp_path / "up")
    up.commit("0.9.2")
    up.tag("v0.9.2")
    cfg, layout = load(tiny_config(tmp_path, up), monkeypatch, "v0.9.2")
    fetch(cfg, layout)
    # a directory that "../../victim" below the cache's src/ would name, with a
    # git checkout and an untracked file: ensure_tree would have deleted it
    victim = layout.source_trees / ".." / ".." / "victim"
    victim.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(victim)], check=True)
    (victim / "precious").write_text("keep me")
    data = json.loads(layout.source_record.read_text())
    data[field] = value
    layout.source_record.write_text(json.dumps(data))
    with pytest.raises(UserError, match=rf"^{re.escape(str(layout.source_record))} is not a source record \("):
        from buildlib.pipeline.cargo import build_flavour
        build_flavour(cfg, layout, cfg.flavour("ampere"))
    assert (victim / "precious").read_text() == "keep me"


def test_a_damaged_source_record_is_fetched_again(tmp_path, monkeypatch):
    """The fetch task's up-to-date check reads the source record as every
    other stage does (Source.load): a record the later stages refuse is not
    "up to date", so `doit fetch` writes it anew instead of leaving the build
    to fail on it."""
    from buildlib.pipeline.upstream import tag_unchanged

    up = TinyUpstream(tmp_path / "up")
    up.commit("0.9.2")
    up.tag("v0.9.2")
    cfg, layout = load(tiny_config(tmp_path, up), monkeypatch, "v0.9.2")
    fetch(cfg, layout)
    assert tag_unchanged(cfg, layout) is True
    data = json.loads(layout.source_record.read_text())
    layout.source_record.write_text(json.dumps({**data, "version": "0.9.2\nRelease: 99"}))
    assert tag_unchanged(cfg, layout) is False
    fetch(cfg, layout)
    assert json.loads(layout.source_record.read_text()) == data
