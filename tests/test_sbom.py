"""The CycloneDX SBOM of one RPM, over the fixture workspace of test_bundled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from buildlib.config import parse_bundled
from buildlib.pipeline import bundled, sbom
from buildlib.run import UserError
from test_bundled import CONFIG, FIXTURE

PROJECT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SUBJECT = sbom.Subject(
    rpm_name="mistralrs-ada",
    rpm_version="0.3.0",
    rpm_release="1.fc43",
    arch="x86_64",
    upstream_url="https://example.invalid/demo.git",
    upstream_tag="v0.3.0",
    upstream_commit=COMMIT,
    flavour="ada",
    compute_cap=89,
    features=("extra",),
    toolchain={"rustc": "rustc 1.95.0 (59807616e 2026-03-21)", "cargo": "cargo 1.95.0", "nvcc": "Build cuda_13.0.r13.0"},
    binary_path="/usr/bin/mistralrs",
    binary_sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    source_date_epoch=1767225600,
)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    monkeypatch.setenv("CARGO_HOME", str(tmp_path / "cargo-home"))
    return ws


def make(ws, subject=SUBJECT, config=CONFIG):
    bundle = bundled.collect(ws, "demo-app", subject.features, parse_bundled(config))
    return bundle, sbom.make(bundle, subject)


def test_sbom_validates_and_lists_every_component(workspace, tmp_path):
    bundle, _ = make(workspace)
    text = sbom.write(tmp_path / "sbom.json", bundle, SUBJECT)
    assert (tmp_path / "sbom.json").read_text() == text
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    by_name = {c["name"]: c for c in doc["components"]}
    assert set(by_name) == {
        "/usr/bin/mistralrs", "demo-app", "demo-helper", "bsd-thing", "dual-lic", "slashy", "licfile-only",
        "prerel", "gitdep", "opt-extra", "cutlass", "flash-kernels",
    }
    # crates.io crates: purl, version, license and Cargo.lock's checksum
    lock = tomllib.loads((workspace / "Cargo.lock").read_text())
    registry = {p["name"]: p for p in lock["package"] if p.get("source", "").startswith("registry+")}
    for name in ("bsd-thing", "dual-lic", "slashy", "licfile-only", "prerel", "opt-extra"):
        comp = by_name[name]
        assert comp["purl"] == f"pkg:cargo/{name}@{registry[name]['version']}"
        assert comp["version"] == registry[name]["version"]
        assert comp["hashes"] == [{"alg": "SHA-256", "content": registry[name]["checksum"]}]
    assert by_name["prerel"]["purl"] == "pkg:cargo/prerel@1.0.0-beta.2"
    assert by_name["dual-lic"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert by_name["bsd-thing"]["licenses"] == [{"license": {"id": "BSD-3-Clause"}}]
    assert by_name["licfile-only"]["licenses"] == [{"license": {"id": "BSL-1.0"}}]
    # the git crate: its repository and full commit
    git = by_name["gitdep"]
    assert git["purl"] == (
        "pkg:cargo/gitdep@0.9.0?vcs_url=git%2Bhttps://example.invalid/gitdep.git%405e1f0c2a9b7d4e3f8a6c1b2d3e4f5a6b7c8d9e0f")
    assert "hashes" not in git
    assert git["licenses"] == [{"expression": "Apache-2.0 WITH LLVM-exception"}]
    # workspace members: from upstream's tree at its commit
    assert by_name["demo-app"]["purl"] == f"pkg:cargo/demo-app@0.3.0?vcs_url=git%2Bhttps://example.invalid/demo.git%40{COMMIT}"
    # declared components
    assert by_name["cutlass"]["purl"] == "pkg:github/nvidia/cutlass@ad7b2f5e84fcfa124cb02b91d5bd26d238c0459e"
    assert by_name["cutlass"]["version"] == "3.9.2"
    assert by_name["flash-kernels"]["licenses"] == [{"expression": "BSD-3-Clause AND Apache-2.0"}]
    assert by_name["flash-kernels"]["purl"] == (
        "pkg:generic/flash-kernels@0%5E20250101git1a2b3c4?download_url=https://example.org/flash-kernels")
    # the binary, and the package it is in
    assert by_name["/usr/bin/mistralrs"]["hashes"] == [{"alg": "SHA-256", "content": SUBJECT.binary_sha256}]
    meta = doc["metadata"]
    assert meta["timestamp"] == "2026-01-01T00:00:00+00:00"
    assert meta["component"]["purl"] == "pkg:rpm/mistralrs-rpm/mistralrs-ada@0.3.0-1.fc43?arch=x86_64"
    assert meta["component"]["licenses"] == [{"expression": bundle.license}]
    props = {p["name"]: p["value"] for p in meta["component"]["properties"]}
    assert props == {
        "mistralrs-rpm:upstream:url": "https://example.invalid/demo.git",
        "mistralrs-rpm:upstream:tag": "v0.3.0",
        "mistralrs-rpm:upstream:commit": COMMIT,
        "mistralrs-rpm:flavour": "ada",
        "mistralrs-rpm:cuda:compute_cap": "89",
        "mistralrs-rpm:cargo:package": "demo-app",
        "mistralrs-rpm:cargo:features": "extra",
        "mistralrs-rpm:binary:path": "/usr/bin/mistralrs",
        "mistralrs-rpm:binary:sha256": SUBJECT.binary_sha256,
        "mistralrs-rpm:license": bundle.license,
        "mistralrs-rpm:toolchain:rustc": "rustc 1.95.0 (59807616e 2026-03-21)",
        "mistralrs-rpm:toolchain:cargo": "cargo 1.95.0",
        "mistralrs-rpm:toolchain:nvcc": "Build cuda_13.0.r13.0",
    }


def test_dependency_graph_is_the_linked_graph(workspace):
    _, text = make(workspace)
    deps = {d["ref"]: set(d.get("dependsOn", [])) for d in json.loads(text)["dependencies"]}
    assert deps["crate:demo-helper@0.3.0"] == {"crate:bsd-thing@2.0.0", "crate:dual-lic@1.2.0"}
    assert deps["file:/usr/bin/mistralrs"] == {"crate:demo-app@0.3.0", "bundled:cutlass@3.9.2", "bundled:flash-kernels@0^20250101git1a2b3c4"}
    assert "crate:derive-pm@1.0.0" not in text and "crate:builddep@0.5.0" not in text


SCRIPT = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/tests"]
from buildlib.config import parse_bundled
from buildlib.pipeline import bundled, sbom
from test_sbom import SUBJECT, CONFIG
bundle = bundled.collect(Path(sys.argv[1]), "demo-app", SUBJECT.features, parse_bundled(CONFIG))
sys.stdout.write(sbom.make(bundle, SUBJECT))
"""


@pytest.mark.slow
def test_identical_across_runs_checkouts_and_hash_seeds(workspace, tmp_path):
    other = tmp_path / "another" / "checkout"
    shutil.copytree(workspace, other)
    outputs = []
    for ws, seed in ((workspace, "1"), (other, "2")):
        env = dict(os.environ, PYTHONHASHSEED=seed, CARGO_HOME=str(tmp_path / f"cargo-home-{seed}"))
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ws), str(PROJECT)], env=env, check=True, capture_output=True, text=True)
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    sbom.validate(outputs[0])
    assert str(tmp_path) not in outputs[0]
    # and without a build time there is no timestamp at all
    _, text = make(workspace, replace(SUBJECT, source_date_epoch=None))
    assert "timestamp" not in json.loads(text)["metadata"]
    assert text == make(workspace, replace(SUBJECT, source_date_epoch=None))[1]


def test_serial_number_follows_the_content(workspace):
    _, a = make(workspace)
    _, b = make(workspace, replace(SUBJECT, binary_sha256="0" * 64))
    serial_a, serial_b = json.loads(a)["serialNumber"], json.loads(b)["serialNumber"]
    assert serial_a.startswith("urn:uuid:") and serial_a != serial_b


def test_validate_rejects_a_broken_document(workspace):
    _, text = make(workspace)
    doc = json.loads(text)
    doc["components"][1]["type"] = "crate"
    with pytest.raises(UserError) as err:
        sbom.validate(json.dumps(doc))
    assert str(err.value).startswith("SBOM does not match the CycloneDX 1.6 schema at components/1/type: 'crate' is not one of")
    assert "\n" not in str(err.value)


def test_bad_binary_digest_is_refused(workspace):
    with pytest.raises(UserError, match="binary SHA-256 'xyz' is not 64 lowercase hex digits"):
        make(workspace, replace(SUBJECT, binary_sha256="xyz"))


@pytest.mark.parametrize("url, shown", [
    ("https://ghp_secret123@github.com/EricLBuehler/mistral.rs.git", "https://github.com/EricLBuehler/mistral.rs.git"),
    ("https://user:pass@git.example.org:8443/m.git", "https://git.example.org:8443/m.git"),
    ("https://github.com/EricLBuehler/mistral.rs", "https://github.com/EricLBuehler/mistral.rs"),
    ("ssh://git:pw@host/m.git", "ssh://git@host/m.git"),
    ("git@github.com:EricLBuehler/mistral.rs.git", "git@github.com:EricLBuehler/mistral.rs.git"),
    ("/srv/mirrors/mistral.rs", "/srv/mirrors/mistral.rs"),
])
def test_the_sboms_repository_carries_no_credentials(url, shown):
    assert sbom.without_credentials(url) == shown
