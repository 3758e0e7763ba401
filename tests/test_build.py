"""Fetch, per-flavour cargo builds, verification and the incremental rules,
with real git, cargo and nvcc on the demo upstream."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from buildlib import config as configmod
from buildlib.layout import Layout
from buildlib.pipeline.upstream import Source, fetch
from pipeline import demo_config, git, project_config, ran, run_doit, write_config


# This file checks the first stages; tests/test_e2e.py runs the whole default.
STAGES = ("fetch", "build", "verify")


def load(path, ref=None, monkeypatch=None):
    if ref is not None:
        monkeypatch.setenv("MRPM_REF", ref)
    else:
        os.environ.pop("MRPM_REF", None)
    return configmod.load(path)


@pytest.mark.parametrize("ref, rpm_version", [("v0.9.2", "0.9.2"), ("v0.9.2-rc1", "0.9.2~rc1"), ("v0.9.0", "0.9.0")])
def test_fetch_tag(tmp_path, demo_upstream, shared_cache, monkeypatch, ref, rpm_version):
    cfg = load(write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, shared_cache)), ref, monkeypatch)
    layout = Layout.of(cfg)
    source = fetch(cfg, layout)
    assert source.commit == git(demo_upstream.path, "rev-parse", f"{ref}^{{commit}}")
    assert source.rpm_version == rpm_version and not source.is_snapshot
    assert Source.load(layout.source_record) == source
    tree = layout.source_tree(source.commit)
    assert git(tree, "rev-parse", "HEAD") == source.commit
    assert git(tree, "status", "--porcelain") == ""
    assert source.changelog[0]["tag"] == ref


def test_fetch_commit_is_a_snapshot(tmp_path, demo_upstream, shared_cache, monkeypatch):
    head = git(demo_upstream.path, "rev-parse", "master")
    cfg = load(write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, shared_cache)), head, monkeypatch)
    source = fetch(cfg, Layout.of(cfg))
    assert source.commit == head and source.is_snapshot
    assert re.fullmatch(rf"0\.9\.2\^\d{{8}}\.2git{head[:7]}", source.rpm_version), source.rpm_version
    assert source.version == "0.9.2"


def test_fetch_updates_the_mirror_instead_of_cloning(tmp_path, demo_upstream, shared_cache, monkeypatch):
    cfg = load(write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, tmp_path / "cache")), "v0.9.1", monkeypatch)
    layout = Layout.of(cfg)
    fetch(cfg, layout)
    marker = layout.mirror / "objects" / "mirror-marker"
    marker.write_text("kept")
    monkeypatch.setenv("MRPM_REF", "v0.9.2")
    fetch(configmod.load(cfg.source), layout)
    assert marker.read_text() == "kept"  # same mirror, fetched into


@pytest.mark.parametrize("ref", ["v1.0;touch x", "../x", "v0.9.2 ", "--upload-pack=touch x", "v01.2.3", "main"])
def test_bad_refs_are_refused_before_any_command(tmp_path, demo_upstream, shared_cache, ref):
    config = write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, tmp_path / "cache"))
    rc, results, err = run_doit(config, "fetch", env={"MRPM_REF": ref})
    # checked when the configuration loads, before doit creates any task
    assert rc == 2 and not results
    assert "MRPM_REF: refusing ref" in err and "vX.Y.Z" in err
    assert "Traceback" not in err
    assert not (tmp_path / "cache" / "upstream.git").exists()
    assert not (tmp_path / "x").exists()


def test_missing_tag_is_a_clear_error(tmp_path, demo_upstream, shared_cache):
    config = write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, shared_cache))
    rc, results, err = run_doit(config, "fetch", env={"MRPM_REF": "v9.9.9"})
    assert rc != 0
    assert f"tag v9.9.9 does not exist in {demo_upstream.path}" in err


def info(binary):
    return json.loads(subprocess.run([str(binary), "info"], check=True, capture_output=True, text=True).stdout)


@pytest.mark.slow
def test_builds_and_incremental_rules(tmp_path, demo_upstream, shared_cache):
    data = demo_config(tmp_path, demo_upstream.path, shared_cache)
    config = write_config(tmp_path, data)
    layout = Layout.of(configmod.load(config))

    rc, results, err = run_doit(config, *STAGES)
    assert rc == 0, err
    assert ran(results) == {"fetch", "build:ampere", "build:hopper", "verify:ampere", "verify:hopper"}
    for flavour, cap in (("ampere", "86"), ("hopper", "90")):
        reported = info(layout.artifact(flavour))
        assert reported["version"] == "0.9.2" and reported["compute_cap"] == cap
        assert reported["features"] == ["cuda", "cudnn", "flash-attn", "nccl"]
        record = json.loads(layout.build_record(flavour).read_text())
        assert record["compute_cap"] == int(cap) and record["ref"] == "v0.9.2"
        assert record["commit"] == git(demo_upstream.path, "rev-parse", "v0.9.2^{commit}")
        assert set(record) >= {"rustc", "cargo", "nvcc", "sha256", "duration_s", "features", "version"}
        assert "--locked" in err
    assert "==> build ampere:" in err and "==> verify hopper:" in err

    # nothing changed: no action runs
    rc, results, err = run_doit(config, *STAGES)
    assert rc == 0 and ran(results) == set(), results

    # a touched artifact with the same content: still nothing (and no hashing)
    os.utime(layout.artifact("ampere"))
    rc, results, _ = run_doit(config, *STAGES)
    assert rc == 0 and ran(results) == set()

    # one flavour's settings changed: only that flavour rebuilds
    data["flavours"]["hopper"]["extra_features"] = ["cuda"]  # already in build.features: no change
    write_config(tmp_path, data)
    rc, results, err = run_doit(config, *STAGES)
    assert rc == 0 and ran(results) == set()

    data["build"]["features"] = ["cuda", "nccl"]
    data["flavours"]["ampere"]["extra_features"] = ["cudnn", "flash-attn"]  # ampere's set is unchanged
    write_config(tmp_path, data)
    rc, results, err = run_doit(config, *STAGES)
    assert rc == 0, err
    assert ran(results) == {"build:hopper", "verify:hopper"}
    assert info(layout.artifact("hopper"))["features"] == ["cuda", "nccl"]

    data["flavours"]["hopper"]["extra_features"] = ["flash-attn"]
    write_config(tmp_path, data)
    rc, results, err = run_doit(config, *STAGES)
    assert ran(results) == {"build:hopper", "verify:hopper"}
    assert info(layout.artifact("hopper"))["features"] == ["cuda", "flash-attn", "nccl"]

    # a deleted artifact is rebuilt, alone
    layout.artifact("ampere").unlink()
    rc, results, err = run_doit(config, *STAGES)
    assert rc == 0 and ran(results) == {"build:ampere", "verify:ampere"}

    # another ref: every flavour rebuilds
    rc, results, err = run_doit(config, *STAGES, env={"MRPM_REF": "v0.9.1"})
    assert rc == 0, err
    assert ran(results) == {"fetch", "build:ampere", "build:hopper", "verify:ampere", "verify:hopper"}
    assert info(layout.artifact("ampere"))["version"] == "0.9.1"


@pytest.mark.slow
def test_snapshot_builds_without_locked(tmp_path, demo_upstream, shared_cache):
    head = git(demo_upstream.path, "rev-parse", "master")
    config = write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, shared_cache, flavours=("ada",)))
    rc, results, err = run_doit(config, *STAGES, env={"MRPM_REF": head})
    assert rc == 0, err
    assert "cargo build --release --message-format=json-render-diagnostics -p mistralrs-cli" in err
    assert "--locked" not in err
    record = json.loads((tmp_path / "artifacts" / "mistralrs-ada.json").read_text())
    assert record["rpm_version"].startswith("0.9.2^") and record["commit"] == head


@pytest.mark.slow
def test_wrong_architecture_is_never_verified(tmp_path, demo_upstream, shared_cache):
    config = write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, shared_cache))
    layout = Layout.of(configmod.load(config))
    assert run_doit(config, *STAGES)[0] == 0
    # put the hopper binary where ampere's belongs, with a record that matches it
    shutil.copy2(layout.artifact("hopper"), layout.artifact("ampere"))
    record = json.loads(layout.build_record("ampere").read_text())
    record["sha256"] = json.loads(layout.build_record("hopper").read_text())["sha256"]
    layout.build_record("ampere").write_text(json.dumps(record))
    rc, results, err = run_doit(config, "verify")
    assert rc != 0 and results["verify:ampere"] == "fail"
    assert "sm_90" in err and "flavour ampere must contain only sm_86" in err
    assert not layout.verify_record("ampere").exists()


@pytest.mark.slow
def test_verify_refuses_non_elf_and_swapped_binaries(tmp_path, demo_upstream, shared_cache):
    config = write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, shared_cache, flavours=("ampere",)))
    layout = Layout.of(configmod.load(config))
    assert run_doit(config, *STAGES)[0] == 0
    original = layout.artifact("ampere").read_bytes()
    layout.artifact("ampere").write_bytes(b"#!/bin/sh\necho hi\n")
    from buildlib.pipeline.verify import VerifyError, verify_artifact

    cfg = configmod.load(config)
    with pytest.raises(VerifyError, match="not an ELF file"):
        verify_artifact(cfg, layout, cfg.flavour("ampere"))
    layout.artifact("ampere").write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(VerifyError, match="does not match its build record"):
        verify_artifact(cfg, layout, cfg.flavour("ampere"))


@pytest.mark.slow
def test_prebuilt_binary_is_adopted_without_cargo(tmp_path, demo_upstream, shared_cache):
    built = write_config(tmp_path / "a", demo_config(tmp_path / "a", demo_upstream.path, shared_cache, flavours=("ada",)))
    assert run_doit(built, *STAGES)[0] == 0
    config = write_config(tmp_path / "b", demo_config(tmp_path / "b", tmp_path / "nowhere", tmp_path / "b" / "cache",
                                                      flavours=("ada",)))
    (tmp_path / "b" / "artifacts").mkdir()
    shutil.copy2(tmp_path / "a" / "artifacts" / "mistralrs-ada", tmp_path / "b" / "artifacts" / "mistralrs-ada")
    rc, results, err = run_doit(config, *STAGES, env={"MRPM_PREBUILT_VERSION": "0.9.2"})
    assert rc == 0, err
    assert ran(results) == {"build:ada", "verify:ada"}
    assert "cargo build" not in err and "git" not in err.split("==>")[0]
    record = json.loads((tmp_path / "b" / "artifacts" / "mistralrs-ada.json").read_text())
    assert record["source"] == "prebuilt" and record["rpm_version"] == "0.9.2"


@pytest.mark.slow
def test_doctor_reports_a_table_and_problems(tmp_path, demo_upstream, shared_cache):
    config = write_config(tmp_path, demo_config(tmp_path, demo_upstream.path, shared_cache))
    rc, results, err = run_doit(config, "doctor")
    assert rc == 0, err
    bad = write_config(tmp_path / "bad", demo_config(tmp_path / "bad", demo_upstream.path, shared_cache,
                                                    build__min_rust="99.0", build__cuda_version="12.4", package__cuda_runtime="12.4-12.9",
                                                    build__min_free_gib=100000))
    rc, results, err = run_doit(bad, "doctor")
    assert rc != 0
    assert "rustc is older than build.min_rust = 99.0" in err
    assert "build.cuda_version expects 12.4" in err
    assert "build.min_free_gib = 100000" in err


def test_the_build_env_carries_the_bundled_cutlass_commit(tmp_path, monkeypatch):
    """MISTRALRS_CUTLASS_COMMIT is the commit of the [[bundled]] entry named
    "cutlass" (config.toml's, the one the SBOM names); without a commit, or
    without such an entry, upstream's own pin stands and the variable is unset.
    The commit is a build input: changing it rebuilds."""
    from buildlib.pipeline.cargo import build_env, build_inputs
    from buildlib.demo.driver import DEMO_BUNDLED

    def env_and_inputs(bundled):
        data = demo_config(tmp_path, tmp_path / "up", tmp_path / "cache", flavours=("ampere",), bundled=bundled)
        cfg = load(write_config(tmp_path, data), ref="v0.9.2", monkeypatch=monkeypatch)
        flavour = cfg.flavour("ampere")
        return build_env(cfg, Layout.of(cfg), flavour, 1700000000, tmp_path / "home"), build_inputs(cfg, flavour)

    # the project's config.toml: its CUTLASS entry's commit
    cutlass = next(c for c in project_config()["bundled"] if c["name"] == "cutlass")
    commit = cutlass["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    env, inputs = env_and_inputs(project_config()["bundled"])
    assert env["MISTRALRS_CUTLASS_COMMIT"] == commit
    assert inputs["cutlass_commit"] == commit
    other = "0" * 40
    assert env_and_inputs([*DEMO_BUNDLED, dict(cutlass, commit=other)])[0]["MISTRALRS_CUTLASS_COMMIT"] == other
    # another component's commit is not CUTLASS's
    env, inputs = env_and_inputs(DEMO_BUNDLED)
    assert any(c.get("commit") for c in DEMO_BUNDLED)
    assert "MISTRALRS_CUTLASS_COMMIT" not in env and "cutlass_commit" not in inputs
    env, _ = env_and_inputs([*DEMO_BUNDLED, {k: v for k, v in cutlass.items() if k != "commit"}])
    assert "MISTRALRS_CUTLASS_COMMIT" not in env
