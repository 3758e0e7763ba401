"""The licenses stage and what it puts into the package, with real cargo,
rpmbuild and rpmlint: on the demo upstream through doit (as users run it),
and the stage's own checks on the small vendored workspace of test_bundled.

What the demo bundles is written out here by hand from
examples/demo-upstream (its workspace and vendor/*/Cargo.toml); when the demo
upstream gains third-party crates, DEMO_VENDORED, DEMO_LICENSE_DEPENDENCIES
and DEMO_LICENSE change with it (the tests compare whole sets, so a crate
nobody listed fails them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from buildlib import config as configmod
from buildlib.demo.driver import DEMO_BUNDLED
from buildlib.layout import DEMO_UPSTREAM_SOURCES, Layout, sbom_beside
from buildlib.pipeline import sbom
from buildlib.pipeline.licenses import collect_licenses, tar_bytes
from buildlib.pipeline.records import BundleRecord
from buildlib.run import UserError
from pipeline import demo_config, project_config, ran, run_doit, write_config
from tiny_upstream import TinyUpstream
from test_bundled import CONFIG as FIXTURE_CONFIG, FIXTURE
from test_package import FEDORA_PROFILE, cpio_members, rpmlint, rpmq

# --- what the demo bundles, derived by hand -------------------------------------------

DEMO_VERSION = "0.9.2"
# The workspace members (license.workspace = "MIT"): in LICENSE.dependencies
# and the SBOM, not in cargo-vendor.txt or the provides (they are upstream's own).
DEMO_MEMBERS = {"mistralrs-cli": "MIT", "mistralrs-core": "MIT"}
# The third-party crates the binary links (examples/demo-upstream/vendor/*/Cargo.toml):
# mistralrs-core depends on demo-escape, demo-banner and (git) demo-tensor,
# which depends on demo-crc; no feature gates any of them.
# name -> (version, SPDX license as LICENSE.dependencies writes it, cargo-vendor.txt line,
#          provide's version, license files shipped in the crate)
DEMO_TENSOR_GIT = "https://git.example.invalid/demo/demo-tensor.git?rev=0247a965a7aca31e391c96ae6e8056018a394cd3"
DEMO_VENDORED: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    "demo-banner": ("2.0.0", "ISC", "demo-banner v2.0.0", "2.0.0", ("LICENSE",)),  # license-file only: [[crate_license]]
    "demo-crc": ("0.3.1", "BSD-3-Clause", "demo-crc v0.3.1", "0.3.1", ("LICENSE",)),
    "demo-escape": ("1.2.0", "Apache-2.0 OR MIT", "demo-escape v1.2.0", "1.2.0", ("LICENSE-MIT",)),
    "demo-tensor": ("0.4.0", "MIT OR Apache-2.0", f"demo-tensor v0.4.0 ({DEMO_TENSOR_GIT}#0247a965)",
                    "0.4.0+git0247a965", ("LICENSE-MIT",)),
}
# Build-only (mistralrs-cli's build.rs) and dev-only (mistralrs-core's tests): never linked.
DEMO_NOT_LINKED = {"demo-buildinfo": "Zlib", "demo-testkit": "MPL-2.0"}
# The AND of: Apache-2.0 (demo-quant-kernels), Apache-2.0 OR MIT (demo-escape; demo-tensor's
# MIT OR Apache-2.0 is the same choice, kept once as first seen in sorted order),
# BSD-3-Clause (demo-crc, demo-kernel-lib), ISC (demo-banner), MIT (the members);
# terms sorted without their parentheses.
DEMO_LICENSE = "Apache-2.0 AND (Apache-2.0 OR MIT) AND BSD-3-Clause AND ISC AND MIT"
DEMO_LICENSE_DEPENDENCIES = (
    "Apache-2.0 OR MIT: demo-escape v1.2.0\n"
    "Apache-2.0: demo-quant-kernels v0 (https://example.invalid/demo-quant-kernels)\n"
    "BSD-3-Clause: demo-crc v0.3.1\n"
    "BSD-3-Clause: demo-kernel-lib v1.2.0^20260105git0123abc"
    " (https://example.invalid/demo-kernel-lib#0123abc4567890abcdef0123456789abcdef0123)\n"
    "ISC: demo-banner v2.0.0\n"
    f"MIT OR Apache-2.0: demo-tensor v0.4.0 ({DEMO_TENSOR_GIT}#0247a965)\n"
    "MIT: mistralrs-cli v0.9.2\n"
    "MIT: mistralrs-core v0.9.2\n"
)


def git_show(repo: Path, spec: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), "show", spec], check=True, capture_output=True).stdout


def demo_upstream_path(work: Path) -> Path:
    return Path(configmod.load(work / "config.toml").upstream.url)


def demo_rpm(directory: Path, flavour: str = "ampere") -> Path:
    (rpm,) = (directory / "dist").glob(f"mistralrs-{flavour}-*.rpm")
    return rpm


@pytest.fixture(scope="module")
def demo_built(tmp_path_factory, demo_upstream, shared_cache):
    """The demo's ampere RPM, built through doit (`doit rpm:ampere` pulls in
    fetch, build, verify, licenses and spec)."""
    work = tmp_path_factory.mktemp("licenses-demo")
    config = write_config(work, demo_config(work, demo_upstream.path, shared_cache, flavours=("ampere",)))
    rc, results, err = run_doit(config, "rpm:ampere")
    assert rc == 0, err
    assert {"licenses:ampere", "spec:ampere", "rpm:ampere"} <= ran(results)
    return work, config


@pytest.mark.slow
def test_demo_license_tag_is_the_hand_derived_expression(demo_built):
    work, _ = demo_built
    assert rpmq(demo_rpm(work), "--qf", "%{LICENSE}") == DEMO_LICENSE


@pytest.mark.slow
def test_every_demo_crate_is_provided_listed_and_in_the_sbom(demo_built):
    work, _ = demo_built
    rpm = demo_rpm(work)
    provides = sorted(p for p in rpmq(rpm, "--provides").splitlines() if p.startswith("bundled("))
    components = {c["name"]: c for c in DEMO_BUNDLED}
    assert provides == sorted(
        [f"bundled(crate({name})) = {e[3]}" for name, e in DEMO_VENDORED.items()]
        + [f"bundled({c['name']}) = {c['version']}" for c in DEMO_BUNDLED])

    members = cpio_members(rpm)
    licenses = "/usr/share/licenses/mistralrs-ampere"
    vendor = members[f"{licenses}/cargo-vendor.txt"].decode()
    assert vendor.splitlines() == sorted(e[2] for e in DEMO_VENDORED.values())
    dependencies = members[f"{licenses}/LICENSE.dependencies"].decode()
    assert dependencies == DEMO_LICENSE_DEPENDENCIES
    # upstream's own license text: its file at the tag, not one of this project's
    assert members[f"{licenses}/LICENSE"] == git_show(demo_upstream_path(work), "v0.9.2:LICENSE")
    for name, (_, license, line, provided, files) in DEMO_VENDORED.items():
        assert f"{license}: {line}\n" in dependencies
        for file in files:  # crates/<name>-<version>[+git<commit8>]/: the provide's version here
            packaged = members[f"{licenses}/crates/{name}-{provided}/{file}"]
            assert packaged == (DEMO_UPSTREAM_SOURCES / "vendor" / name / file).read_bytes()

    doc = json.loads(members["/usr/share/mistralrs/sbom.cdx.json"])
    in_sbom = {c["name"]: c for c in doc["components"]}
    assert set(in_sbom) == {"/usr/bin/mistralrs", *DEMO_MEMBERS, *DEMO_VENDORED, *components}
    for name, (version, license, *_) in DEMO_VENDORED.items():
        assert in_sbom[name]["version"] == version and in_sbom[name]["purl"].startswith(f"pkg:cargo/{name}@{version}")
    for name in DEMO_MEMBERS:
        assert in_sbom[name]["version"] == DEMO_VERSION
    assert doc["metadata"]["component"]["licenses"] == [{"expression": DEMO_LICENSE}]

    # build-only and dev-only crates are nowhere: not provided, listed, licensed or in the SBOM
    text = "\n".join([*provides, vendor, dependencies, rpmq(rpm, "--qf", "%{LICENSE}"), json.dumps(doc)])
    for name, license in DEMO_NOT_LINKED.items():
        assert name not in text and license not in text, name
        assert not any(m.startswith(f"{licenses}/crates/{name}") for m in members)


@pytest.mark.slow
def test_demo_sbom_validates_names_the_build_and_lies_beside_the_rpm(demo_built):
    work, _ = demo_built
    rpm = demo_rpm(work)
    text = cpio_members(rpm)["/usr/share/mistralrs/sbom.cdx.json"].decode()
    sbom.validate(text)  # the CycloneDX 1.6 JSON schema, strict
    assert (rpm.with_name(sbom_beside(rpm.name))).read_text() == text
    build = json.loads((work / "artifacts" / "mistralrs-ampere.json").read_text())
    props = {p["name"]: p["value"] for p in json.loads(text)["metadata"]["component"]["properties"]}
    assert props["mistralrs-rpm:upstream:tag"] == "v0.9.2" and props["mistralrs-rpm:upstream:commit"] == build["commit"]
    assert props["mistralrs-rpm:binary:sha256"] == build["sha256"]
    # the repository actually fetched (upstream.url), not the project's home page (package.url)
    assert props["mistralrs-rpm:upstream:url"] == str(demo_upstream_path(work))
    assert props["mistralrs-rpm:cuda:compute_cap"] == "86"
    assert props["mistralrs-rpm:toolchain:rustc"] == build["rustc"] and props["mistralrs-rpm:toolchain:nvcc"] == build["nvcc"]
    assert str(work) not in text  # no path of this machine


@pytest.mark.slow
def test_demo_sbom_is_identical_across_two_runs(demo_built, tmp_path, demo_upstream, shared_cache):
    work, _ = demo_built
    other = tmp_path / "second-checkout"
    config = write_config(other, demo_config(other, demo_upstream.path, shared_cache, flavours=("ampere",)))
    rc, _, err = run_doit(config, "rpm:ampere")
    assert rc == 0, err
    first, second = demo_rpm(work), demo_rpm(other)
    assert first.name == second.name
    assert second.with_name(sbom_beside(second.name)).read_bytes() == first.with_name(sbom_beside(first.name)).read_bytes()


@pytest.mark.slow
def test_rpmlint_fedora_accepts_the_demo_license(demo_built, tmp_path):
    work, _ = demo_built
    if not (FEDORA_PROFILE / "fedora.toml").is_file():
        pytest.fail(f"no Fedora rpmlint profile at {FEDORA_PROFILE}: run scripts/bootstrap")
    from buildlib import layout as paths

    merged = tmp_path / "rpmlint"
    merged.mkdir()
    for config in [*FEDORA_PROFILE.glob("*.toml"), paths.RPMLINT_LICENSES, paths.RPMLINT_FILTERS]:
        shutil.copy(config, merged / f"zz-{config.name}")
    result = rpmlint([demo_rpm(work)], merged)
    assert "licenses.toml" in result.stdout  # the license list was loaded
    assert "invalid-license" not in result.stdout and "no-license" not in result.stdout, result.stdout


@pytest.mark.slow
def test_bundled_config_change_redoes_licenses_and_package_not_the_build(demo_built):
    work, config = demo_built
    rc, results, err = run_doit(config, "rpm:ampere")
    assert rc == 0 and ran(results) == set(), (results, err)
    data = demo_config(work, Path(configmod.load(config).upstream.url), configmod.load(config).paths.cache,
                       flavours=("ampere",))
    data["bundled"] = [*DEMO_BUNDLED, {"name": "demo-extra", "version": "3", "license": "Zlib",
                                       "url": "https://example.invalid/demo-extra",
                                       "evidence": {"path": "mistralrs-cli/Cargo.toml"}}]
    write_config(work, data)
    rc, results, err = run_doit(config, "rpm:ampere")
    assert rc == 0, err
    assert ran(results) == {"licenses:ampere", "spec:ampere", "rpm:ampere"}, results
    rpms = sorted((work / "dist").glob("*.rpm"))
    newest = max(rpms, key=lambda p: p.stat().st_mtime)
    assert rpmq(newest, "--qf", "%{LICENSE}") == f"{DEMO_LICENSE} AND Zlib"
    assert "bundled(demo-extra) = 3" in rpmq(newest, "--provides")
    # a changed spec, but nothing published: the channel decides the Release, still 1
    assert newest.name == "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"


# --- the stage on the fixture workspace -------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fixture_project(root: Path, features=("extra",), commit=COMMIT) -> tuple:
    """A project whose upstream package is the fixture's demo-app, with a
    source record and a build record as fetch and build write them, the
    source tree a copy of the fixture."""
    data = demo_config(root, root / "no-upstream", root / "cache", flavours=("ampere",))
    data["upstream"]["programs"] = {"0.1.0": {"package": "demo-app", "binary": "mistralrs"}}
    data["bundled"] = FIXTURE_CONFIG["bundled"]
    data["crate_license"] = FIXTURE_CONFIG["crate_license"]
    cfg = configmod.load(write_config(root, data))
    layout = Layout.of(cfg)
    shutil.copytree(FIXTURE, layout.source_tree(COMMIT))
    source = {"ref": "v0.3.0", "commit": COMMIT, "version": "0.3.0", "rpm_version": "0.3.0", "is_snapshot": False,
              "commit_date": "2026-01-01T00:00:00+00:00", "changelog": [], "tree": str(layout.source_tree(COMMIT))}
    layout.source_record.parent.mkdir(parents=True, exist_ok=True)
    layout.source_record.write_text(json.dumps(source))
    build = {"source": "cargo", "ref": "v0.3.0", "commit": commit, "version": "0.3.0", "rpm_version": "0.3.0",
             "flavour": "ampere", "compute_cap": 86, "features": list(features), "package": "demo-app", "binary_name": "mistralrs",
             "sha256": "0" * 64, "size": 1, "built_at": "2026-01-02T00:00:00Z", "changelog": []}
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    layout.build_record("ampere").write_text(json.dumps(build))
    return cfg, layout


def test_stage_writes_the_record_and_the_license_archive(tmp_path):
    cfg, layout = fixture_project(tmp_path)
    collect_licenses(cfg, layout, cfg.flavour("ampere"))
    record = BundleRecord.load(layout, "ampere")
    assert record.commit == COMMIT and record.features == ("extra",)
    assert record.source_date_epoch == 1767225600
    assert record.license == ("Apache-2.0 AND (MIT OR Apache-2.0) AND Apache-2.0 WITH LLVM-exception"
                              " AND BSD-3-Clause AND BSL-1.0 AND ISC AND MIT")
    with tarfile.open(layout.license_archive("ampere")) as tar:
        names = tar.getnames()
        assert tar.extractfile("cargo-vendor.txt").read().decode() == record.bundle.vendor_manifest()
        assert {m.mtime for m in tar.getmembers()} == {1767225600}
        assert {(m.uid, m.gid) for m in tar.getmembers()} == {(0, 0)}
    assert "LICENSE.dependencies" in names and "crates/licfile-only-0.1.0/LICENSE.txt" in names
    # the same inputs give the same archive, whatever the files' own times
    first = layout.license_archive("ampere").read_bytes()
    for path in layout.source_tree(COMMIT).rglob("*"):
        path.touch()
    collect_licenses(cfg, layout, cfg.flavour("ampere"))
    assert layout.license_archive("ampere").read_bytes() == first


def test_stage_reads_the_features_that_were_built(tmp_path):
    cfg, layout = fixture_project(tmp_path, features=())
    collect_licenses(cfg, layout, cfg.flavour("ampere"))
    assert "opt-extra" not in BundleRecord.load(layout, "ampere").bundle.vendor_manifest()


def test_stage_refuses_a_source_the_binary_was_not_built_from(tmp_path):
    cfg, layout = fixture_project(tmp_path, commit="89abcdef0123456789abcdef0123456789abcdef")
    with pytest.raises(UserError, match=r"but ampere's binary was built from 89abcdef0123: fetch that ref"):
        collect_licenses(cfg, layout, cfg.flavour("ampere"))
    assert not layout.bundle_record("ampere").exists()


def test_prebuilt_binary_takes_its_licenses_from_the_source_of_its_version(tmp_path):
    cfg, layout = fixture_project(tmp_path, commit=None)
    build = json.loads(layout.build_record("ampere").read_text())
    layout.build_record("ampere").write_text(json.dumps({**build, "source": "prebuilt"}))
    source = layout.source_record.read_text()
    layout.source_record.unlink()
    with pytest.raises(UserError, match=r"prebuilt ampere binary come from upstream's source of version 0\.3\.0:"
                                        r" fetch it first \(MRPM_REF=v0\.3\.0 doit fetch"):
        collect_licenses(cfg, layout, cfg.flavour("ampere"))
    layout.source_record.write_text(source)  # the tag fetched: same version, its commit
    collect_licenses(cfg, layout, cfg.flavour("ampere"))
    assert BundleRecord.load(layout, "ampere").commit == COMMIT
    # the source of another tag (a record as fetch writes it: Source.load checks that)
    other = {**json.loads(source), "ref": "v0.3.1", "version": "0.3.1", "rpm_version": "0.3.1"}
    layout.source_record.write_text(json.dumps(other))
    with pytest.raises(UserError, match="but ampere's binary was built from v0.3.0"):
        collect_licenses(cfg, layout, cfg.flavour("ampere"))


def test_license_archive_does_not_depend_on_times_or_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, names in ((a, ["x/LICENSE", "LICENSE.dependencies"]), (b, ["LICENSE.dependencies", "x/LICENSE"])):
        for name in names:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(name)
    subprocess.run(["touch", "-d", "2001-01-01", str(b / "x" / "LICENSE")], check=True)
    assert tar_bytes(a, 1767225600) == tar_bytes(b, 1767225600)
    assert tar_bytes(a, 1767225600) != tar_bytes(a, 1767225601)


# --- a hostile upstream, through the whole pipeline (issue 16) ---------------------------

SECRET = "host-secret-c0ffee-5e1f"


@pytest.mark.slow
def test_hostile_license_files_never_reach_a_package(tmp_path):
    """A tag whose packaged crate names a build-host file as its license file,
    by ../, by an absolute path and through a symlinked directory, is refused
    by the licenses stage in one line; the clean tag before it is packaged
    with upstream's own LICENSE at that tag and none of the real config's
    [[bundled]] components, whose evidence (CUTLASS's build script, ...) this
    upstream does not have."""
    secret = tmp_path / "host" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(f"{SECRET}\n")
    up = TinyUpstream(tmp_path / "up")
    up.commit("0.9.2")
    up.tag("v0.9.2")
    work = tmp_path / "work"
    data = demo_config(work, up.path, tmp_path / "cache", flavours=("ampere",), build__features=[])
    data["bundled"], data["crate_license"] = project_config()["bundled"], []
    config = write_config(work, data)

    rc, results, err = run_doit(config, "rpm:ampere", env={"MRPM_REF": "v0.9.2"})
    assert rc == 0, err
    (rpm,) = (work / "dist").glob("mistralrs-ampere-0.9.2-*.rpm")
    assert not [p for p in rpmq(rpm, "--provides").splitlines() if p.startswith("bundled(")]
    assert rpmq(rpm, "--qf", "%{LICENSE}") == "MIT"
    assert "left out bundled component cutlass: upstream's tree has no mistralrs-flash-attn/build.rs" in err
    members = cpio_members(rpm)
    assert members["/usr/share/licenses/mistralrs-ampere/LICENSE"] == git_show(up.path, "v0.9.2:LICENSE")
    sbom_doc = json.loads(members["/usr/share/mistralrs/sbom.cdx.json"])
    assert not {"cutlass", "flash-attention"} & {c["name"] for c in sbom_doc["components"]}

    escapes = {
        "0.9.3": ({"license-file": "../" * 40 + str(secret).lstrip("/")}, None),
        "0.9.4": ({"license-file": str(secret)}, None),
        "0.9.5": ({"license-file": "legal/secret.txt"}, {"mistralrs-cli/legal": str(secret.parent)}),
    }
    for version, (keys, links) in escapes.items():
        up.commit(version, package_keys=keys, symlinks=links)
        up.tag(f"v{version}")
        rc, results, err = run_doit(config, "rpm:ampere", env={"MRPM_REF": f"v{version}"})
        assert rc != 0 and results.get("licenses:ampere") == "fail", (version, results)
        line = next(x for x in err.splitlines() if f"crate mistralrs-cli v{version}: " in x)
        assert keys["license-file"] in line and "outside" in line, line
    # one RPM, the clean one; nothing of the host file in any package's payload
    assert [p.name for p in (work / "dist").glob("*.rpm")] == [rpm.name]
    for built in (work / "dist").glob("*.rpm"):
        assert not any(SECRET.encode() in data for data in cpio_members(built).values())
