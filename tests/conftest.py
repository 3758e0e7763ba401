"""What the test modules share, made once per run: the demo upstream, the
cargo cache, signing keys, the stand-in base repository, the stand-in CUDA
libraries and an sshd for the upload user; and the test tiers.

Tiers (the markers are registered in pytest.ini): a test that takes seconds
says why by its marker, ``slow`` (a whole pipeline, a real build, gpg making
keys, a timeout run out) or ``services`` (it starts sshd, nginx, dnf in a
scratch root or Chromium).  ``pytest --fast`` (``scripts/test --fast``) runs
the unmarked rest, and there a test whose setup or call takes longer than
FAST_BUDGET_S fails, so an unmarked slow test is found the first time it
runs there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import services  # noqa: E402
from buildlib.demo.upstream import create_demo_repo  # noqa: E402
from pipeline import CUDA_SONAMES  # noqa: E402

FAST_BUDGET_S = 2.0
"""The most one test of the fast tier may take (setup or call).  A session
fixture's setup counts for the first test that asks for it: a test that
needs ``keys`` or ``demo_key`` (gpg making keys) is ``slow``."""
SLOW_MARKERS = ("slow", "services")
WHOLE_MODULES = {"test_workflow_run.py": "services", "test_cache_compile.py": "slow"}
"""Modules whose every test takes the marker: the workflow driver runs
whole CI workflows, the compile cache whole builds."""


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help=f"only the fast tier: no test marked {' or '.join(SLOW_MARKERS)}, "
                          f"each test within {FAST_BUDGET_S:g} s")


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = WHOLE_MODULES.get(item.path.name)
        if marker:
            item.add_marker(marker)
    if not config.getoption("fast"):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if any(item.get_closest_marker(m) for m in SLOW_MARKERS) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (item.config.getoption("fast") and report.when in ("setup", "call") and report.passed
            and report.duration > FAST_BUDGET_S):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} took {report.duration:.1f} s in {report.when}, over the fast tier's "
                           f"{FAST_BUDGET_S:g} s: make it faster or mark it {' or '.join(SLOW_MARKERS)}")


# --- made once per run ------------------------------------------------------


@pytest.fixture(scope="session")
def demo_upstream(tmp_path_factory):
    """The demo upstream as a local git repository, made once per run."""
    return create_demo_repo(tmp_path_factory.mktemp("upstream") / "mistralrs.rs")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache (mirror, cargo target dirs) for all tests: only the first
    build of a flavour compiles everything."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """Two signing keys: "main" with the passphrase in the file "passphrase",
    "other" (another name, no passphrase); each a (key file, fingerprint)."""
    from buildlib.publish import signing

    d = tmp_path_factory.mktemp("keys")
    main = signing.make_demo_key(d / "main", passphrase="correct horse")
    other = signing.make_demo_key(d / "other", name="someone else")
    (d / "passphrase").write_text("correct horse\n")
    return {"main": main, "other": other, "passphrase": d / "passphrase"}


@pytest.fixture(scope="session")
def demo_key(tmp_path_factory):
    """A signing key without a passphrase, as the demo makes one: (key file, fingerprint)."""
    from buildlib.publish import signing

    return signing.make_demo_key(tmp_path_factory.mktemp("demo-key"))


@pytest.fixture(scope="session")
def base_repo(tmp_path_factory):
    """An unsigned local repository standing in for Fedora and NVIDIA's."""
    from fixtures import fakerpm

    d = tmp_path_factory.mktemp("base")
    fakerpm.build_base(d)
    subprocess.run(["createrepo_c", "-q", str(d)], check=True)
    return d


@pytest.fixture(scope="session")
def pkg_libs(tmp_path_factory) -> Path:
    """Stand-ins for the CUDA runtime and driver libraries, by soname."""
    libs = tmp_path_factory.mktemp("cuda-libs")
    for soname in (*CUDA_SONAMES, "libcuda.so.1"):
        symbol = re.sub(r"\W", "_", soname)
        (libs / f"{symbol}.c").write_text(f"int {symbol}(void) {{ return 0; }}\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", libs / soname, f"-Wl,-soname,{soname}", libs / f"{symbol}.c"],
                       check=True)
    return libs


# --- the repository host over SSH ---------------------------------------------


@pytest.fixture(scope="session")
def upload_sshd():
    """One sshd for the run; each test that logs in gets its own client key
    and forced command (sshd reads authorized_keys at every login)."""
    reason = services.skip_reason_sshd()
    if reason:
        pytest.skip(reason)
    with services.sshd() as sshd:
        yield sshd


@pytest.fixture
def repo_host(tmp_path_factory, upload_sshd):
    """A fresh repository host: ``scripts/repo-shell`` as the forced command
    of a new key, for a new empty directory ``srv`` the upload user owns,
    beside ``outside`` (the upload user's too).  Yields (sshd, top), sshd
    naming this test's client key."""
    top = Path(services.tempfile.mkdtemp(prefix="mrpm-host-"))
    os.chmod(top, 0o755)
    shell = top / "repo-shell"
    shutil.copy(services.PROJECT / "scripts" / "repo-shell", shell)
    os.chmod(shell, 0o755)
    services.give_to(top / "srv")
    try:
        with services.login_for(upload_sshd, top, [str(shell), str(top / "srv")]) as sshd:
            yield sshd, top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def remote(repo_host):
    """(sshd, repository root) of a fresh repository host."""
    sshd, top = repo_host
    yield sshd, top / "srv"
