"""The upstream poll: GitHub answers (a local fake in GitHub's shapes) and
published repositories (createrepo_c over small RPMs, served on 127.0.0.1)
in, a decision per channel and flavour out."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from buildlib import config as configmod
from buildlib.ci import github as github_api
from buildlib.ci import matrix, poll
from buildlib.ci.http import UpstreamUnreachable
from buildlib.layout import Layout
from buildlib.run import UserError
from fake_github import FakeGitHub, Reply, StaticServer, release_object
from fixtures import fakerpm
from pipeline import demo_config, write_config

FLAVOURS = ("ampere", "hopper")
OLD_HEAD = "1" * 40
HEAD = "abcdef0123456789abcdef0123456789abcdef01"
RELEASE = "0.9.3"
SNAPSHOT_OF = {OLD_HEAD: "0.9.2^20260620.4git1111111", HEAD: "0.9.3^20260702.3gitabcdef0"}
EARLIER_FORM = "0.9.3^20260702.3.gabcdef0"
"""HEAD's snapshot as numbered before Fedora's ^<date>git<hash> form."""
CHANNEL_DIR = {"stable": "fedora/43/x86_64", "unstable": "fedora/43/x86_64/unstable"}


@pytest.fixture(scope="session")
def rpm_pool(tmp_path_factory):
    """One small RPM per flavour and version, built once."""
    out = tmp_path_factory.mktemp("rpms")
    pool = {}
    for flavour in FLAVOURS:
        for version in ("0.9.2", RELEASE, *SNAPSHOT_OF.values(), EARLIER_FORM):
            pool[flavour, version] = fakerpm.build(out / f"{flavour}-{version}", flavour, version)
    return pool


class Published:
    """The published tree (<base>/fedora/43/x86_64/[unstable/]) on a local web server."""

    def __init__(self, root: Path, pool):
        self.root, self.pool = root, pool
        self.server = StaticServer(root).start()

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/mistralrs-rpm"

    def channel(self, name: str, packages: list[tuple[str, str]], *extra: str) -> None:
        # made apart and copied in: createrepo_c of stable must not see unstable/
        staging = self.root.parent / f"staging-{name}"
        staging.mkdir(parents=True)
        for key in packages:
            shutil.copy2(self.pool[key], staging)
        subprocess.run(["createrepo_c", "--quiet", *extra, str(staging)], check=True)
        shutil.copytree(staging, self.root / "mistralrs-rpm" / CHANNEL_DIR[name], dirs_exist_ok=True)


@pytest.fixture
def github():
    fake = FakeGitHub().start()
    fake.release = release_object(f"v{RELEASE}")
    fake.head = HEAD
    yield fake
    fake.stop()


@pytest.fixture
def published(tmp_path, rpm_pool):
    p = Published(tmp_path / "www", rpm_pool)
    yield p
    p.server.stop()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No token, no ~/.netrc and no GITHUB_OUTPUT from the machine running the tests."""
    monkeypatch.delenv("MRPM_GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    (tmp_path / "home").mkdir()
    return monkeypatch


def setup(tmp_path, github, base_url, **settings):
    data = demo_config(tmp_path / "project", Path("https://github.com/EricLBuehler/mistral.rs.git"), tmp_path / "cache",
                       flavours=FLAVOURS, publish__base_url=base_url)
    data["upstream"]["url"] = "https://github.com/EricLBuehler/mistral.rs.git"
    cfg = configmod.load(write_config(tmp_path / "project", data))
    values = {"api_url": github.url, "timeout": 5.0, "retries": 2, "backoff": 0.01, **settings}
    return cfg, Layout.of(cfg), poll.PollSettings(**values)


def run_poll(tmp_path, github, base_url, **settings):
    cfg, layout, s = setup(tmp_path, github, base_url, **settings)
    sleeps: list[float] = []
    decision = poll_or_unreachable(cfg, layout, s, sleep=sleeps.append)
    decision["sleeps"] = sleeps
    return decision


def poll_or_unreachable(cfg, layout, s, **kwargs):
    """The decision; for a GitHub that stays unreachable, the one the poll
    wrote before it ended with UpstreamUnreachable (its line in "raised")."""
    try:
        return poll.poll_upstream(cfg, layout, s, **kwargs)
    except UpstreamUnreachable as e:
        decision = json.loads(poll.decision_file(layout).read_text())
        decision["raised"] = str(e)
        return decision


def everything_published(published):
    published.channel("stable", [(f, RELEASE) for f in FLAVOURS] + [(f, "0.9.2") for f in FLAVOURS])
    published.channel("unstable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS] + [(f, SNAPSHOT_OF[OLD_HEAD]) for f in FLAVOURS])


# --- decisions ---------------------------------------------------------------


@pytest.mark.slow
def test_nothing_new(tmp_path, github, published, env, capfd):
    everything_published(published)
    d = run_poll(tmp_path, github, published.base_url)
    assert d["status"] == "decided"
    assert d["release"]["ref"] == "v0.9.3" and d["release"]["rpm_version"] == "0.9.3"
    assert not d["release"]["build"] and d["release"]["present"] == list(FLAVOURS)
    assert d["prerelease"]["ref"] == HEAD and not d["prerelease"]["build"]
    assert "nothing to do" in capfd.readouterr().err
    layout = Layout.of(configmod.load(tmp_path / "project" / "config.toml"))
    assert json.loads(poll.decision_file(layout).read_text())["release"]["present"] == list(FLAVOURS)


def test_new_release_missing_for_every_flavour(tmp_path, github, published, env):
    published.channel("stable", [(f, "0.9.2") for f in FLAVOURS])
    published.channel("unstable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS])
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["build"] and d["release"]["missing"] == list(FLAVOURS) and d["release"]["ref"] == "v0.9.3"
    assert not d["prerelease"]["build"]


def test_release_present_for_some_flavours_only(tmp_path, github, published, env):
    published.channel("stable", [("hopper", RELEASE), ("ampere", "0.9.2")])
    published.channel("unstable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS])
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["missing"] == ["ampere"] and d["release"]["present"] == ["hopper"]
    assert d["release"]["build"]


def test_snapshot_in_stable_does_not_count_as_the_release(tmp_path, github, published, env):
    # 0.9.3^... sorts after 0.9.3 but is not it; only an exact version counts
    published.channel("stable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS])
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["missing"] == list(FLAVOURS)


def test_new_commit_on_master(tmp_path, github, published, env):
    published.channel("stable", [(f, RELEASE) for f in FLAVOURS])
    published.channel("unstable", [(f, SNAPSHOT_OF[OLD_HEAD]) for f in FLAVOURS])
    d = run_poll(tmp_path, github, published.base_url)
    assert not d["release"]["build"]
    assert d["prerelease"]["build"] and d["prerelease"]["ref"] == HEAD and d["prerelease"]["missing"] == list(FLAVOURS)
    assert d["prerelease"]["sha7"] == HEAD[:7]


def test_repository_missing_means_everything_missing(tmp_path, github, published, env):
    (published.root / "mistralrs-rpm").mkdir(parents=True)
    d = run_poll(tmp_path, github, published.base_url)
    for part in ("release", "prerelease"):
        assert d[part]["repository_state"] == "missing"
        assert d[part]["build"] and d[part]["missing"] == list(FLAVOURS)


def test_unstable_missing_but_stable_published(tmp_path, github, published, env):
    published.channel("stable", [(f, RELEASE) for f in FLAVOURS])
    d = run_poll(tmp_path, github, published.base_url)
    assert not d["release"]["build"]
    assert d["prerelease"]["repository_state"] == "missing" and d["prerelease"]["build"]


def test_repository_unreachable_decides_nothing(tmp_path, github, published, env, capfd):
    everything_published(published)
    published.server.status = 503
    d = run_poll(tmp_path, github, published.base_url)
    for part in ("release", "prerelease"):
        assert d[part]["repository_state"] == "unreachable" and not d[part]["build"]
        assert d[part]["missing"] == []
    # 1 + 2 retries, per channel, with a doubling backoff
    assert len([p for p in published.server.paths if p.endswith("repomd.xml")]) == 6
    assert d["sleeps"] == [0.01, 0.02, 0.01, 0.02]
    assert "nothing decided: repository unreachable" in capfd.readouterr().err


def test_connection_refused_decides_nothing(tmp_path, github, env):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    d = run_poll(tmp_path, github, f"http://127.0.0.1:{port}/mistralrs-rpm")
    assert not d["release"]["build"] and not d["prerelease"]["build"]
    assert "ConnectionError after 3 attempts" in d["release"]["reason"]


def test_corrupt_metadata_decides_nothing(tmp_path, github, published, env):
    everything_published(published)
    repodata = published.root / "mistralrs-rpm" / CHANNEL_DIR["stable"] / "repodata"
    primary = next(repodata.glob("*primary.xml.gz"))
    primary.write_bytes(b"not gzip")
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["repository_state"] == "unreachable" and not d["release"]["build"]
    assert "checksum" in d["release"]["reason"]


def zstd_primary(repodata: Path) -> None:
    """Recompress a repository's primary metadata with zstd (what Fedora's
    createrepo_c 1.x writes by default) and point repomd.xml at it, for a
    createrepo_c that cannot write zstd itself (Debian 12's 0.17)."""
    import gzip
    import hashlib

    import zstandard

    (old,) = repodata.glob("*-primary.xml.gz")
    data = zstandard.ZstdCompressor().compress(gzip.decompress(old.read_bytes()))
    digest = hashlib.sha256(data).hexdigest()
    new = repodata / f"{digest}-primary.xml.zst"
    new.write_bytes(data)
    old.unlink()
    repomd = repodata / "repomd.xml"
    text = repomd.read_text()
    start = text.index('<data type="primary">')
    end = text.index("</data>", start)
    block = text[start:end]
    block = re.sub(r'(<checksum type="sha256">)[0-9a-f]{64}', rf"\g<1>{digest}", block)
    block = re.sub(r"<size>[0-9]+</size>", f"<size>{len(data)}</size>", block)
    block = block.replace(f"repodata/{old.name}", f"repodata/{new.name}")
    repomd.write_text(text[:start] + block + text[end:])


@pytest.mark.parametrize("compress", ["zstd", "xz", "bz2"])
def test_other_metadata_compressions(tmp_path, github, published, env, compress):
    made_by = ["--general-compress-type", compress]
    if compress == "zstd":
        (tmp_path / "probe").mkdir()  # createrepo_c refuses a missing directory whatever it can compress
        probe = subprocess.run(["createrepo_c", "--quiet", *made_by, str(tmp_path / "probe")],
                               capture_output=True, text=True)
        if probe.returncode != 0:  # recompressed below instead
            made_by = []
    published.channel("stable", [("hopper", RELEASE)], *made_by)
    published.channel("unstable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS], *made_by)
    repodata = published.root / "mistralrs-rpm" / CHANNEL_DIR["stable"] / "repodata"
    if not made_by:
        for channel in ("stable", "unstable"):
            zstd_primary(published.root / "mistralrs-rpm" / CHANNEL_DIR[channel] / "repodata")
    assert list(repodata.glob(f"*primary.xml.{ {'zstd': 'zst'}.get(compress, compress)}"))
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["missing"] == ["ampere"] and not d["prerelease"]["build"]


# --- GitHub's side -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["primary-403", "primary-429", "secondary"])
def test_rate_limited_triggers_nothing(tmp_path, github, published, env, capfd, kind):
    everything_published(published)
    github.rate_limit(reset_in=1800, secondary=kind == "secondary", status=429 if kind == "primary-429" else 403)
    output = tmp_path / "github_output"
    env.setenv("GITHUB_OUTPUT", str(output))
    d = run_poll(tmp_path, github, published.base_url)
    assert d["status"] == "rate-limited"
    assert not d["release"]["build"] and not d["prerelease"]["build"]
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "rate limit" in line]
    assert len(lines) == 1 and "retry after" in lines[0] and "UTC (in 29 min" in lines[0], err
    assert "build_release=false\n" in output.read_text() and "build_prerelease=false\n" in output.read_text()
    assert "poll_status=rate-limited\n" in output.read_text()
    assert d["sleeps"] == []  # no hammering a rate-limited API
    assert published.server.paths == []  # nothing else asked


def test_5xx_then_success(tmp_path, github, published, env):
    everything_published(published)
    github.fail(github.release_path, 2, 502)
    github.fail(github.head_path, 1, 503)
    d = run_poll(tmp_path, github, published.base_url)
    assert d["status"] == "decided" and d["release"]["ref"] == "v0.9.3" and d["prerelease"]["ref"] == HEAD
    assert [r.status for r in github.requests_for(github.release_path)] == [502, 502, 200]
    assert d["sleeps"] == [0.01, 0.02, 0.01]


def test_api_unreachable_after_retries(tmp_path, github, published, env):
    everything_published(published)
    github.fail(github.release_path, 3, 500)
    d = run_poll(tmp_path, github, published.base_url)
    assert d["status"] == "unreachable" and not d["release"]["build"] and not d["prerelease"]["build"]
    assert "HTTP 500 after 3 attempts" in d["release"]["reason"] and "HTTP 500 after 3 attempts" in d["raised"]
    assert "\n" not in d["raised"]


@pytest.mark.slow
def test_each_retry_is_one_line_and_unreachable_github_fails_the_poll(tmp_path, github, published, env):
    """Not silent: a line per retry (what failed, when the next try comes),
    then `doit poll` ends non-zero with one line; a rate limit ends 0."""
    from pipeline import run_doit

    everything_published(published)
    data = demo_config(tmp_path / "project", Path("x"), tmp_path / "cache", flavours=FLAVOURS,
                       publish__base_url=published.base_url)
    data["upstream"]["url"] = "https://github.com/EricLBuehler/mistral.rs.git"
    data["poll"] = {"api_url": github.url, "retries": 2, "backoff": 0.01}
    config = write_config(tmp_path / "project", data)
    github.fail(github.release_path, 3, 503)
    rc, results, err = run_doit(config, "poll")
    assert rc != 0 and results["poll"] == "fail", err
    # doit repeats a failed task's output (another change quiets it): the lines, once each
    retries = list(dict.fromkeys(line for line in err.splitlines() if "next try in" in line))
    assert retries == [f"==> poll: {github.url}{github.release_path}: HTTP 503; next try in {w} s (attempt {n} of 3)"
                       for w, n in (("0.01", 2), ("0.02", 3))], err
    assert [line for line in err.splitlines() if "GitHub API unreachable" in line and "HTTP 503 after 3 attempts" in line], err
    github.rate_limit(github.release_path)
    rc, results, err = run_doit(config, "poll")
    assert rc == 0 and results["poll"] == "success", err
    assert len({line for line in err.splitlines() if "rate limit reached" in line}) == 1, err


GARBAGE_RELEASES = {
    "shell": release_object("v1.0.0;id"),
    "newline": release_object("v1.0.0\nbuild_release=true"),
    "not-a-version": release_object("1.0"),
    "main": release_object("main"),
    "leading-zero": release_object("v01.0.0"),
    # \d matches these; int() reads them as 10 and 10
    "fullwidth-digit": release_object("v1\uff10.0.0"),
    "arabic-indic-digit": release_object("v1.0.1\u0660"),
    "number": dict(release_object("v1.0.0"), tag_name=100),
    "draft": release_object("v1.0.0", draft=True),
    "no-tag": {"message": "hello"},
    "list": [],
    "not-json": b"<html>Bad gateway</html>",
}


@pytest.mark.parametrize("name", GARBAGE_RELEASES)
def test_garbage_release_is_refused(tmp_path, github, published, env, capfd, name):
    published.channel("unstable", [])
    value = GARBAGE_RELEASES[name]
    github.raw_release = value if isinstance(value, bytes) else json.dumps(value).encode()
    output = tmp_path / "github_output"
    env.setenv("GITHUB_OUTPUT", str(output))
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["ref"] is None and not d["release"]["build"]
    assert d["release"]["reason"].startswith("refusing")
    # the snapshot side is decided on its own
    assert d["prerelease"]["build"] and d["prerelease"]["ref"] == HEAD
    text = output.read_text()
    assert text.count("build_release=") == 1 and "build_release=false\n" in text
    assert all(re.fullmatch(r'[a-z_]+=[A-Za-z0-9.\[\]",-]*', line) for line in text.splitlines()), text
    err = capfd.readouterr().err
    assert "refusing" in err and "Traceback" not in err
    if name == "shell":
        assert "'v1.0.0;id'" in err


@pytest.mark.parametrize("body", [b"zzz", b"v1.0.0;id", b"abc", HEAD.upper().encode(), (HEAD + "\nbuild_prerelease=true").encode(),
                                  b'{"sha": "nope"}'])
def test_garbage_head_is_refused(tmp_path, github, published, env, body):
    published.channel("stable", [(f, RELEASE) for f in FLAVOURS])
    github.raw_head = body
    output = tmp_path / "github_output"
    env.setenv("GITHUB_OUTPUT", str(output))
    d = run_poll(tmp_path, github, published.base_url)
    assert d["prerelease"]["ref"] is None and not d["prerelease"]["build"]
    assert "refusing the head of master" in d["prerelease"]["reason"]
    assert output.read_text().count("build_prerelease=") == 1 and "build_prerelease=false\n" in output.read_text()


def test_commit_asked_for_as_bare_sha(tmp_path, github, published, env):
    everything_published(published)
    run_poll(tmp_path, github, published.base_url)
    (request,) = github.requests_for(github.head_path)
    assert request.headers["accept"] == "application/vnd.github.sha"
    (request,) = github.requests_for(github.release_path)
    assert request.headers["accept"] == "application/vnd.github+json"


def test_second_poll_sends_if_none_match_and_gets_304(tmp_path, github, published, env, capfd):
    everything_published(published)
    first = run_poll(tmp_path, github, published.base_url)
    assert all("if-none-match" not in r.headers for r in github.requests)
    remaining = github.remaining
    second = run_poll(tmp_path, github, published.base_url)
    later = github.requests[2:]
    assert [r.path for r in later] == [github.release_path, github.head_path]
    assert all(r.headers.get("if-none-match") for r in later)
    assert [r.status for r in later] == [304, 304]
    assert second["release"] == first["release"] and second["prerelease"] == first["prerelease"]
    assert len(second["unchanged_answers"]) == 2
    # an authorized 304 is free; the fake counts unauthorized ones as GitHub does
    assert github.remaining == remaining - 2

    # upstream moves on: the stored ETag no longer matches, a fresh answer comes
    github.head = "2" * 40
    third = run_poll(tmp_path, github, published.base_url)
    assert github.requests[-1].status == 200 and third["prerelease"]["ref"] == "2" * 40
    assert third["prerelease"]["build"]


def test_github_output_lines(tmp_path, github, published, env):
    published.channel("stable", [("hopper", RELEASE)])
    published.channel("unstable", [])
    output = tmp_path / "github_output"
    output.write_text("earlier=kept\n")
    env.setenv("GITHUB_OUTPUT", str(output))
    run_poll(tmp_path, github, published.base_url)
    assert output.read_text().splitlines() == [
        "earlier=kept",
        "poll_status=decided",
        "release_ref=v0.9.3",
        'release_flavours=["ampere"]',
        "build_release=true",
        f"prerelease_ref={HEAD}",
        'prerelease_flavours=["ampere","hopper"]',
        "build_prerelease=true",
    ]


def test_nothing_to_build_outputs(tmp_path, github, published, env):
    everything_published(published)
    output = tmp_path / "github_output"
    env.setenv("GITHUB_OUTPUT", str(output))
    run_poll(tmp_path, github, published.base_url)
    assert output.read_text().splitlines() == [
        "poll_status=decided", "release_ref=", "release_flavours=[]", "build_release=false",
        "prerelease_ref=", "prerelease_flavours=[]", "build_prerelease=false",
    ]


def test_no_release_yet(tmp_path, github, published, env):
    everything_published(published)
    github.release = None
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["ref"] is None and d["release"]["reason"] == "upstream has no release yet"
    assert d["status"] == "decided"


def test_token_is_sent_never_shown_and_netrc_ignored(tmp_path, github, published, env, capfd):
    everything_published(published)
    (tmp_path / "home" / ".netrc").write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    run_poll(tmp_path, github, published.base_url)
    assert all("authorization" not in r.headers for r in github.requests)

    env.setenv("MRPM_GITHUB_TOKEN", "ghp_secretsecret")
    run_poll(tmp_path, github, published.base_url)
    assert {r.headers.get("authorization") for r in github.requests[2:]} == {"Bearer ghp_secretsecret"}
    captured = capfd.readouterr()
    layout = Layout.of(configmod.load(tmp_path / "project" / "config.toml"))
    for text in (captured.out, captured.err, poll.decision_file(layout).read_text(), poll.state_file(layout).read_text()):
        assert "ghp_secret" not in text and "netrc-secret" not in text


def test_bad_token_is_a_clear_error(tmp_path, github, published, env):
    github.queue(github.release_path, Reply(401, b'{"message": "Bad credentials"}', {"Content-Type": "application/json"}))
    cfg, layout, s = setup(tmp_path, github, published.base_url)
    with pytest.raises(UserError, match="GitHub refused the token.*Bad credentials"):
        poll.poll_upstream(cfg, layout, s, sleep=lambda _: None)


def test_unknown_branch_is_a_clear_error(tmp_path, github, published, env):
    github.branch = "main"  # the fake knows only main; config says master
    cfg, layout, s = setup(tmp_path, github, published.base_url)
    with pytest.raises(UserError, match="upstream.branch = 'master'"):
        poll.poll_upstream(cfg, layout, s, sleep=lambda _: None)


@pytest.mark.parametrize("url, repository", [
    ("https://github.com/EricLBuehler/mistral.rs.git", "EricLBuehler/mistral.rs"),
    ("https://github.com/EricLBuehler/mistral.rs", "EricLBuehler/mistral.rs"),
    ("git@github.com:EricLBuehler/mistral.rs.git", "EricLBuehler/mistral.rs"),
])
def test_repository_from_upstream_url(url, repository):
    class Cfg:
        class upstream:
            pass
    Cfg.upstream.url = url
    assert github_api.github_repository(Cfg, poll.PollSettings()) == repository


@pytest.mark.parametrize("url", ["/srv/mistral.rs", "https://gitlab.com/a/b.git", "https://github.com/a/b/c",
                                 "https://github.com/../x"])
def test_non_github_upstream_needs_poll_repository(url):
    class Cfg:
        class upstream:
            pass
    Cfg.upstream.url = url
    with pytest.raises(UserError, match="poll.repository"):
        github_api.github_repository(Cfg, poll.PollSettings())
    assert github_api.github_repository(Cfg, poll.PollSettings(repository="o/r")) == "o/r"
    with pytest.raises(UserError, match="poll.repository"):
        github_api.github_repository(Cfg, poll.PollSettings(repository="o/r;id"))


# --- the matrix ------------------------------------------------------------------


def test_flavour_matrix(tmp_path):
    data = demo_config(tmp_path, Path("https://github.com/EricLBuehler/mistral.rs.git"), tmp_path / "cache",
                       flavours=("ampere", "ada", "hopper"))
    cfg = configmod.load(write_config(tmp_path, data))
    assert matrix.flavour_matrix(cfg) == ["ampere", "ada", "hopper"]
    assert matrix.flavour_matrix(cfg, "") == ["ampere", "ada", "hopper"]
    assert matrix.flavour_matrix(cfg, '["hopper","ampere"]') == ["ampere", "hopper"]
    for bad in ('["volta"]', "ampere", "[]", '[1]', '["ampere\\nx=1"]'):
        with pytest.raises(UserError, match="MRPM_FLAVOURS"):
            matrix.flavour_matrix(cfg, bad)


# --- through doit ------------------------------------------------------------------


@pytest.mark.slow
def test_doit_poll_writes_github_output(tmp_path, github, published, env):
    from pipeline import run_doit

    published.channel("stable", [(f, "0.9.2") for f in FLAVOURS])
    published.channel("unstable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS])
    data = demo_config(tmp_path / "project", Path("x"), tmp_path / "cache", flavours=FLAVOURS,
                       publish__base_url=published.base_url)
    data["upstream"]["url"] = "https://github.com/EricLBuehler/mistral.rs.git"
    data["poll"] = {"api_url": github.url, "retries": 1, "backoff": 0.01}
    config = write_config(tmp_path / "project", data)
    output = tmp_path / "github_output"
    rc, results, err = run_doit(config, "poll", env={"GITHUB_OUTPUT": str(output)})
    assert rc == 0 and results["poll"] == "success", err
    lines = output.read_text().splitlines()
    assert "build_release=true" in lines and 'release_flavours=["ampere","hopper"]' in lines
    assert "build_prerelease=false" in lines
    rc, results, _ = run_doit(config, "poll", env={"GITHUB_OUTPUT": str(output)})
    assert results["poll"] == "success"  # never up to date: upstream moves without local files changing
    assert [r.status for r in github.requests[2:]] == [304, 304]


def test_same_build_is_not_started_again_while_it_may_still_run(tmp_path, github, published, env, capfd):
    published.channel("stable", [(f, "0.9.2") for f in FLAVOURS])
    published.channel("unstable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS])
    output = tmp_path / "github_output"
    env.setenv("GITHUB_OUTPUT", str(output))
    assert run_poll(tmp_path, github, published.base_url)["release"]["build"]
    second = run_poll(tmp_path, github, published.base_url)
    assert not second["release"]["build"] and second["release"]["missing"] == list(FLAVOURS)
    assert "not again before" in second["release"]["reason"]
    assert output.read_text().splitlines().count("build_release=false") == 1
    assert "held back: the same build was started" in capfd.readouterr().err
    # hopper got published meanwhile: building ampere alone is a new build
    shutil.rmtree(published.root / "mistralrs-rpm" / CHANNEL_DIR["stable"])
    shutil.rmtree(published.root.parent / "staging-stable")
    published.channel("stable", [("hopper", RELEASE)])
    third = run_poll(tmp_path, github, published.base_url)
    assert third["release"]["build"] and third["release"]["missing"] == ["ampere"]
    # and once retrigger_after has passed, the same build starts again
    assert run_poll(tmp_path, github, published.base_url, retrigger_after=0.0)["release"]["build"]


def test_damaged_state_file_starts_afresh(tmp_path, github, published, env):
    everything_published(published)
    cfg, layout, s = setup(tmp_path, github, published.base_url)
    poll.state_file(layout).parent.mkdir(parents=True)
    for damaged in ("{not json", "[]", '{"etags": {"x": 1}, "started": {"y": "z"}}'):
        poll.state_file(layout).write_text(damaged)
        assert poll.poll_upstream(cfg, layout, s, sleep=lambda _: None)["status"] == "decided"
        assert all("if-none-match" not in r.headers for r in github.requests[-2:])


# --- hostile answers: bounded in depth, size and time; nothing kept but checked values --------


NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("where", ["release", "head", "error-message"])
def test_deeply_nested_json_is_refused_in_one_line(tmp_path, github, published, env, capfd, where):
    everything_published(published)
    if where == "release":
        github.raw_release = b'{"tag_name": "v0.9.3", "assets": ' + NESTED + b"}"
    elif where == "head":
        github.raw_head = b'{"sha": "' + HEAD.encode() + b'", "parents": ' + NESTED + b"}"
    else:
        github.queue(github.release_path, Reply(403, NESTED, {"Content-Type": "application/json"}))
    d = run_poll(tmp_path, github, published.base_url)
    err = capfd.readouterr().err
    assert "Traceback" not in err and not d["release"]["build"] and not d["prerelease"]["build"]
    if where == "release":
        assert d["release"]["ref"] is None and "nested deeper than" in d["release"]["reason"]
        assert d["prerelease"]["ref"] == HEAD  # the other side is decided on its own
    elif where == "head":
        assert d["prerelease"]["ref"] is None and "nested deeper than" in d["prerelease"]["reason"]
        assert d["release"]["ref"] == "v0.9.3"
    else:
        assert d["status"] == "unreachable" and "unexpected HTTP 403" in d["release"]["reason"]
        assert "unexpected HTTP 403" in d["raised"]


@pytest.mark.parametrize("body, depth", [
    (b'{"a": "[[[[{{{{"}', 1),
    (b'{"a": "\\"[[[["}', 1),            # an escaped quote does not end the string
    (b'{"a": "\\\\", "b": [[1]]}', 3),    # an escaped backslash does not escape the quote
    (b'["\\u005b", ["]"], [[{}]]]', 4),
])
def test_json_depth_counts_brackets_outside_strings_only(body, depth):
    assert json.loads(body) is not None  # the cases are valid JSON
    original = github_api.MAX_JSON_DEPTH
    try:
        github_api.MAX_JSON_DEPTH = depth
        assert github_api.parse_json(body) == json.loads(body)
        github_api.MAX_JSON_DEPTH = depth - 1
        with pytest.raises(github_api.TooDeep):
            github_api.parse_json(body)
    finally:
        github_api.MAX_JSON_DEPTH = original


def test_json_depth_check_takes_linear_time_on_escaped_quotes():
    """An answer of backslash-quotes made the old check (a regular expression
    for whole strings, retried from every escaped quote) quadratic: 80 kB took
    half a minute, the 4 MB an answer may have would take about a day.  The
    subprocess's timeout only bounds that hang; it is no speed claim."""
    code = ("from buildlib.ci.github import parse_json\n"
            "body = b'\"' + b'\\\\\"' * 500_000\n"
            "try:\n    parse_json(body)\nexcept ValueError as e:\n    print(type(e).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(github_api.__file__).parents[2])
    assert proc.returncode == 0 and proc.stdout.strip() == "JSONDecodeError", proc.stderr


HUGE_HINTS = {
    "retry-after-1e12": ({"retry-after": str(10**12)}, True),
    "retry-after-5000-digits": ({"retry-after": "9" * 5000}, True),
    "retry-after-superscript": ({"retry-after": "\u00b2"}, False),  # str.isdigit() says yes, int() says no
    "reset-far-future": ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(10**12)}, True),
    "reset-5000-digits": ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9" * 5000}, True),
}


@pytest.mark.parametrize("name", HUGE_HINTS)
def test_huge_retry_hints_are_clamped(tmp_path, github, published, env, capfd, name):
    everything_published(published)
    headers, clamped = HUGE_HINTS[name]
    github.queue(github.release_path, Reply(403, b'{"message": "API rate limit exceeded"}',
                                            {"Content-Type": "application/json", **headers}))
    d = run_poll(tmp_path, github, published.base_url)
    assert d["status"] == "rate-limited" and not d["release"]["build"] and not d["prerelease"]["build"]
    assert d["sleeps"] == []
    err = capfd.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "rate limit" in line]
    wait = re.search(r"\(in (\d+) min (\d+) s", line)
    assert wait and int(wait[1]) * 60 + int(wait[2]) <= github_api.MAX_RETRY_WAIT, line
    assert ("clamped" in line) == clamped, line
    assert len(line) < 400


@pytest.fixture
def github_tls(tmp_path, env):
    """The fake API over TLS, with a self-signed certificate made by openssl
    and trusted through REQUESTS_CA_BUNDLE."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    env.setenv("REQUESTS_CA_BUNDLE", str(cert))
    fake = FakeGitHub().start(tls=context)
    fake.release = release_object(f"v{RELEASE}")
    fake.head = HEAD
    yield fake
    fake.stop()


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["body", "head", "tls-body"])
def test_trickling_answer_ends_within_the_timeout(tmp_path, request, published, env, capfd, phase):
    """A server sending a byte a second never trips a per-read timeout; the
    deadline covers connect, TLS, headers and the whole body.  A bound, not
    a speed claim: 3x the timeout leaves the slowest machine plenty."""
    import time

    github = request.getfixturevalue("github_tls" if phase.startswith("tls") else "github")
    assert github.url.startswith("https://" if phase.startswith("tls") else "http://")
    everything_published(published)
    body = json.dumps(release_object(f"v{RELEASE}")).encode() + b" " * 10_000
    github.queue(github.release_path, Reply(200, body, {"Content-Type": "application/json"}, trickle=1.0,
                                            trickle_head=phase == "head"))
    cfg, layout, s = setup(tmp_path, github, published.base_url, timeout=2.0)
    started = time.monotonic()
    d = poll_or_unreachable(cfg, layout, s, sleep=lambda _: None)
    elapsed = time.monotonic() - started
    assert elapsed < 3 * s.timeout, f"the poll took {elapsed:.1f} s with poll.timeout = {s.timeout} s"
    assert d["status"] == "unreachable" and not d["release"]["build"] and not d["prerelease"]["build"]
    assert "no complete answer within 2 s" in d["release"]["reason"]
    # a server that slow is not asked again in the same poll
    assert len(github.requests_for(github.release_path)) == 1
    assert "Traceback" not in capfd.readouterr().err


def test_endless_answer_is_cut_at_the_limit(tmp_path, github, published, env):
    everything_published(published)
    github.queue(github.release_path, Reply(200, headers={"Content-Type": "application/json"}, endless=True))
    d = run_poll(tmp_path, github, published.base_url)
    assert d["status"] == "unreachable" and "larger than 4 MiB" in d["release"]["reason"]
    # stopped soon after the limit (socket buffers hold a few MiB more), not at the 256 MiB metadata cap
    assert github.sent < 64 * 2**20, github.sent


def _state(tmp_path) -> Path:
    return poll.state_file(Layout.of(configmod.load(tmp_path / "project" / "config.toml")))


def test_a_large_answer_is_not_kept_in_the_state(tmp_path, github, published, env):
    everything_published(published)
    github.release = dict(release_object(f"v{RELEASE}"), body="release notes " * 200_000)  # 2.8 MB
    first = run_poll(tmp_path, github, published.base_url)
    assert first["status"] == "decided" and first["release"]["ref"] == "v0.9.3"
    state = _state(tmp_path).read_text()
    assert len(state) < 4096 and "release notes" not in state, state[:300]
    entries = json.loads(state)["etags"]
    assert sorted(e["value"] for e in entries.values()) == sorted(["v0.9.3", HEAD])
    # the small checked values are enough to reuse a 304
    second = run_poll(tmp_path, github, published.base_url)
    assert [r.status for r in github.requests[-2:]] == [304, 304]
    assert second["release"] == first["release"] and second["prerelease"] == first["prerelease"]


def test_a_10mb_answer_is_refused_and_not_kept(tmp_path, github, published, env, capfd):
    everything_published(published)
    github.release = dict(release_object(f"v{RELEASE}"), body="x" * 10_000_000)
    d = run_poll(tmp_path, github, published.base_url)
    assert d["status"] == "unreachable" and not d["release"]["build"]
    assert "larger than 4 MiB" in d["release"]["reason"]
    assert len(_state(tmp_path).read_text()) < 4096
    assert "Traceback" not in capfd.readouterr().err


def test_stored_values_are_checked_again_when_read(tmp_path, github, published, env):
    """A state file is not trusted either: a stored value that is no longer a
    valid ref is not reused (and no If-None-Match is sent for it)."""
    everything_published(published)
    run_poll(tmp_path, github, published.base_url)
    path = _state(tmp_path)
    state = json.loads(path.read_text())
    for entry in state["etags"].values():
        entry["value"] = "v1.0.0;id"
    path.write_text(json.dumps(state))
    d = run_poll(tmp_path, github, published.base_url)
    assert all("if-none-match" not in r.headers for r in github.requests[-2:])
    assert d["release"]["ref"] == "v0.9.3" and d["prerelease"]["ref"] == HEAD


@pytest.mark.parametrize("key", ["timeout", "backoff", "retrigger_after"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 1e300])
def test_poll_seconds_must_be_finite_and_sane(tmp_path, key, value):
    # checked where the setting is declared, when config.toml is read (the one way settings are made)
    data = demo_config(tmp_path, Path("https://github.com/EricLBuehler/mistral.rs.git"), tmp_path / "cache")
    data["poll"] = {key: value}
    with pytest.raises(configmod.ConfigError, match=f"poll.{key}"):
        configmod.load(write_config(tmp_path, data))


@pytest.mark.parametrize("repomd", [b"hello", b"\xff\xfe<\x00r\x00"])
def test_garbage_repomd_decides_nothing_in_one_line(tmp_path, github, published, env, capfd, repomd):
    everything_published(published)
    (published.root / "mistralrs-rpm" / CHANNEL_DIR["stable"] / "repodata" / "repomd.xml").write_bytes(repomd)
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["repository_state"] == "unreachable" and not d["release"]["build"]
    assert "\n" not in d["release"]["reason"], d["release"]["reason"]
    err = capfd.readouterr().err
    assert "Traceback" not in err
    # (createrepo_c itself may print a CRITICAL line of its own before)
    (stable,) = [line for line in err.splitlines() if line.startswith("    stable ")]
    assert "nothing decided: repository unreachable" in stable and "repomd.xml" in stable, err


# --- starting builds: Gitea's dispatch API, one snapshot in flight -------------

DISPATCH_TOKEN = "dispatch-t0ken-for-tests"


@pytest.fixture
def gitea(tmp_path, env):
    """The stand-in Gitea (tests/fake_gitea.py) over this project's workflows,
    and the environment poll-upstream.yml gives the poll."""
    from fake_gitea import FakeGitea
    from workflow_driver import Gitea

    from buildlib.ci import dispatch

    g = Gitea("1.24.0", tmp_path / "gitea")
    api = FakeGitea(g, DISPATCH_TOKEN, read_only_token="read-only").start()
    env.setenv(dispatch.API_ENV, api.api_url)
    env.setenv(dispatch.REPOSITORY_ENV, g.repository)
    env.setenv(dispatch.REF_ENV, g.branch)
    env.setenv("MRPM_DISPATCH_TOKEN", DISPATCH_TOKEN)
    yield g
    api.stop()


def dispatched(g) -> list[tuple[str, dict]]:
    return [(r.workflow, r.driver.inputs) for r in g.runs]


def test_the_poll_starts_the_build_workflows_through_gitea(tmp_path, github, published, gitea):
    published.channel("stable", [(f, "0.9.2") for f in FLAVOURS])
    d = run_poll(tmp_path, github, published.base_url)
    assert d["release"]["started"] == "build-release.yml" and d["prerelease"]["started"] == "build-prerelease.yml"
    assert dispatched(gitea) == [
        ("build-release.yml", {"ref": "v0.9.3", "flavours": '["ampere","hopper"]'}),
        ("build-prerelease.yml", {"ref": HEAD, "flavours": '["ampere","hopper"]', "newest": "true"})]
    assert {r.event for r in gitea.runs} == {"workflow_dispatch"}
    # the next poll: both in flight, nothing dispatched again
    d = run_poll(tmp_path, github, published.base_url)
    assert not d["release"]["build"] and not d["prerelease"]["build"] and len(gitea.runs) == 2


@pytest.mark.parametrize("version, token, message", [
    ("1.23.6", DISPATCH_TOKEN, "HTTP 404: Gitea before 1.24 has no dispatch API"),
    ("1.24.0", "wrong", "refused the token (HTTP 401)"),
    ("1.24.0", "read-only", "refused the token (HTTP 403)"),
])
def test_a_refused_dispatch_is_one_line_and_not_recorded(tmp_path, github, published, gitea, env, version, token,
                                                         message):
    from workflow_driver import version as parse_version

    published.channel("stable", [(f, "0.9.2") for f in FLAVOURS])
    published.channel("unstable", [(f, SNAPSHOT_OF[HEAD]) for f in FLAVOURS])
    gitea.version = parse_version(version)
    env.setenv("MRPM_DISPATCH_TOKEN", token)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        run_poll(tmp_path, github, published.base_url)
    assert "\n" not in str(e.value) and token not in str(e.value) and gitea.runs == []
    # not recorded as started: once Gitea takes it, the same build is started
    gitea.version = parse_version("1.24.0")
    env.setenv("MRPM_DISPATCH_TOKEN", DISPATCH_TOKEN)
    assert run_poll(tmp_path, github, published.base_url)["release"]["started"] == "build-release.yml"


def test_no_dispatch_token_is_one_line(tmp_path, github, published, gitea, env):
    env.delenv("MRPM_DISPATCH_TOKEN")
    with pytest.raises(UserError, match=r"\$MRPM_DISPATCH_TOKEN is empty"):
        run_poll(tmp_path, github, published.base_url)


def test_snapshots_one_in_flight_and_one_per_interval_while_master_moves(tmp_path, github, published, gitea,
                                                                         monkeypatch):
    """master moves at every tick; runner capacity 1 and hour-long builds
    must not grow a queue: one snapshot build in flight per flavour, a newer
    head waits for it (the build, when it starts, builds the newest head),
    and snapshot builds start at most once per poll.snapshot_interval."""
    published.channel("stable", [(f, RELEASE) for f in FLAVOURS])
    published.channel("unstable", [(f, SNAPSHOT_OF[OLD_HEAD]) for f in FLAVOURS])
    clock = [1_800_000_000.0]
    monkeypatch.setattr(poll.time, "time", lambda: clock[0])
    heads = iter(f"{i:x}" * 40 for i in range(2, 16))
    decisions = []
    for tick in range(8):  # two hours of polls, a new head each time
        github.head = next(heads)
        decisions.append(run_poll(tmp_path, github, published.base_url, snapshot_interval=6 * 3600.0)["prerelease"])
        clock[0] += 15 * 60
    snapshot_runs = [i for r, i in dispatched(gitea) if r == "build-prerelease.yml"]
    assert snapshot_runs == [{"ref": "2" * 40, "flavours": '["ampere","hopper"]', "newest": "true"}]
    assert decisions[0]["build"] and not any(d["build"] for d in decisions[1:])
    assert all(d["reason"].startswith(f"snapshot of {'2' * 12} in flight since 2027-01-15 08:00 UTC")
               for d in decisions[1:]), decisions[1]["reason"]

    # the build published (a newer head than it was started for): no longer in
    # flight, and the next snapshot waits for the interval
    shutil.rmtree(published.root / "mistralrs-rpm" / CHANNEL_DIR["unstable"])
    shutil.rmtree(published.root.parent / "staging-unstable")
    published.channel("unstable", [(f, v) for f in FLAVOURS for v in (SNAPSHOT_OF[OLD_HEAD], SNAPSHOT_OF[HEAD])])
    github.head = next(heads)
    d = run_poll(tmp_path, github, published.base_url, snapshot_interval=6 * 3600.0)["prerelease"]
    assert not d["build"] and d["reason"] == "next snapshot after 2027-01-15 14:00 UTC (poll.snapshot_interval)"
    assert "next snapshot after 2027-01-15 14:00 UTC" in poll.summary({"status": "decided", "release": {
        "ref": None, "missing": [], "build": False, "reason": ""}, "prerelease": d})
    clock[0] += 4 * 3600  # past the interval: the newest head
    github.head = next(heads)
    d = run_poll(tmp_path, github, published.base_url, snapshot_interval=6 * 3600.0)["prerelease"]
    assert d["build"] and d["started"] == "build-prerelease.yml"
    assert [i["ref"] for r, i in dispatched(gitea) if r == "build-prerelease.yml"] == ["2" * 40, github.head]


def test_a_snapshot_build_that_never_publishes_is_given_up_after_retrigger_after(tmp_path, github, published,
                                                                                  gitea, monkeypatch):
    published.channel("stable", [(f, RELEASE) for f in FLAVOURS])
    clock = [1_800_000_000.0]
    monkeypatch.setattr(poll.time, "time", lambda: clock[0])
    settings = {"snapshot_interval": 0.0, "retrigger_after": 3 * 3600.0}
    assert run_poll(tmp_path, github, published.base_url, **settings)["prerelease"]["build"]
    clock[0] += 2 * 3600
    assert "in flight" in run_poll(tmp_path, github, published.base_url, **settings)["prerelease"]["reason"]
    clock[0] += 3600
    assert run_poll(tmp_path, github, published.base_url, **settings)["prerelease"]["build"]
    assert len([r for r in gitea.runs if r.workflow == "build-prerelease.yml"]) == 2


def test_a_snapshot_published_in_the_earlier_version_form_counts_as_built(tmp_path, github, published, env):
    """Snapshots were once numbered ...<n>.g<sha7>; one published so is the
    head's build, not a reason to build it again; the new form sorts above it."""
    from buildlib.refs import compare_evr, snapshot_version

    published.channel("stable", [(f, RELEASE) for f in FLAVOURS])
    published.channel("unstable", [(f, EARLIER_FORM) for f in FLAVOURS])
    d = run_poll(tmp_path, github, published.base_url)
    assert d["prerelease"]["ref"] == HEAD and not d["prerelease"]["build"], d["prerelease"]
    new = snapshot_version("v0.9.3", date(2026, 7, 2), 3, HEAD)
    assert new == SNAPSHOT_OF[HEAD]
    assert compare_evr(f"0:{new}-1", f"0:{EARLIER_FORM}-1") > 0  # the new form upgrades the old
    assert compare_evr("0:0.9.2^20260702.2gitabcdef0-1", "0:0.9.2^20260702.10git0000000-1") < 0
