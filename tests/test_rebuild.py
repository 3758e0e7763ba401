"""Bit-for-bit rebuilds and Release numbers that only go up, on the demo
upstream (PTX strings, an nvcc static library, vendored crates) with the
real tools: cargo, nvcc, rpmbuild, rpmsign, createrepo_c."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from buildlib import repro
from buildlib.config import load
from buildlib.layout import Layout
from buildlib.pipeline.records import BuildRecord, RpmRecord
from buildlib.pipeline.spec import choose_release
from buildlib.publish import publisher, repodata
from buildlib.publish.held import ChannelUnreadable, HeldRelease
from buildlib.run import UserError

from pipeline import demo_config, git, run_doit, write_config

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("cargo", "nvcc", "rpmbuild", "rpmsign", "createrepo_c")),
    reason="needs cargo, nvcc, rpmbuild, rpmsign and createrepo_c (scripts/bootstrap installs them)",
)

FLAVOUR = "ampere"


def project(root: Path, upstream: Path, cache: Path, key: Path | None = None, **changes) -> Path:
    """A demo project (ampere only) with every path under root but the cache."""
    data = demo_config(root, upstream, cache, flavours=(FLAVOUR,), **changes)
    if key:
        data["publish"]["key_file"] = str(key)
    return write_config(root, data)


def doit(config: Path, *args: str, ref: str = "v0.9.2", cargo_home: Path | None = None) -> dict[str, str]:
    env = {"MRPM_REF": ref}
    if cargo_home:
        env["CARGO_HOME"] = str(cargo_home)
    rc, results, out = run_doit(config, *args, env=env)
    assert rc == 0, out[-4000:]
    return results


def current_rpm(config: Path) -> Path:
    cfg = load(config)
    return RpmRecord.load(Layout.of(cfg), FLAVOUR).path


def channel_files(config: Path) -> list[str]:
    cfg = load(config)
    return sorted(repodata.read_metadata(cfg.publish.target.path / "fedora" / "43" / "x86_64" / "repodata").packages)


def repro_query(rpm: Path, fmt: str) -> str:
    return subprocess.run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", fmt, str(rpm)], check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def key(demo_key) -> Path:
    return demo_key[0]


# --- bit for bit -------------------------------------------------------------------


@pytest.mark.slow
def test_two_pipelines_elsewhere_give_the_same_binary_and_rpm(tmp_path, demo_upstream):
    """Other checkout, cache and target paths (of other lengths) and another
    CARGO_HOME: the same binary and the same unsigned RPM, byte for byte."""
    one = project(tmp_path / "one", demo_upstream.path, tmp_path / "one" / "cache")
    two = project(tmp_path / "elsewhere" / "second", demo_upstream.path, tmp_path / "c2")
    doit(one, f"rpm:{FLAVOUR}", cargo_home=tmp_path / "home-one")
    doit(two, f"rpm:{FLAVOUR}", cargo_home=tmp_path / "cargo-home-two")

    binaries = [Layout.of(load(c)).artifact(FLAVOUR) for c in (one, two)]
    assert repro.first_binary_difference(*binaries) is None
    assert binaries[0].read_bytes() == binaries[1].read_bytes()
    for layout in (Layout.of(load(one)), Layout.of(load(two))):
        assert repro.leaked_paths(binaries[0], [str(layout.cache), str(tmp_path)]) == []

    rpms = [current_rpm(c) for c in (one, two)]
    assert rpms[0].name == rpms[1].name == "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
    assert repro.first_difference(*rpms) is None
    assert rpms[0].read_bytes() == rpms[1].read_bytes()
    # ... though they package the license archive and the SBOM (the spec checks both), and the
    # SBOMs beside them are the same bytes too
    files = repro_query(rpms[0], "[%{FILENAMES}\n]").split()
    assert "/usr/share/mistralrs/sbom.cdx.json" in files
    assert any(f.endswith("/LICENSE.dependencies") for f in files)
    sboms = [r.with_name(r.name.removesuffix(".rpm") + ".cdx.json") for r in rpms]
    assert sboms[0].read_bytes() == sboms[1].read_bytes()
    assert json.loads(sboms[0].read_text())["metadata"]["component"]["version"] == "0.9.2-1.fc43"
    for layout in (Layout.of(load(one)), Layout.of(load(two))):
        for text in (sboms[0].read_bytes(), layout.license_archive(FLAVOUR).read_bytes()):
            assert str(tmp_path).encode() not in text and str(layout.cache).encode() not in text
    archives = [Layout.of(load(c)).license_archive(FLAVOUR).read_bytes() for c in (one, two)]
    assert archives[0] == archives[1]
    # the build time is the upstream commit's, not today's
    record = BuildRecord.load(Layout.of(load(one)), FLAVOUR)
    commit_time = int(git(demo_upstream.path, "show", "-s", "--format=%ct", "v0.9.2^{commit}"))
    assert record.source_date_epoch == commit_time
    assert repro_query(rpms[0], "%{BUILDTIME}") == str(commit_time)
    # ... and so is every file's time: nothing in the package says what day it was built
    assert set(repro_query(rpms[0], "[%{FILEMTIMES}\n]").split()) == {str(commit_time)}


@pytest.mark.slow
def test_rebuild_check_builds_elsewhere_and_names_the_first_difference(tmp_path, demo_upstream, shared_cache):
    config = project(tmp_path / "w", demo_upstream.path, shared_cache)
    doit(config, f"rpm:{FLAVOUR}")
    rc, results, out = run_doit(config, f"rebuild-check:{FLAVOUR}", env={"MRPM_REF": "v0.9.2"})
    assert rc == 0 and results == {f"rebuild-check:{FLAVOUR}": "success"}, out[-4000:]
    assert (f"identical: mistralrs-{FLAVOUR}, mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm and"
            " mistralrs-ampere-0.9.2-1.fc43.x86_64.cdx.json") in out
    layout = Layout.of(load(config))
    assert not (layout.build / "rebuild-check" / FLAVOUR).exists()  # the scratch location is gone
    # the pass is recorded, for build.rebuild_check = "releases", naming that very package
    from buildlib.pipeline.records import RebuildRecord
    from buildlib.run import sha256_of

    record = RebuildRecord.load(layout, FLAVOUR)
    assert (record.rpm_file, record.rpm_sha256) == ("mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm",
                                                    sha256_of(current_rpm(config)))

    # the SBOM beside the package is compared too: a changed one is named, with its first differing line
    sbom = layout.dist / "mistralrs-ampere-0.9.2-1.fc43.x86_64.cdx.json"
    original = sbom.read_bytes()
    sbom.write_text(original.decode().replace("0.9.2-1.fc43", "0.9.2-9.fc43", 1))
    assert sbom.read_bytes() != original
    rc, _, out = run_doit(config, f"rebuild-check:{FLAVOUR}", env={"MRPM_REF": "v0.9.2"})
    assert rc != 0
    assert re.search(r"error: rebuild-check ampere: the rebuild differs \(sbom mistralrs-ampere-0\.9\.2-1\.fc43"
                     r"\.x86_64\.cdx\.json: line \d+: '[^']*0\.9\.2-9\.fc43[^']*' != '[^']*0\.9\.2-1\.fc43", out), out[-3000:]
    assert not layout.rebuild_record(FLAVOUR).exists()  # a failed check leaves no pass behind
    sbom.write_bytes(original)

    # a package built at another time than the commit's: the check names the header tag
    record = json.loads(layout.build_record(FLAVOUR).read_text())
    record["source_date_epoch"] -= 86400
    layout.build_record(FLAVOUR).write_text(json.dumps(record))
    doit(config, f"rpm:{FLAVOUR}")
    rc, _, out = run_doit(config, f"rebuild-check:{FLAVOUR}", env={"MRPM_REF": "v0.9.2"})
    assert rc != 0
    assert re.search(r"error: rebuild-check ampere: the rebuild differs \(rpm mistralrs-ampere-0\.9\.2-1\.fc43"
                     r"\.x86_64\.rpm: header BUILDTIME: '\d+' != '\d+'; the build records' inputs differ:"
                     r" source_date_epoch: (\d+) != (\d+)\)", out), out[-3000:]


# --- publishing again ----------------------------------------------------------------


@pytest.mark.slow
def test_switching_refs_and_back_publishes_the_package_unchanged(tmp_path, demo_upstream, shared_cache, key):
    config = project(tmp_path / "w", demo_upstream.path, shared_cache, key)
    cfg = load(config)
    doit(config, f"rpm:{FLAVOUR}", ref="v0.9.2")
    first = publisher.publish_dist(cfg, Layout.of(cfg))
    assert first["channels"]["stable"]["added"] == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]

    doit(config, f"rpm:{FLAVOUR}", ref="v0.9.1")
    results = doit(config, f"rpm:{FLAVOUR}", ref="v0.9.2")
    assert results[f"build:{FLAVOUR}"] == "success"  # built again, not taken from a cache of doit's

    again = publisher.publish_dist(cfg, Layout.of(cfg))
    assert again["channels"]["stable"]["added"] == []
    assert again["channels"]["stable"]["unchanged"] == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
    assert again["bytes_sent"].get("packages", 0) == 0
    # its SBOM, published with it, is checked and left as it is
    sbom = "mistralrs-ampere-0.9.2-1.fc43.x86_64.cdx.json"
    published = cfg.publish.target.path / "fedora" / "43" / "x86_64" / sbom
    original = (cfg.paths.dist / sbom).read_bytes()
    assert again["channels"]["stable"]["sbom_damaged"] == {} and published.read_bytes() == original
    # the SBOM beside a current package is the one the package installs; another copy,
    # or none, is refused before anything is uploaded
    (cfg.paths.dist / sbom).write_bytes(original.replace(b"0.9.2-1.fc43", b"0.9.2-9.fc43", 1))
    with pytest.raises(UserError, match=rf"^{re.escape(sbom)} in .* is not the SBOM"
                                        r" mistralrs-ampere-0\.9\.2-1\.fc43\.x86_64\.rpm installs"
                                        r" \(/usr/share/mistralrs/sbom\.cdx\.json\): run `doit rpm:ampere` again$"):
        publisher.publish_dist(cfg, Layout.of(cfg))
    (cfg.paths.dist / sbom).unlink()
    with pytest.raises(UserError, match=rf"names mistralrs-ampere-0\.9\.2-1\.fc43\.x86_64\.rpm, but its SBOM"
                                        rf" {re.escape(sbom)} is not beside it"):
        publisher.publish_dist(cfg, Layout.of(cfg))
    assert published.read_bytes() == original
    (cfg.paths.dist / sbom).write_bytes(original)
    # damaged on the host: restored from dist/'s copy on the unchanged path
    published.write_text("{}")
    healed = publisher.publish_dist(cfg, Layout.of(cfg))
    assert healed["channels"]["stable"]["unchanged"] == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
    assert list(healed["channels"]["stable"]["sbom_damaged"]) == [sbom]
    assert published.read_bytes() == original
    # v0.9.1's package, built in between, is no current build: it stays in dist/
    assert channel_files(config) == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
    assert (cfg.paths.dist / "mistralrs-ampere-0.9.1-1.fc43.x86_64.rpm").is_file()


@pytest.mark.slow
def test_release_follows_the_channel_from_any_build_directory(tmp_path, demo_upstream, shared_cache, key):
    """The Release comes from what the channel holds, never from build/: a
    package the channel holds keeps its Release (publish finds it unchanged),
    another package of that version takes the channel's highest + 1, from
    the long-lived directory and from a fresh clone alike."""
    target = tmp_path / "repo"
    root = tmp_path / "w"
    config = project(root, demo_upstream.path, shared_cache, key, publish__target=str(target))
    doit(config, f"rpm:{FLAVOUR}")
    cfg = load(config)
    publisher.publish_dist(cfg, Layout.of(cfg))

    # a fresh clone (build/ empty, as on a CI runner): the published package again, unchanged
    fresh = project(tmp_path / "fresh", demo_upstream.path, shared_cache, key, publish__target=str(target))
    doit(fresh, f"rpm:{FLAVOUR}")
    assert current_rpm(fresh).read_bytes() == current_rpm(config).read_bytes()
    report = publisher.publish_dist(load(fresh), Layout.of(load(fresh)))
    assert report["channels"]["stable"]["unchanged"] == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
    assert report["channels"]["stable"]["added"] == []

    # a setting changed: another package of 0.9.2, so the channel's highest + 1, published
    summary = cfg.package.summary
    tried = project(root, demo_upstream.path, shared_cache, key, publish__target=str(target),
                    package__summary="A summary tried for a while")
    doit(tried, f"rpm:{FLAVOUR}")
    assert current_rpm(tried).name == "mistralrs-ampere-0.9.2-2.fc43.x86_64.rpm"
    assert publisher.publish_dist(cfg, Layout.of(cfg))["channels"]["stable"]["added"] == [
        "mistralrs-ampere-0.9.2-2.fc43.x86_64.rpm"]
    # ... and reverted: -1 is that package, but -2 is newer for dnf: Releases only go up
    reverted = project(root, demo_upstream.path, shared_cache, key, publish__target=str(target),
                       package__summary=summary)
    doit(reverted, f"rpm:{FLAVOUR}")
    assert current_rpm(reverted).name == "mistralrs-ampere-0.9.2-3.fc43.x86_64.rpm"
    report = publisher.publish_dist(cfg, Layout.of(cfg))
    assert report["channels"]["stable"]["added"] == ["mistralrs-ampere-0.9.2-3.fc43.x86_64.rpm"]
    assert channel_files(config) == [f"mistralrs-ampere-0.9.2-{n}.fc43.x86_64.rpm" for n in (1, 2, 3)]
    # -1, no current build, still serves its channel: damaged there, it is restored from dist/
    on_host = target / "fedora" / "43" / "x86_64" / "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
    on_host.write_bytes(on_host.read_bytes()[:-100])
    healed = publisher.publish_dist(cfg, Layout.of(cfg))
    assert healed["channels"]["stable"]["healed"] == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]

    # another fresh clone now: the channel's newest, -3, byte for byte
    again = project(tmp_path / "ci", demo_upstream.path, shared_cache, key, publish__target=str(target))
    doit(again, f"rpm:{FLAVOUR}")
    assert current_rpm(again).name == "mistralrs-ampere-0.9.2-3.fc43.x86_64.rpm"
    assert current_rpm(again).read_bytes() == current_rpm(reverted).read_bytes()


@pytest.mark.slow
def test_a_fresh_clone_and_a_reused_build_directory_make_the_same_rpm(tmp_path, demo_upstream, shared_cache):
    """Issue 16, item 5: a build directory that packaged v0.9.2, then the rc
    v0.9.2-rc1, then v0.9.2 again, and a fresh clone (a CI runner: build/
    empty) that packages v0.9.2 once make the same unsigned RPM; rebuild-check
    in the reused directory, which starts from nothing local, agrees."""
    reused = project(tmp_path / "reused", demo_upstream.path, shared_cache)
    doit(reused, f"rpm:{FLAVOUR}", ref="v0.9.2")
    doit(reused, f"rpm:{FLAVOUR}", ref="v0.9.2-rc1")
    assert current_rpm(reused).name == "mistralrs-ampere-0.9.2~rc1-1.fc43.x86_64.rpm"
    doit(reused, f"rpm:{FLAVOUR}", ref="v0.9.2")
    fresh = project(tmp_path / "fresh", demo_upstream.path, shared_cache)
    doit(fresh, f"rpm:{FLAVOUR}", ref="v0.9.2")

    rpms = [current_rpm(c) for c in (reused, fresh)]
    assert rpms[0].name == rpms[1].name == "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
    assert repro.first_difference(*rpms) is None
    assert rpms[0].read_bytes() == rpms[1].read_bytes()
    # the rc packaged in between is not in the changelog: only final releases are
    changelog = repro_query(rpms[0], "[%{CHANGELOGNAME}\n]").splitlines()
    assert [line.rsplit(" - ", 1)[1] for line in changelog] == ["0.9.2-1", "0.9.1-1", "0.9.0-1", "0.8.5-1",
                                                                "0.8.4-1", "0.7.0-1"]

    rc, results, out = run_doit(reused, f"rebuild-check:{FLAVOUR}", env={"MRPM_REF": "v0.9.2"})
    assert rc == 0 and results == {f"rebuild-check:{FLAVOUR}": "success"}, out[-4000:]
    assert "identical: " in out


def test_choose_release():
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    assert choose_release([], a, None) == (1, "new version")
    assert choose_release([HeldRelease(1, a)], a, None) == (1, "published with this spec")
    assert choose_release([HeldRelease(1, a)], b, None) == (2, "the channel holds release 1 with another spec")
    # a package made before packages carried their spec digest matches no spec
    assert choose_release([HeldRelease(4, "")], a, None)[0] == 5
    # a spec published earlier, but not the newest: the next one (Releases only go up)
    assert choose_release([HeldRelease(1, a), HeldRelease(2, b)], a, None)[0] == 3
    assert choose_release([HeldRelease(1, a), HeldRelease(2, b), HeldRelease(3, a)], a, None)[0] == 3
    assert choose_release([HeldRelease(5, c)], a, 7) == (7, "given")
    assert choose_release([HeldRelease(3, a)], a, 3) == (3, "given")
    assert choose_release([HeldRelease(1, a), HeldRelease(2, b)], a, 1) == (1, "given")
    with pytest.raises(UserError, match="lower than release 3"):
        choose_release([HeldRelease(3, a)], b, 2)
    # a given release names one package: not another one the channel holds
    with pytest.raises(UserError, match="release 3 of this version is published with another spec: give 4"):
        choose_release([HeldRelease(3, a)], b, 3)


def test_rustc_remaps_cargo_home_and_the_target_directory(tmp_path, demo_upstream):
    """What the demo does not show (its crates are vendored into the tree,
    its sources name no path): a crate from cargo's home and code generated
    into the target directory, both naming their file with file!(), built
    with the build stage's environment in two places."""
    from buildlib.pipeline.cargo import build_env
    from buildlib.run import run

    binaries = []
    for root in (tmp_path / "a", tmp_path / "elsewhere" / "b"):
        cfg = load(project(root, demo_upstream.path, root / "cache"))
        layout = Layout.of(cfg)
        home = root / "cargo-home"
        # a crates.io crate as cargo's home holds it (a directory source standing
        # in for the registry: the crate keeps its crates.io identity)
        dep = home / "registry" / "src" / "index.crates.io-0000" / "dep-1.0.0"
        tree = layout.source_tree("0" * 40)
        (dep / "src").mkdir(parents=True)
        (dep / "Cargo.toml").write_text('[package]\nname = "dep"\nversion = "1.0.0"\nedition = "2021"\n')
        (dep / "src" / "lib.rs").write_text("pub fn here() -> &'static str { file!() }\n")
        (dep / ".cargo-checksum.json").write_text('{"files": {}, "package": null}')
        (tree / "src").mkdir(parents=True)
        (tree / ".cargo").mkdir()
        (tree / ".cargo" / "config.toml").write_text(
            f'[source.crates-io]\nreplace-with = "home"\n[source.home]\ndirectory = "{dep.parent}"\n')
        (tree / "Cargo.toml").write_text(
            '[package]\nname = "probe"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\ndep = "1.0.0"\n')
        (tree / "build.rs").write_text(
            'fn main() {\n    let out = std::env::var("OUT_DIR").unwrap();\n'
            '    std::fs::write(format!("{out}/gen.rs"), "pub fn generated() -> &\'static str { file!() }\\n").unwrap();\n}\n')
        (tree / "src" / "main.rs").write_text(
            'include!(concat!(env!("OUT_DIR"), "/gen.rs"));\n'
            'fn main() { println!("{} {}", dep::here(), generated()); }\n')
        env = build_env(cfg, layout, cfg.flavour(FLAVOUR), 1700000000, home)
        env.pop("NVCC_APPEND_FLAGS")
        run(["cargo", "build", "--release", "--offline"], cwd=tree, env=env)
        binary = layout.target_dir(FLAVOUR) / "release" / "probe"
        printed = subprocess.run([binary], check=True, capture_output=True, text=True).stdout
        assert printed.startswith("/usr/src/cargo-home/registry/src/index.crates.io-0000/dep-1.0.0/src/lib.rs"
                                  " /usr/src/mistralrs-target/release/build/probe-"), printed
        assert repro.leaked_paths(binary, [str(root), str(home), str(layout.target_dir(FLAVOUR))]) == []
        binaries.append(binary)
    assert repro.first_binary_difference(*binaries) is None


@pytest.mark.slow
def test_the_channel_is_read_over_http(tmp_path, demo_upstream):
    """A remote target: the channel as users read it, publish.base_url over
    HTTP (a build job holds no upload key)."""
    import functools
    import http.server
    import threading

    from fixtures import fakerpm
    from buildlib.publish.held import held_releases

    site = tmp_path / "site"
    channel = site / "fedora" / "43" / "x86_64"
    channel.mkdir(parents=True)
    for release in ("1.fc43", "12.fc43"):
        fakerpm.build(channel, FLAVOUR, "0.9.2", release)
    fakerpm.build(channel, FLAVOUR, "0.9.3", "20.fc43")  # another version
    subprocess.run(["createrepo_c", "-q", str(channel)], check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host_key = "127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    try:
        config = project(tmp_path / "w", demo_upstream.path, tmp_path / "cache",
                         publish__target="mrpm@127.0.0.1:/srv/mistralrs-rpm", publish__host_key=host_key,
                         publish__base_url=f"http://127.0.0.1:{server.server_port}/", poll__retries=0,
                         poll__timeout=5)
        cfg = load(config)
        # packages made without the spec provide carry no digest
        assert held_releases(cfg, "mistralrs-ampere", "0.9.2") == [HeldRelease(1, ""), HeldRelease(12, "")]
        assert held_releases(cfg, "mistralrs-ampere", "0.9.4") == []
    finally:
        server.shutdown()
    with pytest.raises(ChannelUnreadable, match="cannot read channel stable at http://127.0.0.1:.*: the Release of"
                                                " mistralrs-ampere 0.9.2 follows what the channel holds"):
        held_releases(cfg, "mistralrs-ampere", "0.9.2")


def test_the_spec_template_sets_the_reproducible_macros():
    """Literal lines of the template (values passed in are escaped, and a
    macros file cannot override Debian's zeros): exactly repro.SPEC_MACROS."""
    from buildlib.layout import SPEC_TEMPLATE

    lines = [line for line in SPEC_TEMPLATE.read_text().splitlines()
             if re.match(r"%global (source_date_epoch_from_changelog|use_source_date_epoch_as_buildtime|"
                         r"clamp_mtime_to_source_date_epoch|build_mtime_policy|_buildhost) ", line)]
    assert "\n".join(lines) + "\n" == repro.spec_lines()


def build_record(**changes) -> BuildRecord:
    from dataclasses import replace
    from datetime import date, datetime, timezone

    from buildlib.pipeline.records import ChangelogEntry

    record = BuildRecord(
        source="cargo", ref="v0.9.2", commit="a" * 40, version="0.9.2", rpm_version="0.9.2", flavour=FLAVOUR,
        compute_cap=86, features=("cuda", "cudnn"), package="mistralrs-cli", binary_name="mistralrs",
        package_id="path+file:///one/src#mistralrs-cli@0.9.2", cargo_version="0.9.2",
        cargo_executable="/one/target/release/mistralrs", cargo_fresh=False, rustc="rustc 1.94.0", cargo="cargo 1.94.0",
        nvcc="13.0", rustflags="-C target-cpu=generic", sha256="b" * 64, size=1000, duration_s=60.0,
        built_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        changelog=(ChangelogEntry("0.9.2", "v0.9.2", date(2026, 1, 1), "a" * 40),), source_date_epoch=1767225600)
    return replace(record, **changes)


def test_differing_build_inputs_are_named():
    from buildlib.pipeline.rebuild import differing_inputs

    reference = build_record()
    # what came out, when and where is no input: the same inputs, whatever those say
    elsewhere = build_record(sha256="c" * 64, size=2000, duration_s=1.0, cargo_fresh=True,
                             package_id="path+file:///two/src#mistralrs-cli@0.9.2",
                             cargo_executable="/two/target/release/mistralrs")
    assert differing_inputs(reference, elsewhere) == ()
    rebuild = build_record(rustc="rustc 1.95.0", features=("cuda",), source_date_epoch=1767225601)
    assert differing_inputs(reference, rebuild) == (
        "features: ['cuda', 'cudnn'] != ['cuda']",
        "rustc: 'rustc 1.94.0' != 'rustc 1.95.0'",
        "source_date_epoch: 1767225600 != 1767225601",
    )


def packaged(tmp_path: Path, rebuild_check: str, ref: str = "v0.9.2"):
    """A config (build.rebuild_check as given) and the records of a packaged
    build of ref, without building: the rpm file is a stand-in."""
    from datetime import datetime, timezone

    from pipeline import project_config

    data = project_config()
    data["build"]["rebuild_check"] = rebuild_check
    data["upstream"]["ref"] = ref
    data["flavours"] = {FLAVOUR: data["flavours"][FLAVOUR]}
    cfg = load(write_config(tmp_path, data))
    layout = Layout.of(cfg)
    version = "0.9.2" if ref.startswith("v") else "0.9.2^20260101.3git" + ref[:7]
    build_record(ref=ref, rpm_version=version).write(layout)
    rpm_file = f"mistralrs-{FLAVOUR}-{version}-1.fc43.x86_64.rpm"
    layout.dist.mkdir(parents=True)
    (layout.dist / rpm_file).write_bytes(b"an rpm")
    RpmRecord(flavour=FLAVOUR, path=layout.dist / rpm_file, name=f"mistralrs-{FLAVOUR}", version=version,
              release="1.fc43", arch="x86_64", sha256="d" * 64, size=6, payload="w3T0.zstdio",
              payload_compressor="zstd", payload_flags="3T0", artifact_sha256="b" * 64, duration_s=1.0,
              built_at=datetime(2026, 1, 1, tzinfo=timezone.utc)).write(layout)
    return cfg, layout, rpm_file


def passed(layout: Layout, rpm_file: str, digest: str) -> None:
    from datetime import datetime, timezone

    from buildlib.pipeline.records import RebuildRecord

    RebuildRecord(flavour=FLAVOUR, rpm_file=rpm_file, rpm_sha256=digest, artifact_sha256="b" * 64, ref="v0.9.2",
                  commit="a" * 40, checked_at=datetime(2026, 1, 2, tzinfo=timezone.utc)).write(layout)


def test_publish_refuses_a_release_without_a_passing_rebuild_check(tmp_path, monkeypatch):
    import hashlib

    from buildlib.publish import publisher as publisher_module
    from buildlib.tasks import publish as publish_task

    published = []
    monkeypatch.setattr(publisher_module, "publish_dist", lambda cfg, layout, channel, *_, **__: published.append(channel) or {})
    cfg, layout, rpm_file = packaged(tmp_path / "on", "releases")
    with pytest.raises(UserError, match=rf"^{re.escape(rpm_file)} has no passing rebuild-check: run"
                                        rf" `doit rebuild-check:{FLAVOUR}` \(build\.rebuild_check = \"releases\"\)$"):
        publish_task._publish_dist(cfg, layout, None)
    # a pass of another package (an earlier build of the same name) does not count
    passed(layout, rpm_file, "e" * 64)
    with pytest.raises(UserError, match=rf"\.rebuilt\.json names another package than {re.escape(rpm_file)}"):
        publish_task._publish_dist(cfg, layout, None)
    assert published == []
    passed(layout, rpm_file, hashlib.sha256(b"an rpm").hexdigest())
    publish_task._publish_dist(cfg, layout, "stable")
    assert published == ["stable"]

    # off (the default): published without a rebuild-check
    cfg, layout, rpm_file = packaged(tmp_path / "off", "off")
    publish_task._publish_dist(cfg, layout, None)
    # on, but a snapshot: not a release, published without one
    cfg, layout, rpm_file = packaged(tmp_path / "snapshot", "releases", ref="c" * 40)
    publish_task._publish_dist(cfg, layout, None)
    assert published == ["stable", None, None]


def test_the_rpm_task_of_a_release_runs_the_rebuild_check_when_on(tmp_path, monkeypatch):
    from buildlib.pipeline import rebuild, rpmbuild
    from buildlib.tasks import package as package_task

    checked = []
    monkeypatch.setattr(rpmbuild, "build_rpm", lambda cfg, layout, flavour: layout.dist / "built.rpm")
    monkeypatch.setattr(rebuild, "check", lambda cfg, layout, flavour: checked.append(flavour.name) or {})
    for name, setting, ref, runs in (("on", "releases", "v0.9.2", True), ("off", "off", "v0.9.2", False),
                                     ("snapshot", "releases", "c" * 40, False)):
        cfg, layout, _ = packaged(tmp_path / name, setting, ref)
        checked.clear()
        package_task.build_rpm(cfg, layout, cfg.flavour(FLAVOUR))
        assert checked == ([FLAVOUR] if runs else []), name
    # the switch is part of the rpm task's settings only when on (off leaves saved states alone)
    assert "rebuild_check" not in package_task._rpm_settings(packaged(tmp_path / "s1", "off")[0])
    assert package_task._rpm_settings(packaged(tmp_path / "s2", "releases")[0])["rebuild_check"] == "releases"
