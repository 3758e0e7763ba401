"""Network calls end: a git upstream that accepts the connection and then
says nothing stops the fetch after upstream.timeout, in one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from buildlib import config as configmod
from pipeline import PROJECT, project_config, write_config


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.slow
def test_a_silent_upstream_ends_the_fetch_in_one_line(tmp_path, silent_server):
    data = project_config()
    url = f"http://127.0.0.1:{silent_server}/mistral.rs.git"
    data["upstream"].update(url=url, timeout=2)
    data["publish"]["target"] = str(tmp_path / "repo")
    data["paths"] = {"cache": str(tmp_path / "cache"), "build": "build", "artifacts": "artifacts", "dist": "dist"}
    path = write_config(tmp_path, data)
    assert configmod.load(path).upstream.timeout == 2.0
    env = {"MRPM_CONFIG": str(path), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    # the subprocess timeout only bounds a hang (the old code never ended)
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py"), "fetch"], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and url in errors[0] and "too slow" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "2m"])
def test_upstream_timeout_is_checked(tmp_path, value):
    data = project_config()
    data["upstream"]["timeout"] = value
    with pytest.raises(configmod.ConfigError, match="upstream.timeout"):
        configmod.load(write_config(tmp_path, data))


@pytest.mark.slow
@pytest.mark.parametrize("capture", [True, False])
def test_a_command_past_its_timeout_is_stopped_with_a_one_line_error(capture):
    from buildlib.run import CommandTimedOut, UserError, run

    code = "import sys, time; print('started', file=sys.stderr, flush=True); time.sleep(60)"
    with pytest.raises(CommandTimedOut) as e:
        run([sys.executable, "-c", code], timeout=1, capture=capture)
    assert isinstance(e.value, UserError) and isinstance(e.value, subprocess.TimeoutExpired)
    message = str(e.value)
    assert "within 1 s" in message and "started" in message and "\n" not in message, message


def _silent_upstream(tmp_path, silent_server, monkeypatch, ref_of):
    """A mirror fetched from a tiny upstream, whose remote then stops
    answering (its URL now leads to the silent port)."""
    import json

    from buildlib.layout import Layout
    from buildlib.pipeline.upstream import fetch
    from pipeline import demo_config
    from tiny_upstream import TinyUpstream

    up = TinyUpstream(tmp_path / "up")
    commit = up.commit("0.9.2")
    up.tag("v0.9.2")
    data = demo_config(tmp_path, up.path, tmp_path / "cache", flavours=("ampere",), build__features=[])
    data["upstream"]["timeout"] = 2
    monkeypatch.setenv("MRPM_REF", ref_of(commit))
    cfg = configmod.load(write_config(tmp_path, data))
    layout = Layout.of(cfg)
    fetch(cfg, layout)
    assert json.loads(layout.source_record.read_text())["commit"] == commit
    url = f"http://127.0.0.1:{silent_server}/mistral.rs.git"
    subprocess.run(["git", f"--git-dir={layout.mirror}", "remote", "set-url", "origin", url], check=True)
    data["upstream"]["url"] = url
    return configmod.load(write_config(tmp_path, data)), layout, url


@pytest.mark.slow
def test_the_moved_tag_check_does_not_hang_on_a_silent_upstream(tmp_path, silent_server, monkeypatch, capsys):
    """doit asks the remote on every run whether the tag moved (the fetch
    task's uptodate check): a remote that never answers must not hang doit;
    it is bounded by upstream.timeout and keeps what was fetched."""
    from buildlib.pipeline.upstream import tag_unchanged

    cfg, layout, url = _silent_upstream(tmp_path, silent_server, monkeypatch, lambda commit: "v0.9.2")
    result = []
    worker = threading.Thread(target=lambda: result.append(tag_unchanged(cfg, layout)), daemon=True)
    worker.start()
    worker.join(90)  # the old code waited for ever here
    assert not worker.is_alive(), "git ls-remote of a silent upstream did not end"
    assert result == [True]
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "cannot ask upstream whether v0.9.2 moved" in warning[0], warning


@pytest.mark.slow
def test_the_branch_check_does_not_hang_on_a_silent_upstream(tmp_path, silent_server, monkeypatch):
    """A snapshot's commit is checked against upstream.branch by fetching the
    branch: that fetch ends on a silent remote too, in one line."""
    from buildlib.pipeline.upstream import fetch

    cfg, layout, url = _silent_upstream(tmp_path, silent_server, monkeypatch, lambda commit: commit)
    errors = []

    def attempt():
        try:
            fetch(cfg, layout)
        except configmod.UserError as e:
            errors.append(str(e))

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(90)  # the old code waited for ever here
    assert not worker.is_alive(), "git fetch of upstream.branch from a silent upstream did not end"
    assert len(errors) == 1 and errors[0].startswith("cannot fetch branch master (upstream.branch)"), errors
    assert "\n" not in errors[0]


# --- progress where no terminal shows it (CI) ------------------------------------


def test_a_long_command_says_it_is_still_running_every_interval_on_a_fake_clock():
    from buildlib.run import Heartbeat

    now = [1000.0]
    lines: list[str] = []
    beat = Heartbeat("cargo build --release", 60, progress=lambda: "cargo: 3 units compiled",
                     clock=lambda: now[0], emit=lines.append)
    for t in (1000.0, 1030.0, 1059.9):
        now[0] = t
        beat.tick()
    assert lines == []
    now[0] = 1060.0
    beat.tick()
    beat.tick()  # once per interval, however often it is asked
    now[0] = 1000.0 + 3 * 3600 + 5  # three hours later (a thread stalled): one line, not 180
    beat.tick()
    assert lines == ["... cargo build --release: still running after 1 min 00 s; cargo: 3 units compiled",
                     "... cargo build --release: still running after 180 min 05 s; cargo: 3 units compiled"]
    now[0] += 60
    beat.tick()
    assert len(lines) == 3


def test_a_broken_progress_report_never_stops_the_command():
    from buildlib.run import Heartbeat

    now = [0.0]
    lines: list[str] = []
    beat = Heartbeat("git clone", 10, progress=lambda: 1 / 0, clock=lambda: now[0], emit=lines.append)
    now[0] = 10
    beat.tick()
    assert lines == ["... git clone: still running after 0 min 10 s; progress unknown (ZeroDivisionError)"]


def test_cargo_progress_reads_cargo_messages(tmp_path):
    from buildlib.pipeline.cargo import cargo_progress

    messages = tmp_path / "messages.json"
    messages.write_text(
        '{"reason":"compiler-artifact","target":{"name":"serde"}}\n'
        '{"reason":"build-script-executed","package_id":"x"}\n'
        '{"reason":"compiler-artifact","target":{"name":"candle-flash-attn"}}\n'
        '{"reason":"compiler-message"}\n')
    assert cargo_progress(messages).startswith("cargo: 2 units compiled, 1 build scripts run, last candle-flash-attn")


def test_run_beats_where_stderr_is_no_terminal(monkeypatch, capsys):
    """The thread run() starts: a short interval here, a command that lasts a little longer."""
    from buildlib import run as runmod

    monkeypatch.setattr(runmod, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(runmod, "_terminal", lambda: False)  # as in CI, whatever runs the tests
    runmod.run([sys.executable, "-c", "import time; time.sleep(0.7)"], progress=lambda: "working")
    err = capsys.readouterr().err
    assert "still running after 0 min 00 s; working" in err
