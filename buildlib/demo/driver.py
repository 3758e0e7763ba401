"""The main job end to end on the demo upstream: `scripts/demo`.

Everything it makes lives under .demo/ in the checkout (ignored by git;
`rm -rf .demo` cleans it): the demo upstream repository, a config pointing
at it, the cache, artifacts, RPMs, a demo signing key, the published
repository, the nginx serving it and the scratch root dnf installs into.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import requests
import tomli_w

from ..publish import signing
from ..config import CONFIG_ENV, REF_ENV, Config, load
from ..pipeline.records import BuildRecord, RpmRecord
from .upstream import create_demo_repo
from ..layout import DEFAULT_CONFIG, DEMO_DIR, DODO, PROJECT, Layout
from .localrepo import build_standin_repo, make_dnf_root, serve
from ..run import UserError, log, output, run

DEMO = DEMO_DIR
DEMO_REF = "v0.9.2"


@dataclass
class Timings:
    stages: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str, fn, *args):
        log(f"\n=== {name} ===")
        start = time.monotonic()
        result = fn(*args)
        self.stages[name] = time.monotonic() - start
        return result


# The demo's [[bundled]] and [[crate_license]] entries, in place of the real
# upstream's (the demo compiles in no CUTLASS or flash-attention): stand-ins
# of the two kinds, a library pinned to a commit and kernels copied without
# a version, so that every path of the license and SBOM code runs.
DEMO_BUNDLED = [
    {"name": "demo-kernel-lib", "version": "1.2.0^20260105git0123abc", "license": "BSD-3-Clause",
     "url": "https://example.invalid/demo-kernel-lib", "commit": "0123abc4567890abcdef0123456789abcdef0123"},
    {"name": "demo-quant-kernels", "version": "0", "license": "Apache-2.0",
     "url": "https://example.invalid/demo-quant-kernels"},
]
DEMO_CRATE_LICENSES: list[dict] = []


def write_config(dest: Path, upstream: Path, overrides: dict[str, dict]) -> Path:
    """The project's config.toml with the demo's settings swapped in, so the
    demo runs exactly the configuration format users edit."""
    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    data["upstream"]["url"] = str(upstream)
    data["upstream"]["ref"] = DEMO_REF
    data["build"]["min_free_gib"] = 1
    # The demo upstream links no cuDNN or NCCL and clones no CUTLASS.
    data["doctor"] = {"skip": ["cudnn", "nccl", "cutlass"]}
    data["paths"] = {"cache": "cache", "build": "build", "artifacts": "artifacts", "dist": "dist"}
    data["bundled"], data["crate_license"] = DEMO_BUNDLED, DEMO_CRATE_LICENSES
    for table, values in overrides.items():
        data.setdefault(table, {}).update(values)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("# Written by scripts/demo from the project's config.toml.\n" + tomli_w.dumps(data))
    return dest


def doit(config: Path, *tasks: str) -> None:
    # the demo's config names the ref: an empty MRPM_REF is no override
    proc = run([sys.executable, "-m", "doit", "-f", str(DODO), *tasks], env={CONFIG_ENV: str(config), REF_ENV: ""},
               cwd=PROJECT, check=False, quiet=True)
    if proc.returncode != 0:
        raise UserError(f"`doit {' '.join(tasks)}` failed (exit {proc.returncode}); see the output above")


DEMO_PORT_ENV = "MRPM_DEMO_PORT"
DEMO_FLAVOUR_ENV = "MRPM_DEMO_FLAVOUR"
# What a Fedora base system provides, by name pattern; everything else a
# package needs must come from the configured CUDA package names.
FEDORA_BASE = re.compile(r"^(/bin/sh|(ld-linux-x86-64|libc|libm|libgcc_s|libpthread|libdl|librt)\.so[.\d]*\(.*|rtld\(.*)\Z")


def demo_key() -> tuple[Path, str]:
    """The demo's signing key, made once on the spot."""
    key_file = DEMO / "keys" / signing.DEMO_KEY_NAME
    fingerprint_file = DEMO / "keys" / "fingerprint"
    if key_file.exists() and fingerprint_file.exists():
        return key_file, fingerprint_file.read_text().strip()
    path, fingerprint = signing.make_demo_key(DEMO / "keys")
    fingerprint_file.write_text(fingerprint + "\n")
    return path, fingerprint


def install_with_dnf(cfg: Config, flavour: str) -> dict:
    """dnf installs the flavour from the served repository into a scratch
    root, checking package and metadata signatures; the installed binary
    then reports what it was built for."""
    layout = Layout.of(cfg)
    rpm = sorted(layout.dist.glob(f"mistralrs-{flavour}-*.rpm"))[-1]
    requires = output(["rpm", "-qp", "--requires", rpm], quiet=True).splitlines()
    nvidia = cfg.package.requires_for(cfg.flavour(flavour).features(cfg.build))
    base = sorted({r for r in requires if FEDORA_BASE.match(r)} | set(nvidia))
    standin = build_standin_repo(DEMO / "standin", base)
    scratch = DEMO / "dnf"
    shutil.rmtree(scratch, ignore_errors=True)
    repo_file = requests.get(f"{cfg.publish.base_url}/mistralrs.repo", timeout=10)
    repo_file.raise_for_status()
    root = make_dnf_root(scratch, repo_file.text, standin)
    root.dnf("install", f"mistralrs-{flavour}", check=True, timeout=300)
    binary = root.root / "usr" / "bin" / cfg.upstream.binary_name(BuildRecord.load(layout, flavour).version)
    reported = json.loads(output([binary, "info"], quiet=True))
    log(f"installed mistralrs-{flavour} into {root.root}: {binary.name} info -> {json.dumps(reported)}")
    if reported.get("compute_cap") != str(cfg.flavour(flavour).compute_cap):
        raise UserError(f"the installed mistralrs-{flavour} reports compute capability {reported.get('compute_cap')}")
    return reported


def signature_of(rpm: Path) -> str:
    text = output(["rpm", "-qp", "--nosignature", "--qf",
                   "%|DSAHEADER?{%{DSAHEADER:pgpsig}}:{%|RSAHEADER?{%{RSAHEADER:pgpsig}}:{unsigned}|}|", rpm], quiet=True)
    algorithm = text.split(",")[0]
    return f"{algorithm} {text.split('Key ID ')[-1]}" if "Key ID" in text else text


def summary(config: Path, timings: Timings, url: str) -> str:
    cfg = load(config)
    layout = Layout.of(cfg)
    published = cfg.publish.target.path
    rows = [("flavour", "package", "size", "signed by key", "sm")]
    for f in cfg.flavours:
        record = RpmRecord.load(layout, f)
        name = record.file
        found = sorted(published.rglob(name))
        rows.append((f.name, name, f"{found[0].stat().st_size / 2**20:.2f} MiB" if found else "-",
                     signature_of(found[0]) if found else "not published", f"sm_{f.compute_cap}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
    stages = "\n".join(f"  {name:<16} {seconds:6.1f} s" for name, seconds in timings.stages.items())
    return f"{table}\n\ntime per stage:\n{stages}"


def main() -> int:
    try:
        timings = Timings()
        port = int(os.environ.get(DEMO_PORT_ENV, "8043"))
        upstream = timings.stage("demo upstream", create_demo_repo, DEMO / "upstream")
        key_file, fingerprint = timings.stage("demo key", demo_key)
        url = f"http://127.0.0.1:{port}"
        config = write_config(DEMO / "config.toml", upstream.path, {
            "publish": {"target": str(DEMO / "repo"), "base_url": url, "key_file": str(key_file),
                        "host_key": "", "ssh_key": ""},
        })
        cfg = load(config)
        flavour = os.environ.get(DEMO_FLAVOUR_ENV, cfg.flavours[0].name)
        cfg.flavour(flavour)
        timings.stage("doctor", doit, config, "doctor")
        timings.stage("fetch", doit, config, "fetch")
        timings.stage("build", doit, config, "build")
        timings.stage("verify", doit, config, "verify")
        timings.stage("package", doit, config, "spec", "rpm")
        timings.stage("publish", doit, config, "publish")
        timings.stage("serve", serve, DEMO / "repo", DEMO / "nginx", port)
        timings.stage("dnf install", install_with_dnf, cfg, flavour)
        print("\n" + summary(config, timings, url))
        print(f"\nThe repository is served at {url}/ (signing key {fingerprint});"
              f" stop it with: nginx -p {DEMO / 'nginx'} -c {DEMO / 'nginx' / 'nginx.conf'} -s stop")
        print("A user on Fedora 43 installs from it with:\n")
        print(f"  sudo dnf config-manager addrepo --from-repofile={url}/mistralrs.repo && sudo dnf install mistralrs-{flavour}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
