"""Licenses and bundled provides, computed from a real ``cargo metadata`` of a
small vendored workspace (tests/fixtures/bundled-ws):

    demo-app 0.3.0 (MIT, the packaged crate; feature "extra")
    ├── demo-helper 0.3.0 (Apache-2.0, workspace member)
    │   ├── bsd-thing, dual-lic
    ├── dual-lic 1.2.0 (MIT OR Apache-2.0)
    ├── slashy 0.4.1 ("MIT/Apache-2.0", cargo's legacy form)
    ├── bsd-thing 2.0.0 (BSD-3-Clause; optional feat-only, EPL-2.0, feature "more")
    ├── licfile-only 0.1.0 (license-file only)
    ├── prerel 1.0.0-beta.2 (Apache-2.0)
    ├── gitdep 0.9.0 (Apache-2.0 WITH LLVM-exception, git)
    ├── opt-extra 1.0.0 (ISC, only with feature "extra")
    ├── derive-pm 1.0.0 (MPL-2.0, proc-macro) -> pm-support (0BSD), bsd-thing
    ├── win-only 0.1.0 (GPL-3.0-only, cfg(windows))
    ├── [build] builddep 0.5.0 (Zlib)
    └── [dev] devdep 3.0.0 (Unlicense)
    demo-unused 0.3.0 (GPL-2.0-only, workspace member nobody depends on;
                       turns on bsd-thing's feature "more")
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from buildlib.pipeline import bundled
from buildlib.config import ConfigError, parse_bundled
from buildlib.run import UserError
from buildlib.spdx import combine, spdx_problem

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bundled-ws"
GIT = "https://example.invalid/gitdep.git?rev=5e1f0c2a9b7d4e3f8a6c1b2d3e4f5a6b7c8d9e0f#5e1f0c2a"
EXCLUDED = (
    "derive-pm", "pm-support", "builddep", "devdep", "win-only", "demo-unused", "feat-only",
    "MPL-2.0", "0BSD", "Zlib", "Unlicense", "GPL", "EPL",
)

CONFIG = {
    "crate_license": [{"name": "licfile-only", "version": "0.1.0", "license": "BSL-1.0"}],
    "bundled": [
        {"name": "cutlass", "version": "3.9.2", "license": "BSD-3-Clause", "url": "https://github.com/NVIDIA/cutlass", "commit": "ad7b2f5e84fcfa124cb02b91d5bd26d238c0459e",
         "evidence": {"path": "kernels/SOURCES.txt", "contains": "ad7b2f5e84fcfa124cb02b91d5bd26d238c0459e"}},
        {"name": "flash-kernels", "version": "0^20250101git1a2b3c4", "license": "BSD-3-Clause AND Apache-2.0", "url": "https://example.org/flash-kernels",
         "evidence": {"path": "kernels/flash"}},
    ],
}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A copy of the fixture at a path of its own, with an empty CARGO_HOME:
    nothing may come from this machine's cargo cache or the network."""
    ws = tmp_path / "some checkout" / "ws"
    shutil.copytree(FIXTURE, ws)
    monkeypatch.setenv("CARGO_HOME", str(tmp_path / "cargo-home"))
    return ws


def collect(ws, features=("extra",), config=CONFIG):
    return bundled.collect(ws, "demo-app", features, parse_bundled(config))


def test_license_tag_is_the_hand_derived_expression(workspace):
    bundle = collect(workspace)
    # Linked: MIT (demo-app), Apache-2.0 (demo-helper, prerel), MIT OR
    # Apache-2.0 (dual-lic, slashy), BSD-3-Clause (bsd-thing, cutlass),
    # BSL-1.0 (licfile-only, from config), Apache-2.0 WITH LLVM-exception
    # (gitdep), ISC (opt-extra), BSD-3-Clause AND Apache-2.0 (flash-kernels).
    assert bundle.license == (
        "Apache-2.0 AND (MIT OR Apache-2.0) AND Apache-2.0 WITH LLVM-exception"
        " AND BSD-3-Clause AND BSL-1.0 AND ISC AND MIT"
    )
    assert spdx_problem(bundle.license) == ""


def test_features_decide_what_is_linked(workspace):
    without = collect(workspace, features=())
    assert "ISC" not in without.license
    assert "opt-extra" not in without.vendor_manifest()
    assert "opt-extra v1.0.0\n" in collect(workspace).vendor_manifest()


def test_license_dependencies_in_cargo2rpm_format(workspace):
    assert collect(workspace).license_dependencies() == (
        f"Apache-2.0 WITH LLVM-exception: gitdep v0.9.0 ({GIT})\n"
        "Apache-2.0: demo-helper v0.3.0\n"
        "Apache-2.0: prerel v1.0.0-beta.2\n"
        "BSD-3-Clause AND Apache-2.0: flash-kernels v0^20250101git1a2b3c4 (https://example.org/flash-kernels)\n"
        "BSD-3-Clause: bsd-thing v2.0.0\n"
        "BSD-3-Clause: cutlass v3.9.2 (https://github.com/NVIDIA/cutlass#ad7b2f5e84fcfa124cb02b91d5bd26d238c0459e)\n"
        "BSL-1.0: licfile-only v0.1.0\n"
        "ISC: opt-extra v1.0.0\n"
        "MIT OR Apache-2.0: dual-lic v1.2.0\n"
        "MIT OR Apache-2.0: slashy v0.4.1\n"
        "MIT: demo-app v0.3.0\n"
    )


def test_vendor_manifest_and_provides(workspace):
    bundle = collect(workspace)
    assert bundle.vendor_manifest() == (
        "bsd-thing v2.0.0\n"
        "dual-lic v1.2.0\n"
        f"gitdep v0.9.0 ({GIT})\n"
        "licfile-only v0.1.0\n"
        "opt-extra v1.0.0\n"
        "prerel v1.0.0-beta.2\n"
        "slashy v0.4.1\n"
    )
    # Versions as Fedora's generator writes them from cargo-vendor.txt:
    # pre-release after "~", git ones "+git<commit8>".
    assert bundle.provides() == (
        "bundled(crate(bsd-thing)) = 2.0.0",
        "bundled(crate(dual-lic)) = 1.2.0",
        "bundled(crate(gitdep)) = 0.9.0+git5e1f0c2a",
        "bundled(crate(licfile-only)) = 0.1.0",
        "bundled(crate(opt-extra)) = 1.0.0",
        "bundled(crate(prerel)) = 1.0.0~beta.2",
        "bundled(crate(slashy)) = 0.4.1",
        "bundled(cutlass) = 3.9.2",
        "bundled(flash-kernels) = 0^20250101git1a2b3c4",
    )


def test_excluded_edges_leave_no_trace(workspace):
    bundle = collect(workspace)
    text = "\n".join([bundle.license, bundle.license_dependencies(), bundle.vendor_manifest(), *bundle.provides()])
    for name in EXCLUDED:
        assert name not in text
    assert {c.name for c in bundle.crates} == {
        "demo-app", "demo-helper", "bsd-thing", "dual-lic", "slashy", "licfile-only", "prerel", "gitdep", "opt-extra",
    }


def test_features_of_other_members_do_not_count(workspace):
    # cargo metadata resolves the whole workspace: demo-unused's feature
    # "more" makes bsd-thing depend on feat-only there ...
    metadata = bundled.cargo_metadata(workspace, "demo-app", ["extra"])
    node = next(n for n in metadata["resolve"]["nodes"] if "#bsd-thing@" in n["id"])
    assert [d["name"] for d in node["deps"]] == ["feat_only"]
    # ... but cargo build -p demo-app does not link it.
    bundle = collect(workspace)
    assert "feat-only" not in bundle.vendor_manifest() and "EPL" not in bundle.license
    assert dict(bundle.edges)["bsd-thing@2.0.0"] == ()


def _cargo_tree(ws, fmt):
    """cargo2rpm's own query (cargo tree --edges=no-build,no-dev,no-proc-macro),
    for this target instead of all targets."""
    argv = ["cargo", "tree", "--offline", "--locked", "-p", "demo-app", "--features", "extra",
            "--edges=no-build,no-dev,no-proc-macro", "--target", bundled.TARGET, "--prefix=none", "--format", fmt]
    out = subprocess.run(argv, cwd=ws, check=True, capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if line and not line.endswith(" (*)")}


def test_agrees_with_cargo_tree_as_cargo2rpm_runs_it(workspace):
    bundle = collect(workspace, config={"crate_license": CONFIG["crate_license"]})
    # The packages: everything cargo tree shows, path packages shown without their path.
    tree = {re.sub(r" \(/[^)]*\)$", "", line) for line in _cargo_tree(workspace, "{p}")}
    assert tree == {c.display() for c in bundle.crates}
    # The license lines, with cargo2rpm's rewriting of "/" to " OR " (which
    # cargo2rpm also applies to a git URL in the line; we don't); cargo tree
    # has no license for the license-file-only crate, which config declares.
    expected = set()
    for line in _cargo_tree(workspace, "{l}: {p}"):
        license, pkg = re.sub(r" \(/[^)]*\)$", "", line).split(": ", 1)
        license = license.replace(" / ", "/").replace("/", " OR ") or ("BSL-1.0" if pkg == "licfile-only v0.1.0" else "")
        expected.add(f"{license}: {pkg}")
    assert set(bundle.license_dependencies().splitlines()) == expected


def test_license_file_only_crate_needs_a_declared_license(workspace):
    with pytest.raises(UserError) as err:
        collect(workspace, config={})
    message = str(err.value)
    assert "\n" not in message
    assert "crate licfile-only v0.1.0 declares no SPDX license, only a license file (LICENSE.txt)" in message
    assert '[[crate_license]] name = "licfile-only", version = "0.1.0"' in message


def test_declared_license_is_for_one_version_only(workspace):
    stale = {"crate_license": [{"name": "licfile-only", "version": "0.0.9", "license": "BSL-1.0"}]}
    with pytest.raises(UserError, match="crate licfile-only v0.1.0 declares no SPDX license"):
        collect(workspace, config=stale)


@pytest.mark.parametrize(
    "license, problem",
    [
        ("MIT/Foo-Custom", "unknown license Foo-Custom"),
        ("MIT OR", "not an SPDX expression"),
        ("Apache-2.0 WITH MIT", "not an SPDX expression"),
    ],
)
def test_non_spdx_license_is_refused_naming_the_crate(workspace, license, problem):
    manifest = workspace / "vendor" / "slashy" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('license = "MIT/Apache-2.0"', f'license = "{license}"'))
    with pytest.raises(UserError) as err:
        collect(workspace)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"crate slashy v0.4.1 declares license {license!r}: {problem}")
    assert '[[crate_license]] name = "slashy", version = "0.4.1"' in message


def test_declared_license_overrides_a_wrong_one(workspace):
    manifest = workspace / "vendor" / "slashy" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('license = "MIT/Apache-2.0"', 'license = "MIT/Foo-Custom"'))
    config = {"crate_license": CONFIG["crate_license"] + [{"name": "slashy", "version": "0.4.1", "license": "MIT"}]}
    bundle = collect(workspace, config=config)
    assert "MIT: slashy v0.4.1\n" in bundle.license_dependencies()
    assert next(c for c in bundle.crates if c.name == "slashy").license_from_config


def test_unknown_package_is_refused(workspace):
    with pytest.raises(UserError, match=r"package 'nope' is not a member of the workspace \(members: demo-app, demo-helper, demo-unused\)"):
        bundled.collect(workspace, "nope", (), parse_bundled(CONFIG))


def test_lock_file_is_required_as_is(workspace):
    lock = workspace / "Cargo.lock"
    lock.write_text(lock.read_text().replace('name = "prerel"\nversion = "1.0.0-beta.2"', 'name = "prerel"\nversion = "1.0.0-beta.1"'))
    with pytest.raises(UserError, match="cargo metadata --locked --offline"):
        collect(workspace)


def test_license_texts_are_the_crates_own_files(workspace, tmp_path):
    bundle = collect(workspace)
    written = bundled.write_license_files(bundle, tmp_path / "out")
    assert set(written.texts) == {
        "LICENSE",  # upstream's own, from the workspace root
        "crates/bsd-thing-2.0.0/LICENSE",
        "crates/demo-app-0.3.0/LICENSE",
        "crates/dual-lic-1.2.0/LICENSE-APACHE",
        "crates/dual-lic-1.2.0/LICENSE-MIT",
        "crates/gitdep-0.9.0+git5e1f0c2a/LICENSE",
        "crates/licfile-only-0.1.0/LICENSE.txt",
        "crates/opt-extra-1.0.0/LICENSE",
        "crates/prerel-1.0.0-beta.2/NOTICE",
        "crates/slashy-0.4.1/LICENSE-MIT",
    }
    out = tmp_path / "out"
    assert (out / "LICENSE").read_bytes() == (FIXTURE / "LICENSE").read_bytes()
    assert (out / "crates/licfile-only-0.1.0/LICENSE.txt").read_text() == "licfile-only: Boost Software License text\n"
    assert (out / "LICENSE.dependencies").read_text() == bundle.license_dependencies()
    assert (out / "cargo-vendor.txt").read_text() == bundle.vendor_manifest()
    # nothing of the excluded crates (builddep ships COPYING, pm-support LICENSE)
    assert not any("builddep" in t or "pm-support" in t for t in written.texts)


def test_results_do_not_depend_on_the_checkout_path(workspace, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    shutil.copytree(workspace, other)
    a, b = collect(workspace), collect(other)
    assert (a.license, a.license_dependencies(), a.vendor_manifest(), a.provides()) == (
        b.license, b.license_dependencies(), b.vendor_manifest(), b.provides())
    assert str(tmp_path) not in a.license_dependencies() + a.vendor_manifest()


def test_combine_keeps_choices_and_drops_only_duplicates():
    assert combine(["MIT", "MIT OR Apache-2.0"]) == "(MIT OR Apache-2.0) AND MIT"
    assert combine(["MIT OR Apache-2.0", "Apache-2.0 OR MIT", "mit"]) == "(Apache-2.0 OR MIT) AND MIT"
    assert combine(["MIT AND Zlib", "Zlib"]) == "MIT AND Zlib"
    assert combine(["GPL-2.0-only WITH Classpath-exception-2.0", "GPL-2.0-only"]) == (
        "GPL-2.0-only AND GPL-2.0-only WITH Classpath-exception-2.0")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "cutlass", "version": "3.9.2", "license": "BSD-3-Clause", "url": "https://x.org/c", "commit": "abc"},
         'bundled[0].commit = "abc": expected a full 40-hex commit id'),
        ({"name": "cutlass", "version": "3.9.2", "license": "BSD-3", "url": "https://x.org/c"},
         'bundled[0].license = "BSD-3": unknown license BSD-3'),
        ({"name": "cutlass", "version": "3.9 2", "license": "MIT", "url": "https://x.org/c"},
         'bundled[0].version = "3.9 2": expected an rpm version'),
        ({"name": "cutlass", "version": "3.9.2", "license": "MIT", "url": "https://x.org/c; rm -rf /"},
         "bundled[0].url"),
        ({"name": "cutlass", "version": "3.9.2", "license": "MIT", "url": "https://x.org/c", "licence": "MIT"},
         "unknown key bundled[0].licence; did you mean 'license'?"),
    ],
)
def test_bundled_config_errors_name_the_key(entry, message):
    with pytest.raises(ConfigError) as err:
        parse_bundled({"bundled": [{**entry, "evidence": {"path": "build.rs"}}]})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_crate_license_config_errors():
    with pytest.raises(ConfigError, match=r'crate_license\[0\].version = "0.1": expected the crate\'s exact version'):
        parse_bundled({"crate_license": [{"name": "x", "version": "0.1", "license": "MIT"}]})
    with pytest.raises(ConfigError, match="crate_license: x 0.1.0 is declared twice"):
        entry = {"name": "x", "version": "0.1.0", "license": "MIT"}
        parse_bundled({"crate_license": [entry, entry]})
    with pytest.raises(ConfigError, match=r"bundled = \"cutlass\": expected an array of tables"):
        parse_bundled({"bundled": "cutlass"})


def _library_verdict(text: str) -> bool:
    from buildlib.spdx import _licensing

    try:
        return not _licensing().validate(text, strict=True).errors
    except Exception:
        return False


@pytest.mark.parametrize("text", ["MIT", "Apache-2.0 OR MIT", "MIT AND BSD-3-Clause OR Zlib", "Foo-Custom",
                                  "MIT OR Foo-Custom", "MIT OR", "AND MIT", "LLVM-exception",
                                  "Apache-2.0 WITH LLVM-exception", "GPL-2.0", "mit"])
def test_the_config_shortcut_gives_the_libraries_verdict(text):
    """config.toml's plain license lists skip loading license-expression; the
    verdict is the library's all the same."""
    from buildlib import spdx

    spdx.spdx_problem.cache_clear()
    assert (spdx.spdx_problem(text) == "") == _library_verdict(text)


def test_every_id_the_shortcut_knows_is_one_the_library_accepts():
    from buildlib import spdx

    ids = spdx._plain_ids()
    assert {"MIT", "Apache-2.0", "BSD-3-Clause"} <= ids  # the shipped list was found
    assert "LLVM-exception" not in ids  # exceptions stand only after WITH
    assert all(_library_verdict(i) for i in sorted(ids))


# --- files named by upstream stay inside their crate (issue 16, item 1) ---------------

SECRET = "host-secret-7f3a9c1e"


def _license_file(workspace: Path, value: str) -> None:
    """licfile-only's Cargo.toml naming another license file."""
    manifest = workspace / "vendor" / "licfile-only" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('license-file = "LICENSE.txt"', f'license-file = "{value}"'))


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file of the build host, outside every crate."""
    path = tmp_path / "host" / "secret.txt"
    path.parent.mkdir()
    path.write_text(f"{SECRET}\n")
    return path


def _refused(workspace, *texts):
    with pytest.raises(UserError) as err:
        collect(workspace)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("crate licfile-only v0.1.0: ")
    for text in texts:
        assert text in message
    return message


def test_license_file_escaping_by_dot_dot_is_refused(workspace, secret):
    crate = workspace / "vendor" / "licfile-only"
    relative = os.path.relpath(secret, crate)
    assert relative.startswith("../")
    _license_file(workspace, relative)
    _refused(workspace, relative, "outside")


def test_license_file_with_an_absolute_path_is_refused(workspace, secret):
    _license_file(workspace, str(secret))
    _refused(workspace, str(secret), "outside")


def test_license_file_through_a_symlinked_directory_is_refused(workspace, secret):
    (workspace / "vendor" / "licfile-only" / "legal").symlink_to(secret.parent, target_is_directory=True)
    _license_file(workspace, "legal/secret.txt")
    _refused(workspace, "legal/secret.txt", "outside")


def test_license_named_file_that_links_outside_is_refused(workspace, secret):
    (workspace / "vendor" / "dual-lic" / "LICENSE-BSD").symlink_to(secret)
    with pytest.raises(UserError, match=r"^crate dual-lic v1\.2\.0: .*LICENSE-BSD resolves to .*outside"):
        collect(workspace)


def test_a_fifo_license_is_refused_without_blocking(workspace):
    os.mkfifo(workspace / "vendor" / "dual-lic" / "LICENSE-FIFO")
    with pytest.raises(UserError, match=r"^crate dual-lic v1\.2\.0: .*LICENSE-FIFO is not a regular file"):
        collect(workspace)
    # and read_contained, handed one directly, does not wait for a writer either
    with pytest.raises(UserError, match="is not a regular file"):
        bundled.read_contained(workspace / "vendor" / "dual-lic" / "LICENSE-FIFO", workspace, "x")


def test_an_oversized_license_is_refused(workspace, tmp_path):
    big = workspace / "vendor" / "licfile-only" / "LICENSE.txt"
    big.write_bytes(b"x" * (bundled.UPSTREAM_FILE_LIMIT + 1))
    bundle = collect(workspace)
    with pytest.raises(UserError, match=r"^crate licfile-only v0\.1\.0: .*LICENSE\.txt is larger than 1024 KiB"):
        bundled.write_license_files(bundle, tmp_path / "out")


def test_a_license_swapped_for_a_symlink_after_the_check_is_refused(workspace, tmp_path, secret):
    bundle = collect(workspace)
    license = workspace / "vendor" / "licfile-only" / "LICENSE.txt"
    license.unlink()
    license.symlink_to(secret)
    with pytest.raises(UserError, match="outside"):
        bundled.write_license_files(bundle, tmp_path / "out")


# --- refusals in words (item 3) --------------------------------------------------------


def test_a_malformed_license_is_refused_with_the_reason(workspace):
    manifest = workspace / "vendor" / "slashy" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('license = "MIT/Apache-2.0"', 'license = "MIT OR %(touch x)"'))
    with pytest.raises(UserError) as err:
        collect(workspace)
    message = str(err.value)
    assert message.startswith("crate slashy v0.4.1 declares license 'MIT OR %(touch x)': not an SPDX expression:"
                              " stray character '%' at position 8;")
    assert "token_string" not in message and "\n" not in message


@pytest.mark.parametrize("text, reason", [
    ("MIT OR", "'OR' at the end has no license after it"),
    ("AND MIT", "'AND' at position 1 has no license before it"),
    ("(MIT OR Apache-2.0", "unbalanced parenthesis: 1 '(' never closed"),
    ("MIT OR Apache-2.0)", "unbalanced parenthesis: ')' at position 18 closes nothing"),
    ("MIT Apache-2.0", "'Apache-2.0' at position 5 follows 'MIT' without AND, OR or WITH between them"),
    ("MIT OR ()", "empty parentheses before position 9"),
    ("MIT;Zlib", "stray character ';' at position 4"),
])
def test_spdx_problems_are_said_in_words(text, reason):
    assert spdx_problem(text) == f"not an SPDX expression: {reason}"


def test_a_crate_with_neither_license_nor_license_file_has_its_own_message(workspace):
    manifest = workspace / "vendor" / "licfile-only" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('license-file = "LICENSE.txt"\n', ""))
    with pytest.raises(UserError) as err:
        collect(workspace, config={})
    message = str(err.value)
    assert message.startswith("crate licfile-only v0.1.0 declares neither a license nor a license file;")
    assert "only a license file" not in message
    assert '[[crate_license]] name = "licfile-only", version = "0.1.0"' in message


# --- provenance from the tree (item 8) ------------------------------------------------


def test_a_component_without_its_evidence_is_left_out(workspace, capsys):
    (workspace / "kernels" / "SOURCES.txt").write_text("CUTLASS is no longer used\n")
    bundle = collect(workspace)
    assert [c.name for c in bundle.components] == ["flash-kernels"]
    assert not any("cutlass" in p for p in bundle.provides())
    assert "cutlass" not in bundle.license_dependencies()
    assert "left out bundled component cutlass: kernels/SOURCES.txt does not contain" in capsys.readouterr().err
    shutil.rmtree(workspace / "kernels" / "flash")
    assert collect(workspace).components == ()
    assert "left out bundled component flash-kernels: upstream's tree has no kernels/flash" in capsys.readouterr().err


def test_evidence_through_a_symlink_out_of_the_tree_is_refused(workspace, secret):
    shutil.rmtree(workspace / "kernels")
    (workspace / "kernels").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(UserError, match=r"^bundled component cutlass's evidence: .*resolves to .*outside"):
        collect(workspace)


def test_upstream_license_is_the_packaged_crates_license_file(workspace, tmp_path):
    (workspace / "app" / "COPYING.app").write_text("the app's own terms\n")
    manifest = workspace / "app" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('license = "MIT"', 'license = "MIT"\nlicense-file = "COPYING.app"'))
    bundle = collect(workspace)
    assert [p.name for p in bundle.upstream_licenses] == ["COPYING.app"]
    bundled.write_license_files(bundle, tmp_path / "out")
    assert (tmp_path / "out" / "COPYING.app").read_text() == "the app's own terms\n"


def test_a_tree_without_a_license_text_is_refused(workspace):
    (workspace / "LICENSE").unlink()
    with pytest.raises(UserError, match=r"^upstream's tree has no license text: demo-app names no license-file and"
                                        r" the workspace root \(.*\) holds no LICENSE\* or COPYING\* file\Z"):
        collect(workspace)


def test_a_path_crate_outside_the_tree_is_refused(workspace, tmp_path):
    outside = tmp_path / "elsewhere-helper"
    shutil.move(workspace / "helper", outside)
    manifest = workspace / "app" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('path = "../helper"', f'path = "{outside}"'))
    root = workspace / "Cargo.toml"
    root.write_text(root.read_text().replace('"helper", ', ""))
    with pytest.raises(UserError, match=r"crate demo-helper v0\.3\.0: a path crate at .*, outside upstream's tree"):
        bundled.collect(workspace, "demo-app", ("extra",), parse_bundled(CONFIG))
