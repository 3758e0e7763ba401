"""`doit gate:<flavour>`: the flavour's staged package proven on a GPU of
its generation.

1. nvidia-smi must report the flavour's compute capability (else one line).
2. dnf installs ``mistralrs-<flavour>`` from the channel's staging area as
   a user's dnf would (``gpgcheck=1``, ``repo_gpgcheck=1``, the
   repository's key) into a scratch installroot, its other dependencies
   from the runner's own repositories (``--reposdir``, by default
   ``/etc/yum.repos.d``: Fedora's and NVIDIA's CUDA repository).  A scratch
   root, not a container: it needs no container engine or GPU pass-through,
   leaves the runner's own system untouched, and still sees the host's
   driver (its libcuda.so.1, first on the library path, and /dev/nvidia*),
   which must match the running kernel module.
3. The smoke (:mod:`.smoke`): the binary's version, ldd of every library it
   links, then the command the upstream version's ``smoke`` names.
4. The gate record (:mod:`.record`) goes beside the staged package,
   passed or failed; a failure ends the task in one line after that.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ..config import Config, LocalTarget
from ..demo.localrepo import DnfRoot
from ..layout import Layout, gate_beside
from ..publish.channels import staging_dir
from ..publish.signing import KEY_FILE_NAME
from ..run import Refused, UserError, atomic_write, log, output
from .gpu import query_gpu, runner_label, smi_label
from .record import GateRecord
from .smoke import host_driver_dir, library_path, smoke_steps

DEFAULT_REPOSDIR = "/etc/yum.repos.d"


class GateFailed(UserError):
    pass


def staging_url(cfg: Config, channel) -> str:
    """Where dnf reads the staging area: a local target where it lies (the
    runner is the host), else under publish.base_url."""
    if isinstance(cfg.publish.target, LocalTarget):
        return f"file://{cfg.publish.target.path}/{staging_dir(cfg, channel)}"
    return f"{cfg.publish.base_url.rstrip('/')}/{staging_dir(cfg, channel)}"


def key_url(cfg: Config) -> str:
    if isinstance(cfg.publish.target, LocalTarget):
        return f"file://{cfg.publish.target.path}/{KEY_FILE_NAME}"
    return f"{cfg.publish.base_url.rstrip('/')}/{KEY_FILE_NAME}"


def staging_repo_file(cfg: Config, channel) -> str:
    return (f"[mistralrs-{channel.name}-staging]\nname=mistralrs-rpm {channel.name} (staging, for the gate)\n"
            f"baseurl={staging_url(cfg, channel)}\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
            f"gpgkey={key_url(cfg)}\nmetadata_expire=0\n")


def gate_flavour(cfg: Config, layout: Layout, flavour: str, channel: str, reposdir: str = DEFAULT_REPOSDIR) -> dict:
    f = next((x for x in cfg.flavours if x.name == flavour), None)
    if f is None:
        raise UserError(f"gate: no flavour {flavour!r} in {cfg.source}")
    ch = cfg.channel(channel)
    what = f"gate:{f.name}"
    gpu = query_gpu(what, f.compute_cap)
    if gpu.compute_cap != f.compute_cap:
        raise Refused(f"{what}: this machine's GPU ({gpu.name}) has compute capability {smi_label(gpu.compute_cap)},"
                      f" {f.package} is for {smi_label(f.compute_cap)}: run it on a runner labelled {runner_label(f.compute_cap)}")
    work = layout.gate_dir(f.name)
    shutil.rmtree(work, ignore_errors=True)
    repos = work / "repos.d"
    repos.mkdir(parents=True)
    for repo in sorted(Path(reposdir).glob("*.repo")):
        shutil.copyfile(repo, repos / repo.name)
    (repos / "mistralrs-staging.repo").write_text(staging_repo_file(cfg, ch))
    conf = work / "dnf.conf"
    conf.write_text("[main]\ngpgcheck=1\nrepo_gpgcheck=1\nskip_if_unavailable=False\n")
    (work / "root").mkdir()
    (work / "home").mkdir()
    root = DnfRoot(root=work / "root", reposdir=repos, conf=conf)
    started = datetime.now(timezone.utc)
    log(f"{what}: GPU {gpu.name} (compute capability {smi_label(gpu.compute_cap)}, driver {gpu.driver}, CUDA {gpu.cuda});"
        f" installing {f.package} from {staging_url(cfg, ch)}")
    installed = root.dnf("install", f.package, timeout=1800)
    if installed.returncode != 0:
        tail = " ".join(installed.stderr.split())[-600:]
        raise GateFailed(f"{what}: dnf could not install {f.package} from the {ch.name} staging area"
                         f" (exit {installed.returncode}): {tail}")
    env_home = {"HOME": str(work / "home")}
    qf = "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\t%{VERSION}\\t%{SHA256HEADER}"
    nevra, version, header = output(["rpm", f"--root={root.root}", "-q", f.package, "--qf", qf], env=env_home,
                                    quiet=True).split("\t")
    binary = root.root / "usr" / "bin" / cfg.upstream.binary_name(version)
    program = cfg.upstream.program(version)
    driver = host_driver_dir(work)

    env = dict(os.environ, LD_LIBRARY_PATH=library_path(root.root, driver), HOME=str(work / "home"))
    steps = smoke_steps(program.smoke, binary, env, version, work / "model")
    passed = all(s.passed for s in steps)
    record = GateRecord(flavour=f.name, channel=ch.name, nevra=nevra, file=f"{nevra}.rpm", header_sha256=header,
                        gpu=gpu.name, compute_cap=smi_label(gpu.compute_cap), driver=gpu.driver, cuda=gpu.cuda,
                        smoke=str(program.smoke), passed=passed, steps=[s.__dict__ for s in steps],
                        started=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        finished=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        driver_from_host=driver is not None)
    atomic_write(layout.gate_record(f.name), record.to_json())
    upload_record(cfg, ch, layout.gate_record(f.name), gate_beside(record.file))
    for s in steps:
        log(f"{what}: {s.name}: {'passed' if s.passed else 'FAILED'} (exit {s.exit})")
    if not passed:
        first = next(s for s in steps if not s.passed)
        last = " ".join(first.tail.split())[-300:]
        raise GateFailed(f"{what}: {nevra} failed its gate on {gpu.name}: `{' '.join(first.argv[1:]) or first.name}`"
                         f" (exit {first.exit}): {last}")
    log(f"{what}: {nevra} passed on {gpu.name} (driver {gpu.driver}); its record is beside it in staging")
    return record.__dict__


def upload_record(cfg: Config, channel, record: Path, name: str) -> None:
    """The record beside the staged package, under the publish lock."""
    from ..publish.publisher import open_transport

    with tempfile.TemporaryDirectory(prefix="mrpm-gate-") as scratch:
        up = Path(scratch) / "up"
        up.mkdir()
        shutil.copyfile(record, up / name)
        target = open_transport(cfg.publish, Path(scratch))
        with target.lock():
            target.upload(up, [name], staging_dir(cfg, channel), what="gate", checksum=True)


