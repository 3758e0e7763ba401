"""Packaging: spec rendering, Release numbering, rpmbuild, and the RPMs read
back with rpm's own tools.

Artifacts are fabricated: a tiny C program linked against stand-in CUDA
libraries (so that rpm's automatic soname requirements can be checked), with
build and verify records as the build and verify stages write them.  Payload
compression is fast zstd (w3T0) so that the whole module takes seconds.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from buildlib import layout as paths
from buildlib.config import BundledConfig, load, parse_bundled
from buildlib.layout import Layout
from buildlib.refs import rpm_version_of_tag, snapshot_version
from buildlib.pipeline.rpmbuild import build_rpm, compat_blocks, host_macro_args
from buildlib.run import UserError
from buildlib.pipeline.records import BuildRecord
from buildlib.pipeline.spec import render_spec
from buildlib.pipeline.bundled import Bundle, cargo_metadata, cargo_tree, read_lock, resolve
from buildlib.layout import cargo_home
from buildlib.pipeline.licenses import write_bundle

from pipeline import CUDA_SONAMES, project_config, vercmp, write_config
from test_bundled import CONFIG as BUNDLED_FIXTURE_CONFIG, FIXTURE as BUNDLED_FIXTURE

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RC_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
SNAPSHOT_COMMIT = "abc1234def0123456789abcdef0123456789abcd"
# Where scripts/bootstrap puts configs/Fedora of the rpmlint 2.10.0 sdist.
FEDORA_PROFILE = Path(os.environ.get("MRPM_RPMLINT_FEDORA", paths.PROJECT / ".venv" / "share" / "rpmlint-fedora"))


# --- fabricated artifacts ------------------------------------------------------------


def compile_binary(libs: Path, target: Path, banner: str) -> None:
    """A small ELF that needs every CUDA soname and libcuda.so.1 (DT_NEEDED)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source = target.with_name(f".{target.name}.c")
    source.write_text(textwrap.dedent(f"""\
        #include <stdio.h>
        #include <string.h>
        int main(int argc, char **argv) {{
            if (argc > 1 && strcmp(argv[1], "--version") == 0) {{ puts("{banner}"); return 0; }}
            puts("{banner} (test stand-in)");
            return 0;
        }}
        """))
    subprocess.run(["gcc", "-O1", "-o", target, source, "-Wl,--no-as-needed", f"-L{libs}",
                    *[f"-l:{soname}" for soname in (*CUDA_SONAMES, "libcuda.so.1")]], check=True)
    source.unlink()


def make_project(root: Path, payload: str = "w3T0.zstdio", **package) -> tuple:
    """A config.toml (the project's own, trimmed) with every path under root."""
    data = project_config()
    data["flavours"] = {k: v for k, v in data["flavours"].items() if k in ("ampere", "ada", "hopper")}
    data["package"]["payload"] = payload
    data["package"].update(package)
    data["publish"]["target"] = str(root / "repo")
    data["paths"] = {"cache": "cache", "build": "build", "artifacts": "artifacts", "dist": "dist"}
    cfg = load(write_config(root, data))
    return cfg, Layout.of(cfg)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


OLDER = (("v0.9.1", "2026-10-02", RC_COMMIT),)


def fabricate(layout: Layout, libs: Path, flavour: str, compute_cap: int, *, tag: str = "v0.9.2",
              commit: str | None = COMMIT, source: str = "cargo", banner: str | None = None,
              day: str = "2026-11-20", older: tuple = OLDER, snapshot: int | None = None) -> None:
    """An artifact of flavour with its build record and verify record; the
    changelog has the tag (dated day) and then the older releases.  With
    snapshot=n: a snapshot of commit, n commits after tag, as upstream.py
    records one."""
    artifact = layout.artifact(flavour)
    version = tag[1:]
    compile_binary(libs, artifact, banner or f"mistralrs {version}")
    rpm_version = rpm_version_of_tag(tag)
    changelog = [{"rpm_version": rpm_version_of_tag(t), "tag": t, "date": d, "commit": c}
                 for t, d, c in ((tag, day, commit), *older)]
    if snapshot is not None:
        from datetime import date

        rpm_version = snapshot_version(tag, date.fromisoformat(day), snapshot, commit)
        changelog = [{"rpm_version": rpm_version, "tag": None, "date": day, "commit": commit},
                     *[{"rpm_version": rpm_version_of_tag(t), "tag": t, "date": d, "commit": c} for t, d, c in older]]
    record = {
        "source": source, "ref": commit if snapshot is not None else tag, "commit": commit, "version": version,
        "rpm_version": rpm_version, "flavour": flavour, "compute_cap": compute_cap,
        "features": ["cuda", "cudnn", "flash-attn", "nccl"], "package": "mistralrs-cli", "binary_name": "mistralrs",
        "rustc": "rustc 1.94.0", "cargo": "cargo 1.94.0", "nvcc": "13.0",
        "sha256": sha256(artifact), "size": artifact.stat().st_size, "duration_s": 1.0,
        "built_at": "2026-11-25T17:00:00Z",
        "changelog": changelog,
    }
    layout.build_record(flavour).write_text(json.dumps(record, indent=2))
    layout.verify_record(flavour).write_text(json.dumps({"sha256": record["sha256"], "ok": True}))
    epoch = int(datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp())
    write_bundle(layout, flavour, fixture_bundle(), commit=commit or RC_COMMIT, version=version,
                 source_date_epoch=epoch, features=tuple(record["features"]))


@functools.cache
def fixture_bundle() -> Bundle:
    """The licenses stage's view of the small vendored workspace of
    test_bundled (real cargo), with the project's own [[bundled]] components:
    what a fabricated artifact bundles."""
    components = load(paths.DEFAULT_CONFIG).bundled.components
    config = BundledConfig(components=components, crate_licenses=parse_bundled(BUNDLED_FIXTURE_CONFIG).crate_licenses)
    # resolve, not collect: the fixture holds none of the real components'
    # evidence (collect's check of it is test_bundled's), and the fabricated
    # artifacts claim all of them.
    metadata = cargo_metadata(BUNDLED_FIXTURE, "demo-app", ("extra",))
    tree = cargo_tree(BUNDLED_FIXTURE, "demo-app", ("extra",))
    return resolve(metadata, tree, read_lock(BUNDLED_FIXTURE), "demo-app", config, workspace=BUNDLED_FIXTURE,
                   cargo_home=cargo_home())


@pytest.fixture(scope="module")
def pkg_built(tmp_path_factory, pkg_libs):
    """RPMs of three flavours: ampere from a release tag built with cargo,
    ada a prebuilt release candidate without a recorded commit, hopper a
    snapshot of the default branch after the release."""
    root = tmp_path_factory.mktemp("project")
    cfg, layout = make_project(root)
    fabricate(layout, pkg_libs, "ampere", 86)
    fabricate(layout, pkg_libs, "ada", 89, tag="v0.9.3-rc1", commit=None, source="prebuilt")
    fabricate(layout, pkg_libs, "hopper", 90, commit=SNAPSHOT_COMMIT, day="2026-11-24", snapshot=3,
              older=(("v0.9.2", "2026-11-20", COMMIT), *OLDER))
    rpms = {}
    for flavour in ("ampere", "ada", "hopper"):
        render_spec(cfg, layout, cfg.flavour(flavour))
        rpms[flavour] = build_rpm(cfg, layout, cfg.flavour(flavour))
    return cfg, layout, rpms


def rpmq(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, str(rpm)], check=True, capture_output=True, text=True).stdout


def cpio_members(rpm: Path) -> dict[str, bytes]:
    """The payload of an RPM through rpm2cpio, read as cpio "newc"."""
    data = subprocess.run(["rpm2cpio", str(rpm)], check=True, capture_output=True).stdout
    members, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701", "rpm2cpio output is not cpio newc"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return members
        members[name.removeprefix(".")] = data[pos:pos + size]
        pos = (pos + size + 3) & ~3


def as_root() -> list[str]:
    """rpm --root must set file owners: root, or root in a user namespace."""
    return [] if os.geteuid() == 0 else ["unshare", "--map-root-user"]


def install_into(root: Path, *rpms: Path) -> None:
    # --nodeps: the scratch root has no base system (no glibc, no /bin/sh,
    # no CUDA), so no requirement could be met; --noscripts: there is no
    # shell in it to run them (the scriptlets are checked as text).
    subprocess.run([*as_root(), "rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts",
                    "-i", *map(str, rpms)], check=True, capture_output=True)


# --- version mapping and ordering -----------------------------------------------


def test_version_mapping_and_order():
    from datetime import date

    snapshot = snapshot_version("v0.9.2", date(2026, 11, 24), 3, "abc1234" + "0" * 33)
    chain = [rpm_version_of_tag("v0.9.2-rc1"), rpm_version_of_tag("v0.9.2"), snapshot,
             rpm_version_of_tag("v0.9.3-rc1"), rpm_version_of_tag("v0.9.3")]
    assert chain == ["0.9.2~rc1", "0.9.2", "0.9.2^20261124.3gitabc1234", "0.9.3~rc1", "0.9.3"]
    for lower, higher in zip(chain, chain[1:]):
        assert vercmp(lower, higher) == -1, (lower, higher)
        assert vercmp(higher, lower) == 1, (lower, higher)
    # Two snapshots of one day: the commit count orders them, whatever the sha.
    day = date(2026, 11, 24)
    earlier = snapshot_version("v0.9.2", day, 9, "f" * 40)
    later = snapshot_version("v0.9.2", day, 10, "0" * 40)
    assert vercmp(earlier, later) == -1
    # A snapshot after an rc sorts before that release.
    after_rc = snapshot_version("v0.9.3-rc1", day, 2, "1" * 40)
    assert vercmp("0.9.3~rc1", after_rc) == -1 and vercmp(after_rc, "0.9.3") == -1


@pytest.mark.slow
def test_the_built_rpm_versions_sort_as_rpm_says(pkg_built):
    _, _, rpms = pkg_built
    versions = [rpmq(rpms[f], "--qf", "%{VERSION}") for f in ("ampere", "hopper", "ada")]
    assert versions == ["0.9.2", "0.9.2^20261124.3gitabc1234", "0.9.3~rc1"]
    assert vercmp(versions[0], versions[1]) == -1 and vercmp(versions[1], versions[2]) == -1
    assert rpms["hopper"].name == "mistralrs-hopper-0.9.2^20261124.3gitabc1234-1.fc43.x86_64.rpm"
    log = rpmq(rpms["hopper"], "--changelog").splitlines()
    assert log[0].endswith(" - 0.9.2^20261124.3gitabc1234-1")
    assert log[1] == f"- Snapshot of upstream (commit {SNAPSHOT_COMMIT[:12]})"
    description = " ".join(rpmq(rpms["hopper"], "--qf", "%{DESCRIPTION}").split())
    assert f"upstream version 0.9.2 (snapshot), commit {SNAPSHOT_COMMIT}" in description


# --- the RPMs, read back ----------------------------------------------------------------


# Derived by hand: the fixture workspace's linked crates (test_bundled:
# Apache-2.0, MIT OR Apache-2.0, Apache-2.0 WITH LLVM-exception,
# BSD-3-Clause, BSL-1.0 from config, ISC, MIT) and config.toml's [[bundled]]
# (BSD-3-Clause: cutlass, flash-attention, pytorch; Apache-2.0: flashinfer,
# fastertransformer, vllm, marlin, hqq; MIT: exllamav2, llama.cpp), each term once.
FIXTURE_LICENSE = ("Apache-2.0 AND (MIT OR Apache-2.0) AND Apache-2.0 WITH LLVM-exception AND BSD-3-Clause"
                   " AND BSL-1.0 AND ISC AND MIT")


def test_header(pkg_built):
    cfg, _, rpms = pkg_built
    fields = rpmq(rpms["ampere"], "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}|%{URL}|%{SUMMARY}|"
                                         "%{PAYLOADCOMPRESSOR} %{PAYLOADFLAGS}").split("|")
    assert fields == ["mistralrs-ampere", "0.9.2", "1.fc43", "x86_64", FIXTURE_LICENSE, cfg.package.url,
                      cfg.package.summary, "zstd 3T0"]
    assert rpms["ampere"].name == "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
    assert rpms["ampere"].parent == cfg.paths.dist


def test_description_names_the_gpus_and_the_commit(pkg_built):
    _, _, rpms = pkg_built
    ampere = " ".join(rpmq(rpms["ampere"], "--qf", "%{DESCRIPTION}").split())
    assert "compute capability 8.6 (sm_86)" in ampere
    assert "GeForce RTX 3060-3090, RTX A2000-A6000" in ampere
    assert f"release v0.9.2, commit {COMMIT}" in ampere
    ada = " ".join(rpmq(rpms["ada"], "--qf", "%{DESCRIPTION}").split())
    assert "sm_89" in ada and "(commit not recorded)" in ada and "built outside this pipeline" in ada


def test_changelog(pkg_built):
    cfg, _, rpms = pkg_built
    log = rpmq(rpms["ampere"], "--changelog")
    assert log.splitlines()[0] == f"* Fri Nov 20 2026 {cfg.package.packager} - 0.9.2-1"
    assert f"- Update to upstream release v0.9.2 (commit {COMMIT[:12]})" in log
    assert "0.9.1-1" in log  # a final release covered by upstream.programs: listed
    assert rpmq(rpms["ada"], "--changelog").splitlines()[1] == "- Update to upstream release candidate v0.9.3-rc1"


def test_provides_and_conflicts(pkg_built):
    _, _, rpms = pkg_built
    provides = rpmq(rpms["ampere"], "--provides").splitlines()
    assert "mistralrs = 0.9.2-1.fc43" in provides
    assert "mistralrs-ampere = 0.9.2-1.fc43" in provides
    # Every other configured flavour, never itself or the virtual "mistralrs".
    assert sorted(rpmq(rpms["ampere"], "--conflicts").split()) == ["mistralrs-ada", "mistralrs-hopper"]
    assert sorted(rpmq(rpms["hopper"], "--conflicts").split()) == ["mistralrs-ada", "mistralrs-ampere"]
    assert sorted(rpmq(rpms["ada"], "--conflicts").split()) == ["mistralrs-ampere", "mistralrs-hopper"]


def test_bundled_provides(pkg_built):
    _, _, rpms = pkg_built
    bundled = sorted(p for p in rpmq(rpms["ampere"], "--provides").splitlines() if p.startswith("bundled("))
    # each linked crate from outside the tree, versions as Fedora's generator writes them ...
    assert [p for p in bundled if p.startswith("bundled(crate(")] == [
        "bundled(crate(bsd-thing)) = 2.0.0", "bundled(crate(dual-lic)) = 1.2.0",
        "bundled(crate(gitdep)) = 0.9.0+git5e1f0c2a", "bundled(crate(licfile-only)) = 0.1.0",
        "bundled(crate(opt-extra)) = 1.0.0", "bundled(crate(prerel)) = 1.0.0~beta.2",
        "bundled(crate(slashy)) = 0.4.1",
    ]
    # ... and config.toml's components
    assert "bundled(cutlass) = 4.3.4^20260105git7127592" in bundled
    assert "bundled(flash-attention) = 2" in bundled and "bundled(llama.cpp) = 0" in bundled
    assert len(bundled) == 7 + 10


def test_license_files_and_sbom_in_the_package(pkg_built):
    cfg, layout, rpms = pkg_built
    members = cpio_members(rpms["ampere"])
    licenses = "/usr/share/licenses/mistralrs-ampere"
    bundle = fixture_bundle()
    assert members[f"{licenses}/LICENSE.dependencies"].decode() == bundle.license_dependencies()
    assert members[f"{licenses}/cargo-vendor.txt"].decode() == bundle.vendor_manifest()
    assert "cutlass" not in bundle.vendor_manifest()  # Fedora would make a crate of it
    for text in bundle.license_texts():
        assert members[f"{licenses}/{text.dest}"] == text.source.read_bytes()
    # upstream's own license text, from the tree (the fixture's root LICENSE)
    assert members[f"{licenses}/LICENSE"] == (BUNDLED_FIXTURE / "LICENSE").read_bytes()
    # The SBOM: installed, the same bytes beside the RPM in dist/, for this release.
    sbom = members["/usr/share/mistralrs/sbom.cdx.json"]
    assert (layout.dist / "mistralrs-ampere-0.9.2-1.fc43.x86_64.cdx.json").read_bytes() == sbom
    doc = json.loads(sbom)
    assert doc["metadata"]["component"]["version"] == "0.9.2-1.fc43"
    props = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    build = BuildRecord.load(layout, "ampere")
    assert props["mistralrs-rpm:binary:sha256"] == build.sha256 == hashlib.sha256(members["/usr/bin/mistralrs"]).hexdigest()
    assert props["mistralrs-rpm:upstream:tag"] == "v0.9.2" and props["mistralrs-rpm:upstream:commit"] == COMMIT
    assert props["mistralrs-rpm:cuda:compute_cap"] == "86" and props["mistralrs-rpm:toolchain:rustc"] == "rustc 1.94.0"
    assert props["mistralrs-rpm:cargo:features"] == "cuda,cudnn,flash-attn,nccl"
    assert props["mistralrs-rpm:upstream:url"] == cfg.upstream.url  # what was fetched, not package.url
    assert {c["name"] for c in doc["components"]} >= {"bsd-thing", "gitdep", "cutlass", "flash-attention"}
    # a snapshot names no tag; its commit is the snapshot's
    hopper = json.loads(cpio_members(rpms["hopper"])["/usr/share/mistralrs/sbom.cdx.json"])
    hprops = {p["name"]: p["value"] for p in hopper["metadata"]["component"]["properties"]}
    assert "mistralrs-rpm:upstream:tag" not in hprops and hprops["mistralrs-rpm:upstream:commit"] == SNAPSHOT_COMMIT


def test_sbom_follows_the_release(tmp_path, pkg_libs, monkeypatch):
    """The SBOM names the release; a spec that differs only there keeps its
    release, and a changed toolchain (only the SBOM shows it) raises it over
    the published -1."""
    cfg, layout = make_project(tmp_path)
    fabricate(layout, pkg_libs, "ampere", 86)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    first = layout.sbom("ampere").read_bytes()
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "1%{?dist}" and layout.sbom("ampere").read_bytes() == first
    into_channel(cfg, build_rpm(cfg, layout, cfg.flavour("ampere")))
    record = json.loads(layout.build_record("ampere").read_text())
    layout.build_record("ampere").write_text(json.dumps({**record, "nvcc": "Build cuda_13.1"}))
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "2%{?dist}"
    doc = json.loads(layout.sbom("ampere").read_text())
    assert doc["metadata"]["component"]["version"] == "0.9.2-2.fc43"
    digest = hashlib.sha256(layout.sbom("ampere").read_bytes()).hexdigest()
    assert f"{digest}  %{{SOURCE6}}" in layout.spec("ampere").read_text()
    build_rpm(cfg, layout, cfg.flavour("ampere"))
    assert (layout.dist / "mistralrs-ampere-0.9.2-2.fc43.x86_64.cdx.json").read_bytes() == layout.sbom("ampere").read_bytes()


def test_a_stale_bundle_is_refused(pkg_project):
    cfg, layout = pkg_project
    record = json.loads(layout.bundle_record("ampere").read_text())
    layout.bundle_record("ampere").write_text(json.dumps({**record, "commit": RC_COMMIT}))
    with pytest.raises(UserError, match="run the licenses task for ampere again"):
        render_spec(cfg, layout, cfg.flavour("ampere"))
    layout.bundle_record("ampere").write_text(json.dumps({**record, "license": "MIT AND Foo-Custom"}))
    with pytest.raises(UserError, match="unknown license Foo-Custom"):
        render_spec(cfg, layout, cfg.flavour("ampere"))
    layout.bundle_record("ampere").write_text(json.dumps(record))
    layout.license_archive("ampere").write_bytes(b"changed")
    with pytest.raises(UserError, match="is not the one its bundle record names"):
        render_spec(cfg, layout, cfg.flavour("ampere"))


def add_sysuser_form(line: str) -> str:
    """What rpm's %add_sysuser makes of a sysusers.d line (rpm >= 4.19,
    macros.in): the fields joined by single spaces, NUL-padded to a multiple
    of 3 bytes, in base64 (so without "=")."""
    text = " ".join(line.split()).encode()
    return base64.b64encode(text + b"\0" * (-len(text) % 3)).decode()


def test_sysusers_provides_whatever_rpm_builds_it(pkg_built):
    _, _, rpms = pkg_built
    packaged = cpio_members(rpms["ampere"])["/usr/lib/sysusers.d/mistralrs.conf"].decode()
    lines = [line for line in packaged.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("u mistralrs ")
    provides = rpmq(rpms["ampere"], "--provides").splitlines()
    users = [p for p in provides if p.startswith(("user(", "group(", "groupmember("))]
    # Exactly what rpm >= 4.19 writes, once: the user with its line, and its group.
    assert users == ["group(mistralrs)", f"user(mistralrs) = {add_sysuser_form(lines[0])}"]
    decoded = base64.b64decode(users[1].split(" = ")[1])
    assert decoded.rstrip(b"\0").decode() == " ".join(lines[0].split())
    # Nothing required of the installing host that only rpm >= 4.19 has.
    assert not [r for r in rpmq(rpms["ampere"], "--requires").splitlines() if r.startswith(("user(", "group("))]


def test_compat_sysusers_generator_follows_add_sysuser(tmp_path):
    """The compat generator on other line types, against %add_sysuser's form."""
    conf = tmp_path / "x.conf"
    conf.write_text("# a comment u nobody\nu! svc 900 \"A  service\" /var/lib/svc /bin/false\n\n"
                    "g  grp   515\nm svc grp\nr - 500-900\n")
    out = subprocess.run(["rpm", "--load", str(paths.COMPAT_MACROS), "--eval", f"%{{__sysusers_provides {conf}}}",
                          "--eval", "@", "--eval", f"%{{__sysusers_requires {conf}}}"],
                         check=True, capture_output=True, text=True).stdout
    provides, requires = (part.split() for part in out.split("@"))
    assert " ".join(provides) == " ".join([
        "user(svc) =", add_sysuser_form('u! svc 900 "A service" /var/lib/svc /bin/false'), "group(svc)",
        "group(grp) =", add_sysuser_form("g grp 515"),
        "groupmember(svc/grp) =", add_sysuser_form("m svc grp"),
    ])
    assert requires == ["user(svc)", "group(grp)"]


def test_requires_cuda_by_package_name_and_the_driver_by_soname(pkg_built):
    cfg, _, rpms = pkg_built
    requires = rpmq(rpms["ampere"], "--requires").splitlines()
    for name in cfg.package.requires_for(("cuda", "cudnn", "flash-attn", "nccl")):
        assert name in requires
    assert "libcudnn9-cuda-13" in requires and "libnccl" in requires
    # The binary needs every CUDA soname (DT_NEEDED); all are filtered ...
    needed = subprocess.run(["readelf", "-d", str(cfg.paths.artifacts / "mistralrs-ampere")],
                            check=True, capture_output=True, text=True).stdout
    for soname in CUDA_SONAMES:
        assert f"[{soname}]" in needed
        assert not [r for r in requires if r.startswith(soname)], soname
    # ... except the driver's, which any vendor's driver package provides.
    assert "libcuda.so.1()(64bit)" in requires
    assert "libc.so.6()(64bit)" in requires


def test_files_and_modes(pkg_built):
    _, _, rpms = pkg_built
    listing = rpmq(rpms["ampere"], "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]")
    files = {line.split()[2]: line.split()[:2] for line in listing.splitlines()}
    # Fedora's %_docdir_fmt: the license directory is named by the package alone.
    licenses = "/usr/share/licenses/mistralrs-ampere"
    texts = [f"{licenses}/{t.dest}" for t in fixture_bundle().license_texts() if t.dest.startswith("crates/")]
    crate_dirs = {t.rsplit("/", 1)[0] for t in texts}
    license_files = [f"{licenses}/LICENSE", f"{licenses}/LICENSE.dependencies", f"{licenses}/cargo-vendor.txt", *texts]
    assert files == {
        "/usr/bin/mistralrs": ["-rwxr-xr-x", "root:root"],
        "/usr/lib/systemd/system/mistralrs@.service": ["-rw-r--r--", "root:root"],
        "/usr/lib/systemd/system/mistralrs-nvidia-devices.service": ["-rw-r--r--", "root:root"],
        "/etc/mistralrs": ["drwxr-xr-x", "root:root"],
        "/etc/mistralrs/mistralrs@.conf.example": ["-rw-r--r--", "root:root"],
        "/usr/lib/sysusers.d/mistralrs.conf": ["-rw-r--r--", "root:root"],
        "/usr/share/mistralrs": ["drwxr-xr-x", "root:root"],
        "/usr/share/mistralrs/sbom.cdx.json": ["-rw-r--r--", "root:root"],
        licenses: ["drwxr-xr-x", "root:root"],
        f"{licenses}/crates": ["drwxr-xr-x", "root:root"],
        **{d: ["drwxr-xr-x", "root:root"] for d in crate_dirs},
        **{f: ["-rw-r--r--", "root:root"] for f in license_files},
    }
    assert len(texts) == 9
    # Not %config: an example to copy, never read by the service.
    assert rpmq(rpms["ampere"], "--configfiles").strip() == ""
    # %license: every license file
    assert set(rpmq(rpms["ampere"], "--licensefiles").split()) == set(license_files)
    # the SBOM is data, not %doc: a nodocs install keeps it
    assert "/usr/share/mistralrs/sbom.cdx.json" not in rpmq(rpms["ampere"], "--docfiles")


def test_scriptlets(pkg_built):
    _, _, rpms = pkg_built
    scripts = rpmq(rpms["ampere"], "--scripts")
    sections = dict(re.findall(r"^(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=^\w+ scriptlet|\Z)", scripts, re.M | re.S))
    assert set(sections) == {"postinstall", "preuninstall", "postuninstall"}
    assert "install-system-units mistralrs@.service" in sections["postinstall"]
    assert "$1 -eq 1" in sections["postinstall"]
    assert "remove-system-units mistralrs@.service mistralrs-nvidia-devices.service" in sections["preuninstall"]
    assert "mark-restart-system-units mistralrs@.service" in sections["postuninstall"]
    # Fedora's rpm makes the user from the sysusers.d file: no useradd here.
    assert "useradd" not in scripts and "groupadd" not in scripts


def test_payload_is_the_verified_binary_and_the_unit_is_substituted(pkg_built):
    _, layout, rpms = pkg_built
    members = cpio_members(rpms["ampere"])
    binary = members["/usr/bin/mistralrs"]
    assert hashlib.sha256(binary).hexdigest() == BuildRecord.load(layout, "ampere").sha256  # not stripped
    unit = members["/usr/lib/systemd/system/mistralrs@.service"].decode()
    assert "@BINARY@" not in unit and "@FLAVOUR@" not in unit and not re.search(r"@[A-Z_]+@", unit)
    assert "Description=mistral.rs LLM inference server %i (ampere build)" in unit
    assert ("ExecStart=/usr/bin/mistralrs serve -m ${MISTRALRS_MODEL} --host ${MISTRALRS_HOST} "
            "--port ${MISTRALRS_PORT} $MISTRALRS_ARGS") in unit
    assert "EnvironmentFile=/etc/mistralrs/%i.conf" in unit
    assert "Environment=MISTRALRS_HOST=127.0.0.1" in unit
    example = members["/etc/mistralrs/mistralrs@.conf.example"].decode()
    assert re.search(r"^MISTRALRS_HOST=127\.0\.0\.1$", example, re.M)
    assert "NO AUTHENTICATION" in example
    sysusers = members["/usr/lib/sysusers.d/mistralrs.conf"].decode()
    assert re.search(r"^u mistralrs - ", sysusers, re.M)


def test_example_documents_every_variable_the_unit_reads():
    unit = paths.UNIT_TEMPLATE.read_text()
    example = paths.UNIT_EXAMPLE.read_text()
    settings = "\n".join(line for line in unit.splitlines() if not line.startswith("#"))
    used = set(re.findall(r"\$\{?(\w+)\}?", settings)) | set(re.findall(r"^Environment=(\w+)=", settings, re.M))
    assert used == {"MISTRALRS_MODEL", "MISTRALRS_HOST", "MISTRALRS_PORT", "MISTRALRS_ARGS", "HF_HOME"}
    for variable in used | {"HF_TOKEN", "HF_HUB_OFFLINE", "RUST_LOG"}:
        assert re.search(rf"^#?{variable}=", example, re.M), variable


def test_rpm_record(pkg_built):
    cfg, layout, rpms = pkg_built
    record = json.loads(layout.rpm_record("ampere").read_text())
    assert record["path"] == str(rpms["ampere"])
    assert record["nevra"] == "mistralrs-ampere-0.9.2-1.fc43.x86_64"
    assert record["sha256"] == sha256(rpms["ampere"]) and record["size"] == rpms["ampere"].stat().st_size
    assert record["payload"] == cfg.package.payload == "w3T0.zstdio"
    assert (record["payload_compressor"], record["payload_flags"]) == ("zstd", "3T0")
    assert record["artifact_sha256"] == BuildRecord.load(layout, "ampere").sha256
    assert not layout.rpm_topdir("ampere").exists()  # a gigabyte of buildroot is not kept


# --- installed -------------------------------------------------------------------------------


def test_installs_into_a_scratch_root_and_systemd_accepts_the_units(pkg_built, tmp_path):
    _, layout, rpms = pkg_built
    root = tmp_path / "root"
    install_into(root, rpms["ampere"])
    binary = root / "usr/bin/mistralrs"
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert sha256(binary) == BuildRecord.load(layout, "ampere").sha256
    units = root / "usr/lib/systemd/system"
    assert (units / "mistralrs@.service").is_file() and (units / "mistralrs-nvidia-devices.service").is_file()
    assert (root / "etc/mistralrs/mistralrs@.conf.example").is_file()
    assert (root / "usr/lib/sysusers.d/mistralrs.conf").is_file()
    assert (root / "usr/share/licenses/mistralrs-ampere/LICENSE").is_file()
    verify = subprocess.run([*as_root(), "rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-V", "--nodeps",
                             "mistralrs-ampere"],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # systemd-analyze verify, inside the installed root: the unit files as
    # installed, ExecStart= must name an executable there (it checks), and
    # the targets they are ordered against come from this host's systemd.
    # nvidia-modprobe is a stand-in (verify ignores ConditionPathExists=).
    # What it does not check: the sandbox at run time, GPU access, variable
    # expansion, the user (made by sysusers at install on Fedora).
    for target in Path("/usr/lib/systemd/system").glob("*.target"):
        if target.is_file():
            shutil.copy(target, units / target.name)
    modprobe = root / "usr/bin/nvidia-modprobe"
    modprobe.write_text("#!/bin/sh\nexit 0\n")
    modprobe.chmod(0o755)
    shutil.copy(root / "etc/mistralrs/mistralrs@.conf.example", root / "etc/mistralrs/qwen.conf")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             "mistralrs@qwen.service", "mistralrs-nvidia-devices.service"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    # ... and it does notice a missing binary.
    binary.rename(binary.with_name("elsewhere"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", "mistralrs@qwen.service"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "/usr/bin/mistralrs" in result.stderr


SWAP = """
import os, sys, rpm
root, erase, install = sys.argv[1:4]
rpm.addMacro("_dbpath", "/var/lib/rpm")

def transaction():
    ts = rpm.TransactionSet(root)
    fd = os.open(install, os.O_RDONLY)
    ts.addInstall(ts.hdrFromFdno(fd), install, "i")
    os.close(fd)
    if erase != "-":
        ts.addErase(erase)
    return ts

conflicts = [p for p in transaction().check() if p[4] == rpm.RPMDEP_SENSE_CONFLICTS]
print("conflicts:", conflicts)
if erase == "-" or conflicts:
    sys.exit(0)
# dnf swap: one transaction erasing one flavour and installing the other
# (not checked again: only the conflicts were the question above).
ts = transaction()
ts.setFlags(rpm.RPMTRANS_FLAG_NOSCRIPTS)
ts.order()
files = {}
def callback(reason, amount, total, key, data):
    if reason == rpm.RPMCALLBACK_INST_OPEN_FILE:
        files[key] = os.open(key, os.O_RDONLY)
        return files[key]
    if reason == rpm.RPMCALLBACK_INST_CLOSE_FILE:
        os.close(files.pop(key))
problems = ts.run(callback, "")
print("problems:", problems)
"""


def test_flavours_conflict_and_swap_in_one_transaction(pkg_built, tmp_path):
    """What `dnf swap mistralrs-ampere mistralrs-ada` asks of rpm, with rpm's
    own dependency check (the other requirements cannot be met here)."""
    _, layout, rpms = pkg_built
    root = tmp_path / "root"
    install_into(root, rpms["ampere"])

    def transaction(erase: str) -> str:
        return subprocess.run([*as_root(), sys.executable, "-c", SWAP, str(root), erase, str(rpms["ada"])],
                              check=True, capture_output=True, text=True).stdout

    assert "mistralrs-ampere" in transaction("-").split("conflicts:")[1]  # side by side: refused
    out = transaction("mistralrs-ampere")
    assert "conflicts: []" in out and "problems: None" in out, out
    installed = subprocess.run([*as_root(), "rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-qa"],
                               check=True, capture_output=True, text=True).stdout.split()
    assert installed == ["mistralrs-ada-0.9.3~rc1-1.fc43.x86_64"]
    assert sha256(root / "usr/bin/mistralrs") == BuildRecord.load(layout, "ada").sha256
    assert "(ada build)" in (root / "usr/lib/systemd/system/mistralrs@.service").read_text()


# --- rpmlint with Fedora's profile -------------------------------------------------------


def rpmlint(files: list[Path], config_dir: Path) -> subprocess.CompletedProcess:
    rpmlint_bin = Path(sys.executable).with_name("rpmlint")
    env = dict(os.environ, CONFIG_DISABLE_AUTOLOADING="1")  # no ~/.config or /etc/xdg configs
    return subprocess.run([str(rpmlint_bin), "-c", str(config_dir), *map(str, files)],
                          capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_rpmlint_fedora_profile(pkg_built, tmp_path):
    if not (FEDORA_PROFILE / "fedora.toml").is_file():
        pytest.fail(f"no Fedora rpmlint profile at {FEDORA_PROFILE}: run scripts/bootstrap")
    _, layout, rpms = pkg_built
    files = [*(layout.spec(f) for f in rpms), *rpms.values()]

    # Fedora's profile alone: every message must be one rpm/rpmlint.toml keeps,
    # and every filter kept there must still match something.
    import tomllib

    filters = tomllib.loads(paths.RPMLINT_FILTERS.read_text())["Filters"]
    # The profile with Fedora's SPDX license list (rpm/rpmlint-licenses.toml
    # standing in for rpmlint-fedora-license-data), as on Fedora.
    fedora = tmp_path / "fedora"
    fedora.mkdir()
    for config in FEDORA_PROFILE.glob("*.toml"):
        shutil.copy(config, fedora / config.name)
    shutil.copy(paths.RPMLINT_LICENSES, fedora / "zz-fedora-license-data.toml")
    fedora_only = rpmlint(files, fedora)
    assert "error locating" not in fedora_only.stdout + fedora_only.stderr
    assert "fedora.toml" in fedora_only.stdout  # the profile was loaded
    messages = [line for line in fedora_only.stdout.splitlines() if re.search(r": [EW]: ", line)]
    assert messages, fedora_only.stdout
    unlisted = [m for m in messages if not any(re.search(f, m) for f in filters)]
    assert not unlisted, "\n".join(unlisted)
    stale = [f for f in filters if not any(re.search(f, m) for m in messages)]
    assert not stale, stale

    # As a packager runs it: the profile plus our filters, no errors, no warnings.
    merged = tmp_path / "rpmlint"
    shutil.copytree(fedora, merged)
    shutil.copy(paths.RPMLINT_FILTERS, merged / "zz-mistralrs-rpm.toml")
    result = rpmlint(files, merged)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b0 errors, 0 warnings\b", result.stdout), result.stdout
    # The License tags are the computed ones, and rpmlint did read them.
    licenses = {rpmq(rpm, "--qf", "%{LICENSE}") for rpm in rpms.values()}
    assert licenses == {FIXTURE_LICENSE}



@pytest.mark.slow
def test_rpmlint_names_a_license_outside_fedoras_list(tmp_path, pkg_libs):
    """The License check of the test above can fail: a bundle under SSPL-1.0
    (valid SPDX, not on the list) gets its warning."""
    cfg, layout = make_project(tmp_path)
    fabricate(layout, pkg_libs, "ampere", 86)
    record = json.loads(layout.bundle_record("ampere").read_text())
    layout.bundle_record("ampere").write_text(json.dumps({**record, "license": "MIT AND SSPL-1.0"}))
    render_spec(cfg, layout, cfg.flavour("ampere"))
    rpm = build_rpm(cfg, layout, cfg.flavour("ampere"))
    assert rpmq(rpm, "--qf", "%{LICENSE}") == "MIT AND SSPL-1.0"
    merged = tmp_path / "rpmlint"
    merged.mkdir()
    for config in [*FEDORA_PROFILE.glob("*.toml"), paths.RPMLINT_LICENSES, paths.RPMLINT_FILTERS]:
        shutil.copy(config, merged / f"zz-{config.name}")
    result = rpmlint([rpm], merged)
    warned = re.findall(r"W: invalid-license (\S+)", result.stdout)
    assert warned == ["SSPL-1.0"], result.stdout


# --- Release numbering ----------------------------------------------------------------


def release_of(layout: Layout, flavour: str) -> str:
    return re.search(r"^Release:\s+(\S+)", layout.spec(flavour).read_text(), re.M).group(1)


def into_channel(cfg, rpm: Path) -> None:
    """rpm as published in the stable channel of the local target (unsigned:
    the spec stage reads only the metadata)."""
    channel = cfg.publish.target.path / "fedora" / "43" / "x86_64"
    channel.mkdir(parents=True, exist_ok=True)
    shutil.copy(rpm, channel / rpm.name)
    subprocess.run(["createrepo_c", "-q", str(channel)], check=True)


@pytest.mark.slow
def test_release_follows_what_the_channel_holds(tmp_path, pkg_libs, monkeypatch):
    from buildlib.publish.repodata import SPEC_PROVIDE, read_metadata

    cfg, layout = make_project(tmp_path)
    fabricate(layout, pkg_libs, "ampere", 86)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "1%{?dist}"
    # Nothing published yet: whatever was rendered here before, still 1.
    template = tmp_path / "mistralrs.spec.j2"
    template.write_text(paths.SPEC_TEMPLATE.read_text().replace("%description", "# changed\n%description"))
    monkeypatch.setattr(paths, "SPEC_TEMPLATE", template)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "1%{?dist}"
    monkeypatch.undo()

    # The first spec (A) published as -1: the package carries its spec digest.
    render_spec(cfg, layout, cfg.flavour("ampere"))
    first = build_rpm(cfg, layout, cfg.flavour("ampere"))
    (digest,) = re.findall(rf"^{re.escape(SPEC_PROVIDE)} = ([0-9a-f]{{64}})$", rpmq(first, "--provides"), re.M)
    into_channel(cfg, first)
    channel = cfg.publish.target.path / "fedora" / "43" / "x86_64"
    assert [p.spec_sha256 for p in read_metadata(channel / "repodata").packages.values()] == [digest]
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "1%{?dist}"
    assert build_rpm(cfg, layout, cfg.flavour("ampere")).read_bytes() == first.read_bytes()

    # A changed template (B): the channel's -1 is another package, so 2; published.
    monkeypatch.setattr(paths, "SPEC_TEMPLATE", template)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "2%{?dist}"
    second = build_rpm(cfg, layout, cfg.flavour("ampere"))
    assert second.name == "mistralrs-ampere-0.9.2-2.fc43.x86_64.rpm"
    assert rpmq(second, "--changelog").splitlines()[0].endswith(" - 0.9.2-2")
    into_channel(cfg, second)

    # A changed packaged file (the unit, C) changes the spec too: 3, never published.
    unit = tmp_path / "mistralrs@.service"
    unit.write_text(paths.UNIT_TEMPLATE.read_text().replace("RestartSec=10s", "RestartSec=20s"))
    monkeypatch.setattr(paths, "UNIT_TEMPLATE", unit)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "3%{?dist}"

    # Back to A (a setting tried, published and reverted): A is the channel's
    # -1, but -2 is newer, so A gets 3 (Releases only go up; dnf must see it
    # as newest).  Back to B: the channel's newest, so its -2 again.
    monkeypatch.undo()
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "3%{?dist}"
    with pytest.raises(UserError, match="release 2 of this version is published with another spec: give 3"):
        render_spec(cfg, layout, cfg.flavour("ampere"), release=2)
    render_spec(cfg, layout, cfg.flavour("ampere"), release=1)  # A's own published -1
    assert release_of(layout, "ampere") == "1%{?dist}"
    monkeypatch.setattr(paths, "SPEC_TEMPLATE", template)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "2%{?dist}"
    assert build_rpm(cfg, layout, cfg.flavour("ampere")).read_bytes() == second.read_bytes()
    monkeypatch.undo()

    # A new version starts at 1; an older version shows the Release that brought it.
    fabricate(layout, pkg_libs, "ampere", 86, tag="v0.9.3", day="2026-12-01",
              older=(("v0.9.2", "2026-11-20", COMMIT), *OLDER))
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "1%{?dist}"
    assert "- 0.9.2-1\n" in layout.spec("ampere").read_text()

    # CI may impose a release; the SBOM names it.  Not published, it is not remembered.
    render_spec(cfg, layout, cfg.flavour("ampere"), release=7)
    assert release_of(layout, "ampere") == "7%{?dist}"
    assert re.fullmatch(r"0\.9\.3-7\..+", json.loads(layout.sbom("ampere").read_text())["metadata"]["component"]["version"])
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "1%{?dist}"
    with pytest.raises(UserError, match="release"):
        render_spec(cfg, layout, cfg.flavour("ampere"), release=0)


def test_an_unreadable_channel_stops_the_spec_unless_a_release_is_given(tmp_path, pkg_libs, monkeypatch):
    from buildlib.pipeline import spec as specmod
    from buildlib.publish.held import ChannelUnreadable

    def unreadable(*args):
        raise ChannelUnreadable("cannot read channel stable at http://127.0.0.1:1/ (HTTP 503): ...")

    cfg, layout = make_project(tmp_path)
    fabricate(layout, pkg_libs, "ampere", 86)
    monkeypatch.setattr(specmod, "held_releases", unreadable)
    with pytest.raises(ChannelUnreadable, match="cannot read channel stable"):
        render_spec(cfg, layout, cfg.flavour("ampere"))
    assert not layout.spec("ampere").exists()
    render_spec(cfg, layout, cfg.flavour("ampere"), release=4)
    assert release_of(layout, "ampere") == "4%{?dist}"


def test_an_old_release_ledger_is_ignored(tmp_path, pkg_libs):
    cfg, layout = make_project(tmp_path)
    fabricate(layout, pkg_libs, "ampere", 86)
    layout.build.mkdir(parents=True, exist_ok=True)
    (layout.build / "releases.json").write_text(json.dumps({"ampere": {"0.9.2": {"a" * 64: 5}}}))
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert release_of(layout, "ampere") == "1%{?dist}"


# --- refusals ---------------------------------------------------------------------


@pytest.fixture
def pkg_project(tmp_path, pkg_libs):
    cfg, layout = make_project(tmp_path)
    fabricate(layout, pkg_libs, "ampere", 86)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    return cfg, layout


def test_a_swapped_binary_is_refused(pkg_project, pkg_libs):
    cfg, layout = pkg_project
    compile_binary(pkg_libs, layout.artifact("ampere"), "something else")
    layout.dist.mkdir(parents=True, exist_ok=True)
    assert not list(layout.dist.iterdir())
    with pytest.raises(UserError, match="changed after it was verified"):
        build_rpm(cfg, layout, cfg.flavour("ampere"))
    assert not list(layout.dist.iterdir())  # nothing packaged, not even in part
    assert not layout.rpm_record("ampere").exists()


def test_an_unverified_artifact_is_refused(pkg_project):
    cfg, layout = pkg_project
    record = json.loads(layout.verify_record("ampere").read_text())
    layout.verify_record("ampere").write_text(json.dumps({**record, "ok": False}))
    with pytest.raises(UserError, match="did not pass verification"):
        build_rpm(cfg, layout, cfg.flavour("ampere"))
    layout.verify_record("ampere").write_text(json.dumps({**record, "sha256": "0" * 64}))
    with pytest.raises(UserError, match="verify the artifact of ampere again"):
        build_rpm(cfg, layout, cfg.flavour("ampere"))
    layout.verify_record("ampere").unlink()
    with pytest.raises(UserError, match="run the verify task"):
        build_rpm(cfg, layout, cfg.flavour("ampere"))


def test_a_stale_spec_is_refused(pkg_project, pkg_libs):
    cfg, layout = pkg_project
    fabricate(layout, pkg_libs, "ampere", 86, banner="mistralrs 0.9.2 rebuilt")  # re-verified, spec not re-rendered
    with pytest.raises(UserError, match="render the spec of ampere again"):
        build_rpm(cfg, layout, cfg.flavour("ampere"))


def test_rpmbuild_itself_checks_the_sources(pkg_project):
    """Even past the checks in Python, %install refuses a source whose digest
    differs from the one the spec was rendered with."""
    cfg, layout = pkg_project
    spec = layout.spec("ampere")
    text = spec.read_text()
    digest = hashlib.sha256(paths.SYSUSERS.read_bytes()).hexdigest()
    spec.write_text(text.replace(f"{digest}  %{{SOURCE3}}", f"{'0' * 64}  %{{SOURCE3}}"))
    with pytest.raises(UserError, match="rpmbuild"):
        build_rpm(cfg, layout, cfg.flavour("ampere"))


@pytest.mark.parametrize("change, message", [
    ({"commit": "not-a-commit"}, "40-hex commit"),
    ({"rpm_version": "0.9.2~git1"}, "refusing RPM version"),
    ({"rpm_version": "0.9.3"}, "does not belong to upstream version"),
    ({"flavour": "ada"}, "written for flavour 'ada'"),
    ({"binary_name": "mistralrs; rm -rf /"}, "binary_name"),
    ({"features": ["cuda", "bad feature"]}, "not a cargo feature"),
    ({"compute_cap": 89}, "rebuild the flavour"),
    ({"binary_name": "mistralrs-server"}, "upstream.programs"),
    ({"package": "mistralrs-server"}, "built from package mistralrs-server, but version 0.9.2 is built from mistralrs-cli"),
    ({"package": "mistralrs cli"}, "field 'package'"),
    ({"changelog": [{"rpm_version": "0.9.2", "tag": "v0.9.2", "date": "20 Nov 2026", "commit": None}]}, "YYYY-MM-DD"),
])
def test_build_record_is_checked(pkg_project, change, message):
    cfg, layout = pkg_project
    record = json.loads(layout.build_record("ampere").read_text())
    layout.build_record("ampere").write_text(json.dumps({**record, **change}))
    with pytest.raises(UserError, match=re.escape(message)):
        render_spec(cfg, layout, cfg.flavour("ampere"))


def test_free_text_is_escaped_for_rpm(tmp_path, pkg_libs):
    cfg, layout = make_project(tmp_path, summary="LLM server at 100%{?dist} speed")
    fabricate(layout, pkg_libs, "ampere", 86)
    render_spec(cfg, layout, cfg.flavour("ampere"))
    assert "Summary:        LLM server at 100%%{?dist} speed" in layout.spec("ampere").read_text()
    rpm = build_rpm(cfg, layout, cfg.flavour("ampere"))
    assert rpmq(rpm, "--qf", "%{SUMMARY}") == "LLM server at 100%{?dist} speed"


# --- the host's macros ------------------------------------------------------------


def test_compat_macros_apply_only_where_the_host_lacks_them(tmp_path, monkeypatch):
    cfg, _ = make_project(tmp_path)
    blocks = compat_blocks(paths.COMPAT_MACROS.read_text())
    assert set(blocks) == {"_unitdir", "_sysusersdir", "_docdir_fmt", "systemd_post", "systemd_preun",
                           "systemd_postun_with_restart", "__gpg", "__sysusers_path", "__sysusers_provides",
                           "__sysusers_requires"}

    # This Debian host: all of them, plus dist, and the database moves in.
    topdir = tmp_path / "topdir"
    args, foreign = host_macro_args(cfg, topdir)
    assert foreign
    assert ["--define", f"dist {cfg.package.dist}"] == args[args.index(f"dist {cfg.package.dist}") - 1:][:2]
    assert ["--define", f"_dbpath {topdir / 'rpmdb'}"] == args[args.index(f"_dbpath {topdir / 'rpmdb'}") - 1:][:2]
    loaded = compat_blocks(Path(args[args.index("--load") + 1]).read_text())
    assert set(loaded) == set(blocks)
    # rpm 4.18 finds file attributes by file name: the host's, plus sysusers.
    attrs = topdir / "fileattrs"
    assert ["--define", f"_fileattrsdir {attrs}"] == args[args.index(f"_fileattrsdir {attrs}") - 1:][:2]
    host_attrs = {p.name for p in Path("/usr/lib/rpm/fileattrs").glob("*.attr")}
    assert "sysusers.attr" not in host_attrs and "elf.attr" in host_attrs
    assert {p.name for p in attrs.iterdir()} == host_attrs | {"sysusers.attr"}

    # A host with Fedora's macros (here through ~/.rpmmacros): none applied.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("".join(blocks.values()).replace("/usr/bin/gpg", "/bin/sh") + "%dist .fc43\n")
    monkeypatch.setenv("HOME", str(home))
    args, foreign = host_macro_args(cfg, tmp_path / "topdir2")
    assert not foreign and "--load" not in args and not any(a.startswith(("dist ", "_dbpath ")) for a in args)

    assert not any(a.startswith("_fileattrsdir ") for a in args)

    # Only what is missing: a host with the directories and rpm >= 4.19's
    # sysusers generator, but no scriptlets: the generator is not doubled.
    (home / ".rpmmacros").write_text("%_unitdir /usr/lib/systemd/system\n%_sysusersdir /usr/lib/sysusers.d\n"
                                     + "".join(blocks[n] for n in blocks if n.startswith("__sysusers_")))
    args, foreign = host_macro_args(cfg, tmp_path / "topdir3")
    loaded = compat_blocks(Path(args[args.index("--load") + 1]).read_text())
    assert set(loaded) == {"_docdir_fmt", "systemd_post", "systemd_preun", "systemd_postun_with_restart", "__gpg"}
    assert not any(a.startswith("_fileattrsdir ") for a in args)


# --- the doit tasks ----------------------------------------------------------------


def run_tasks(layout: Layout, *targets: str, expect_success: bool = True) -> dict[str, dict]:
    """doit in this process (context.current patched), JSON reporter; {task: its report}."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from buildlib.tasks import package

    report = layout.build / "report.json"
    loader = ModuleTaskLoader({"task_spec": package.task_spec, "task_rpm": package.task_rpm})
    code = DoitMain(loader, config_filenames=(), extra_config={"GLOBAL": {
        "dep_file": str(layout.build / "doit.sqlite3"), "backend": "sqlite3",
    }}).run(["run", "--reporter", "json", "--output-file", str(report), *targets])
    tasks = {task["name"]: task for task in json.loads(report.read_text())["tasks"]}
    assert (code == 0) == expect_success, tasks
    return tasks


def results(tasks: dict[str, dict]) -> dict[str, str]:
    return {name: task["result"] for name, task in tasks.items()}


@pytest.mark.slow
def test_tasks_rerun_on_a_template_change_only(tmp_path, pkg_libs, monkeypatch):
    from buildlib.tasks import context

    cfg, layout = make_project(tmp_path)
    for flavour, cap in (("ampere", 86), ("ada", 89), ("hopper", 90)):
        fabricate(layout, pkg_libs, flavour, cap)
    layout.build.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(context, "current", lambda: (cfg, layout))
    template = tmp_path / "mistralrs.spec.j2"
    template.write_text(paths.SPEC_TEMPLATE.read_text())
    monkeypatch.setattr(paths, "SPEC_TEMPLATE", template)

    assert results(run_tasks(layout, "rpm:ampere")) == {"spec:ampere": "success", "rpm:ampere": "success"}
    assert results(run_tasks(layout, "rpm:ampere")) == {"spec:ampere": "up-to-date", "rpm:ampere": "up-to-date"}

    # -1 published: the changed template's package is another one, so -2
    into_channel(cfg, layout.dist / "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm")
    template.write_text(template.read_text().replace("%description", "# changed\n%description"))
    assert results(run_tasks(layout, "rpm:ampere")) == {"spec:ampere": "success", "rpm:ampere": "success"}
    assert (layout.dist / "mistralrs-ampere-0.9.2-2.fc43.x86_64.rpm").is_file()

    # An RPM removed from dist/ is built again.
    (layout.dist / "mistralrs-ampere-0.9.2-2.fc43.x86_64.rpm").unlink()
    assert results(run_tasks(layout, "rpm:ampere"))["rpm:ampere"] == "success"

    # A user's mistake fails the task with one line, not a traceback.
    compile_binary(pkg_libs, layout.artifact("ampere"), "swapped")
    layout.rpm_record("ampere").unlink()
    failed = run_tasks(layout, "rpm:ampere", expect_success=False)["rpm:ampere"]
    assert failed["result"] == "fail"
    assert "error: " in failed["err"] and "changed after it was verified" in failed["err"]
    assert "Traceback" not in failed["err"]
