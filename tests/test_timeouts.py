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


@pytest.mark.parametrize("capture", [True, False])
def test_a_command_past_its_timeout_is_stopped_with_a_one_line_error(capture):
    from buildlib.run import CommandTimedOut, UserError, run

    code = "import sys, time; print('started', file=sys.stderr, flush=True); time.sleep(60)"
    with pytest.raises(CommandTimedOut) as e:
        run([sys.executable, "-c", code], timeout=1, capture=capture)
    assert isinstance(e.value, UserError) and isinstance(e.value, subprocess.TimeoutExpired)
    message = str(e.value)
    assert "within 1 s" in message and "started" in message and "\n" not in message, message
