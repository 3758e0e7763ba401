"""Prereleases end to end, with the real tools on the demo upstream: doit
builds snapshots of master (MRPM_REF = a 40-hex commit), packages them,
publishes them to the unstable channel only, in commit order; a release
built into the same repository goes to stable only; dnf installs from the
repository served by nginx, with package and metadata signatures checked.

The demo upstream is cloned into the test's directory, so that a new commit
on master leaves the session's demo repository alone.  Two flavours, fast
zstd payload; the cache (mirror, cargo target directories) is the session's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

import services
from buildlib.publish import repodata, rpms, signing
from buildlib import config as configmod
from buildlib.demo.driver import FEDORA_BASE
from buildlib.layout import Layout
from buildlib.demo.localrepo import build_standin_repo
from pipeline import demo_config, git, label_compare, ran, run_doit, vercmp, write_config

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("git", "cargo", "nvcc", "rpmbuild", "rpmsign", "createrepo_c", "rsync",
                                          "gpg", "dnf"))
    or services.skip_reason_nginx() is not None,
    reason="needs git, cargo, nvcc, rpm-build, rpmsign, createrepo_c, rsync, gpg, dnf and nginx (scripts/bootstrap)",
)

FLAVOURS = ("ampere", "hopper")
LAST_RELEASE = "0.9.2"
NEXT = ("0.9.3~rc1", "0.9.3")
PACKAGE_TASKS = ("fetch", "build", "verify", "spec", "rpm")


def channel_dir(target: Path, subdir: str = "") -> Path:
    return target / "fedora" / "43" / "x86_64" / subdir


def published(target: Path, subdir: str = "") -> dict[str, str]:
    """href -> EVR of what a channel's signed metadata lists."""
    md = repodata.read_metadata(channel_dir(target, subdir) / "repodata")
    return {href: p.evr for href, p in md.packages.items()}


def rpm_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.rpm"))


def build_and_publish(config: Path, ref: str, *publish_args: str) -> str:
    """doit fetch build verify spec rpm, then doit publish; returns what the build printed."""
    rc, results, built = run_doit(config, *PACKAGE_TASKS, env={"MRPM_REF": ref})
    assert rc == 0, built
    assert {f"rpm:{f}" for f in FLAVOURS} <= ran(results), results
    cargo = [line for line in built.splitlines() if line.startswith("+ cargo build")]
    assert cargo, built
    # releases build with the lock file as upstream tagged it; snapshots without
    assert all(("--locked" in line) == ref.startswith("v") for line in cargo), cargo
    rc, results, out = run_doit(config, "publish", *publish_args, env={"MRPM_REF": ref})
    assert rc == 0 and results.get("publish") == "success", out
    # publish stages; the flavours here have gate = "off", so promote takes them untested
    channel = "unstable" if not ref.startswith("v") else "stable"
    rc, results, out = run_doit(config, "promote", "--channel", channel, env={"MRPM_REF": ref})
    assert rc == 0 and results.get("promote") == "success", out
    return built


def rpm_version(config: Path, ref: str, flavour: str) -> str:
    """The RPM version a build of ref got (from the build record)."""
    layout = Layout.of(configmod.load(config))
    record = json.loads(layout.build_record(flavour).read_text())
    assert record["ref"] == ref
    return record["rpm_version"]


def dnf_root(tmp: Path, url: str, cfg, flavour: str, rpm: Path) -> services.DnfRoot:
    """A scratch root whose repositories are the published .repo file (as a
    user fetches it) and a stand-in for Fedora and NVIDIA's."""
    requires = subprocess.run(["rpm", "-qp", "--requires", str(rpm)], check=True, capture_output=True,
                              text=True).stdout.splitlines()
    nvidia = cfg.package.requires_for(cfg.flavour(flavour).features(cfg.build))
    standin = build_standin_repo(tmp / "standin", sorted({r for r in requires if FEDORA_BASE.match(r)} | set(nvidia)))
    repo_file = requests.get(f"{url}/mistralrs.repo", timeout=10)
    repo_file.raise_for_status()
    return services.make_dnf_root(tmp / "dnf", repo_file.text, standin)


def commit_day(repo_dir: Path, commit: str) -> str:
    """YYYYMMDD of a commit's committer date, in UTC (as a snapshot version has it)."""
    from datetime import datetime, timezone

    when = datetime.fromisoformat(git(repo_dir, "show", "-s", "--format=%cI", commit))
    return f"{when.astimezone(timezone.utc):%Y%m%d}"


def installed_version(root: services.DnfRoot, name: str) -> str:
    proc = root.dnf("repoquery", "--installed", "--qf", "%{version}-%{release}", name, check=True)
    (line,) = [line for line in proc.stdout.splitlines() if line.strip()]
    return line.strip()


@pytest.mark.services
def test_snapshots_publish_to_unstable_in_commit_order_and_a_release_to_stable(tmp_path, demo_upstream,
                                                                               shared_cache, demo_key):
    # upstream: a clone of the demo, so that master can move here only
    upstream = tmp_path / "upstream"
    subprocess.run(["git", "clone", "--quiet", "--", str(demo_upstream.path), str(upstream)], check=True)
    head1 = git(upstream, "rev-parse", "master")
    assert head1 == demo_upstream.head and re.fullmatch(r"[0-9a-f]{40}", head1)

    key_file, fingerprint = demo_key
    target = tmp_path / "srv"
    target.mkdir()
    work = tmp_path / "work"
    with services.nginx(target) as url:
        data = demo_config(work, upstream, shared_cache, flavours=FLAVOURS, gate="off", publish__target=str(target),
                           publish__base_url=url, publish__key_file=str(key_file))
        config = write_config(work, data)
        cfg = configmod.load(config)
        dist = Layout.of(cfg).dist

        # --- the first snapshot: master as the demo made it -----------------
        build_and_publish(config, head1)
        v1 = rpm_version(config, head1, "ampere")
        day1 = commit_day(upstream, head1)
        # <last tag>^<commit's day>.<commits since the tag>git<sha7>
        assert v1 == f"{LAST_RELEASE}^{day1}.2git{head1[:7]}", v1
        assert all(rpm_version(config, head1, f) == v1 for f in FLAVOURS)
        snap1 = {f"mistralrs-{f}-{v1}-1.fc43.x86_64.rpm" for f in FLAVOURS}
        assert set(rpm_files(dist)) == snap1
        # unstable only: the stable channel has neither files nor metadata entries
        assert set(published(target, "unstable")) == snap1
        assert set(rpm_files(channel_dir(target, "unstable"))) == snap1
        assert published(target) == {} and rpm_files(channel_dir(target)) == []
        signing.verify_repomd((target / signing.KEY_FILE_NAME).read_text(), fingerprint,
                              channel_dir(target, "unstable") / "repodata")

        # between the last release and the next, by rpm's own comparison
        assert vercmp(LAST_RELEASE, v1) == -1 and vercmp(v1, LAST_RELEASE) == 1
        for later in NEXT:
            assert vercmp(v1, later) == -1 and vercmp(later, v1) == 1
        # ... and as dnf sees whole EVRs
        assert label_compare(("0", LAST_RELEASE, "1.fc43"), ("0", v1, "1.fc43")) == -1
        assert label_compare(("0", v1, "1.fc43"), ("0", NEXT[0], "1.fc43")) == -1

        # --- the second snapshot: one more commit on master (same day) ------
        (upstream / "README.md").write_text((upstream / "README.md").read_text() + "\nA later change.\n")
        # six hours after the demo's last commit: the same day, so the commit count decides
        git(upstream, "commit", "--quiet", "--no-verify", "-am", "README: a later change",
            date="2025-03-06T18:00:00+00:00")
        head2 = git(upstream, "rev-parse", "master")
        assert head2 != head1 and git(upstream, "rev-parse", "master~1") == head1
        assert git(demo_upstream.path, "rev-parse", "master") == head1  # the session's demo is untouched

        build_and_publish(config, head2, "--channel", "unstable")
        v2 = rpm_version(config, head2, "ampere")
        # the same day as the first: the count orders them
        assert commit_day(upstream, head2) == day1 and v2 == f"{LAST_RELEASE}^{day1}.3git{head2[:7]}", v2
        snap2 = {f"mistralrs-{f}-{v2}-1.fc43.x86_64.rpm" for f in FLAVOURS}
        assert set(published(target, "unstable")) == snap1 | snap2
        assert set(rpm_files(channel_dir(target, "unstable"))) == snap1 | snap2
        assert published(target) == {} and rpm_files(channel_dir(target)) == []
        # commit order is version order
        assert vercmp(v1, v2) == -1 and vercmp(v2, v1) == 1
        assert vercmp(LAST_RELEASE, v2) == -1 and vercmp(v2, NEXT[0]) == -1
        assert rpms.newest_first([f"0:{v1}-1.fc43", f"0:{v2}-1.fc43"])[0] == f"0:{v2}-1.fc43"

        # --- a release into the same repository: stable only ----------------
        build_and_publish(config, "v0.9.2")
        assert rpm_version(config, "v0.9.2", "ampere") == LAST_RELEASE
        release = {f"mistralrs-{f}-{LAST_RELEASE}-1.fc43.x86_64.rpm" for f in FLAVOURS}
        assert set(published(target)) == release and set(rpm_files(channel_dir(target))) == release
        assert set(published(target, "unstable")) == snap1 | snap2  # the snapshots stay, nothing added

        # --- dnf: stable by default, the newest snapshot when unstable is on -
        rpm = dist / f"mistralrs-ampere-{v2}-1.fc43.x86_64.rpm"
        root = dnf_root(tmp_path / "unstable", url, cfg, "ampere", rpm)
        root.dnf("--enablerepo=mistralrs-unstable", "install", "mistralrs-ampere", check=True, timeout=300)
        assert installed_version(root, "mistralrs-ampere") == f"{v2}-1.fc43"
        root = dnf_root(tmp_path / "stable", url, cfg, "ampere", rpm)
        root.dnf("install", "mistralrs-ampere", check=True, timeout=300)
        assert installed_version(root, "mistralrs-ampere") == f"{LAST_RELEASE}-1.fc43"
