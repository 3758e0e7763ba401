"""What the gate runner's GPU is, as nvidia-smi reports it."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

from ..run import HostNotReady, run

QUERY = ["--query-gpu=compute_cap,name,driver_version", "--format=csv,noheader"]


@dataclass(frozen=True)
class Gpu:
    compute_cap: int
    """86 for "8.6", as flavours.<name>.compute_cap spells it."""
    name: str
    driver: str
    cuda: str
    """The CUDA version the driver supports ("unknown" where nvidia-smi does not say)."""


def smi_label(compute_cap: int) -> str:
    return f"{compute_cap // 10}.{compute_cap % 10}"


def runner_label(compute_cap: int) -> str:
    """The Gitea runner label of a GPU generation: gpu-sm90."""
    return f"gpu-sm{compute_cap}"


def query_gpu(what: str, want: int) -> Gpu:
    """GPU 0 of this machine; HostNotReady in one line where there is none
    (no nvidia-smi, or it fails: no driver)."""
    smi = shutil.which("nvidia-smi")
    hint = f"run it on a runner with a GPU of compute capability {smi_label(want)} (label {runner_label(want)})"
    if smi is None:
        raise HostNotReady(f"{what}: no NVIDIA GPU here (nvidia-smi is not on PATH): {hint}")
    answer = run([smi, *QUERY], capture=True, check=False, quiet=True)
    text = answer.stdout.decode(errors="replace").strip()
    fields = [f.strip() for f in text.splitlines()[0].split(",")] if text else []
    if answer.returncode != 0 or len(fields) != 3 or not re.fullmatch(r"\d+\.\d", fields[0]):
        said = " ".join((text or answer.stderr.decode(errors="replace")).split())[:200]
        raise HostNotReady(f"{what}: nvidia-smi found no usable GPU (exit {answer.returncode}: {said or 'no output'}): {hint}")
    major, minor = fields[0].split(".")
    plain = run([smi], capture=True, check=False, quiet=True).stdout.decode(errors="replace")
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", plain)
    return Gpu(int(major) * 10 + int(minor), fields[1], fields[2], cuda.group(1) if cuda else "unknown")


def memory_used_mib() -> int | None:
    """GPU 0's memory in use now, in MiB (None where nvidia-smi cannot say)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    answer = run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture=True, check=False, quiet=True)
    text = answer.stdout.decode(errors="replace").strip().splitlines()
    return int(text[0]) if answer.returncode == 0 and text and text[0].strip().isdigit() else None
