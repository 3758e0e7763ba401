"""The gate's commands, run with the package dnf installed: each one's
argv, exit status and output tail goes into the gate record.

Every command runs the binary from the scratch root with the host's
driver (:func:`library_path`), so what it proves is the package and its
dependencies as dnf resolved them, on this machine's GPU and driver."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from ..config import Smoke
from ..run import log, output
from .gpu import memory_used_mib
from .tiny_model import write_model

TAIL = 2000
SERVE_TIMEOUT = {Smoke.SELFTEST: 30.0, Smoke.CHAT: 600.0}


@dataclass
class Step:
    name: str
    argv: list[str]
    exit: int | None
    """None: it did not end by itself (killed after the check)."""
    tail: str
    passed: bool


def _tail(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-TAIL:]


def host_driver_dir(scratch: Path) -> Path | None:
    """A directory of links to the host's driver libraries (libcuda.so.1
    and the libnvidia-* beside it), put first on the library path: the
    driver's user space must be the kernel module's own, whatever driver
    package dnf put into the scratch root to satisfy libcuda.so.1."""
    found = [line.split("=>")[-1].strip() for line in output(["/sbin/ldconfig", "-p"], quiet=True).splitlines()
             if line.strip().startswith("libcuda.so.1 ") and "x86-64" in line]
    if not found:
        return None
    real = Path(found[0]).parent
    links = scratch / "driver"
    links.mkdir(parents=True, exist_ok=True)
    for lib in sorted(real.glob("libcuda.so*")) + sorted(real.glob("libnvidia-*.so*")):
        (links / lib.name).unlink(missing_ok=True)
        (links / lib.name).symlink_to(lib)
    return links


def library_path(root: Path, driver: Path | None) -> str:
    """The host's driver first, then the root's library directories: its
    /usr/lib64 and each directory its ld.so.conf.d names (NVIDIA's CUDA
    packages add /usr/local/cuda-13.x/targets/x86_64-linux/lib there)."""
    dirs = [driver] if driver else []
    dirs += [root / "usr" / "lib64", root / "usr" / "lib"]
    for conf in sorted((root / "etc" / "ld.so.conf.d").glob("*.conf")):
        for line in conf.read_text(errors="replace").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("/"):
                dirs.append(root / line.lstrip("/"))
    return os.pathsep.join(str(d) for d in dirs)


def run_step(name: str, argv: list[str], env: dict[str, str], check, timeout: float = 120) -> Step:
    log(f"gate: {name}: {' '.join(argv)}")
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return Step(name, argv, None, _tail((e.stdout or b"") + (e.stderr or b"")) + f"\n(no end after {timeout:.0f} s)", False)
    except OSError as e:
        return Step(name, argv, None, str(e), False)
    text = _tail(proc.stdout + proc.stderr)
    return Step(name, argv, proc.returncode, text, proc.returncode == 0 and check(proc.stdout.decode(errors="replace")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_step(name: str, argv: list[str], env: dict[str, str], port: int, timeout: float, ask) -> Step:
    """Start the server, wait for GET /health, then ask(url) -> (passed,
    what it answered); the server is stopped after."""
    log(f"gate: {name}: {' '.join(argv)}")
    url = f"http://127.0.0.1:{port}"
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        return Step(name, argv, None, str(e), False)
    answered, passed, said = False, False, ""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    answered = True
                    break
            except requests.RequestException:
                time.sleep(0.2)
        if answered:
            passed, said = ask(url)
        else:
            said = "GET /health never answered 200" if proc.poll() is None else "the server ended"
    except requests.RequestException as e:
        said = f"{type(e).__name__}: {e}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out = proc.stdout.read() if proc.stdout else b""
    return Step(name, argv, proc.returncode, _tail(said + "\n--- server output ---\n" + _tail(out)), passed)


def ask_demo(url: str) -> tuple[bool, str]:
    models = requests.get(f"{url}/v1/models", timeout=10)
    ok = models.status_code == 200 and bool(models.json().get("data"))
    return ok, f"GET /health: 200; GET /v1/models: {models.status_code} {models.text[:500]}"


CHAT_REQUEST = {"max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}
"""One short completion: a random-weight model says nothing sensible, but
generating its tokens runs the model's kernels on the GPU."""


def chat_problem(answer: object) -> str:
    """What is wrong with a /v1/chat/completions answer against OpenAI's
    documented shape ("" when nothing): a chat.completion object whose
    first choice holds the assistant's message, and usage that counts at
    least one generated token."""
    if not isinstance(answer, dict):
        return "the answer is not a JSON object"
    if answer.get("object") != "chat.completion":
        return f"object is {answer.get('object')!r}, not 'chat.completion'"
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "no choices"
    message = choices[0].get("message")
    if not isinstance(message, dict) or message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        return "choices[0].message is not an assistant message with text content"
    usage = answer.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        return "usage.completion_tokens does not count a generated token"
    return ""


def ask_chat(url: str) -> tuple[bool, str]:
    listed = requests.get(f"{url}/v1/models", timeout=30)
    try:
        model = listed.json()["data"][0]["id"]
    except (ValueError, LookupError, TypeError):
        return False, f"GET /v1/models: {listed.status_code} {listed.text[:500]}: no model listed"
    before = memory_used_mib()
    answer = requests.post(f"{url}/v1/chat/completions", timeout=300, json={"model": model, **CHAT_REQUEST})
    try:
        problem = chat_problem(answer.json()) if answer.status_code == 200 else f"status {answer.status_code}"
    except ValueError:
        problem = "the answer is not JSON"
    said = (f"POST /v1/chat/completions: {answer.status_code} {answer.text[:800]};"
            f" GPU memory in use while serving: {before} MiB")
    return not problem, said + (f"; {problem}" if problem else "")


def chat_argv(binary: Path, model_dir: Path, port: int) -> list[str]:
    """`mistralrs serve` on the tiny model's directory.  From upstream's
    mistralrs-cli/src/args/mod.rs (DefaultModelOptions, the same at v0.7.0
    and v0.9.2): `-m` takes a Hugging Face id or a local model directory,
    `-a` names the architecture (NormalLoaderType; "llama" parses in
    mistralrs-core/src/pipeline/loaders/normal_loaders.rs) where it would
    otherwise be read from config.json; --host and --port from
    mistralrs-cli/src/args/server.rs."""
    return [str(binary), "serve", "-m", str(model_dir), "-a", "llama", "--host", "127.0.0.1", "--port", str(port)]


def smoke_steps(kind: Smoke, binary: Path, env: dict[str, str], version: str, model_dir: Path) -> list[Step]:
    """The gate's commands for one installed binary, in order; each runs
    whatever the one before gave."""
    b = str(binary)
    base_version = version.split("~")[0].split("^")[0]
    steps = [
        run_step("version", [b, "--version"], env, lambda out: base_version in out),
        run_step("libraries", ["ldd", b], env, lambda out: "not found" not in out),
    ]
    port = free_port()
    if kind == Smoke.SELFTEST:
        steps.append(run_step("selftest", [b, "selftest"], env, lambda out: True))
        steps.append(serve_step("serve", [b, "serve", "-m", "gate-demo", "--host", "127.0.0.1", "--port", str(port)],
                                env, port, SERVE_TIMEOUT[kind], ask_demo))
    elif kind == Smoke.CHAT:
        write_model(model_dir)
        steps.append(serve_step("chat", chat_argv(binary, model_dir, port),
                                {**env, "HF_HUB_OFFLINE": "1"}, port, SERVE_TIMEOUT[kind], ask_chat))
    return steps
