"""The main job end to end on the demo upstream: `scripts/demo`.

Everything it makes lives in one directory, $MRPM_DEMO_DIR or else .demo/
in the checkout (ignored by git; `rm -rf .demo` cleans it): the demo
upstream repository, a config pointing at it, the cache, artifacts, RPMs, a
demo signing key, the published repository, the nginx serving it and the
scratch root dnf installs into.

It ends at the users' front door, as the README tells them: dnf installs
``mistralrs-release`` from the served repository's URL, the installed
``mistralrs-flavour`` names the package for a stand-in ``nvidia-smi``'s
answer (each configured flavour's compute capability in turn), and dnf
installs that package through the release package's own .repo file and key.
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

from ..host import gpgkey
from ..publish import channels, signing
from ..config import CONFIG_ENV, REF_ENV, Config, load
from ..pipeline.records import BuildRecord, RpmRecord
from .upstream import create_demo_repo
from ..layout import DEFAULT_CONFIG, DODO, PROJECT, STAGING_SUBDIR, Layout, demo_dir
from .localrepo import DnfRoot, build_standin_repo, claim_port, make_dnf_root, serve
from ..run import UserError, log, output, run

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
# Their evidence lies in examples/demo-upstream (mistralrs-core/kernels/):
# one entry proved by a text in a file, one by a path alone.
DEMO_BUNDLED = [
    {"name": "demo-kernel-lib", "version": "1.2.0^20260105git0123abc", "license": "BSD-3-Clause",
     "url": "https://example.invalid/demo-kernel-lib", "commit": "0123abc4567890abcdef0123456789abcdef0123",
     "evidence": {"path": "mistralrs-core/kernels/THIRD-PARTY.md",
                  "contains": "demo-kernel-lib (BSD-3-Clause), at commit 0123abc4567890abcdef0123456789abcdef0123"}},
    {"name": "demo-quant-kernels", "version": "0", "license": "Apache-2.0",
     "url": "https://example.invalid/demo-quant-kernels",
     "evidence": {"path": "mistralrs-core/kernels/quant.cu"}},
]
# demo-banner names only a license file (license-file = "LICENSE"); its text
# is the ISC license, read and declared here as a packager would.
DEMO_CRATE_LICENSES: list[dict] = [
    {"name": "demo-banner", "version": "2.0.0", "license": "ISC"},
]


def write_config(dest: Path, upstream: Path, overrides: dict[str, dict], gate_off: bool = False) -> Path:
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
    # the demo upstream's own smoke: selftest, then serve's /health and /v1/models
    for row in data["upstream"]["programs"].values():
        row["smoke"] = "selftest"
    if gate_off:  # no GPU runners for the demo: promoted as "not tested on hardware"
        for flavour in data["flavours"].values():
            flavour["gate"] = "off"
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
# What a Fedora base system provides, by name pattern; everything else a
# package needs must come from the configured CUDA package names. libstdc++:
# the CUDA runtime and kernels linked into the binary are C++, as upstream's are.
FEDORA_BASE = re.compile(r"^(/bin/sh|(ld-linux-x86-64|libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|librt)\.so[.\d]*\(.*|rtld\(.*)\Z")


def demo_key(keys: Path) -> tuple[Path, str]:
    """The demo's signing key, made once on the spot, its public half
    exported where `doit release-package` looks for it (host.key_dir, which
    the demo's config sets to this directory)."""
    key_file = keys / signing.DEMO_KEY_NAME
    fingerprint_file = keys / "fingerprint"
    public = keys / gpgkey.PUBLIC_NAME
    if not (key_file.exists() and fingerprint_file.exists()):
        key_file, fingerprint = signing.make_demo_key(keys)
        public.unlink(missing_ok=True)
        fingerprint_file.write_text(fingerprint + "\n")
    fingerprint = fingerprint_file.read_text().strip()
    if not re.fullmatch(r"[0-9A-F]{40}", fingerprint):
        raise UserError(f"{fingerprint_file} does not hold a key's fingerprint: remove {keys} for a new demo key")
    if not public.exists():
        with signing.private_gnupghome() as home:
            gpg = signing.python_gnupg(home)
            gpg.import_keys(key_file.read_text())
            armored = gpg.export_keys(fingerprint)
        if "PUBLIC KEY BLOCK" not in armored:
            raise UserError(f"gpg could not export the public half of {key_file}")
        public.write_text(armored)
    return key_file, fingerprint


@dataclass
class FrontDoorStep:
    """One flavour's way through the front door."""

    smi_answer: str
    """what the stand-in nvidia-smi reported"""
    chosen: str
    """what the installed mistralrs-flavour printed"""
    installed: str
    """the package dnf installed, name-version-release"""
    reported_cap: str
    """the installed binary's own ``info``"""


@dataclass
class FrontDoor:
    release_url: str
    release_signature: str
    repo_file: str
    steps: list[FrontDoorStep]


def release_url(cfg: Config, url: str) -> str:
    """The published mistralrs-release in the stable channel, as the index page names it."""
    layout = Layout.of(cfg)
    stable = next(c for c in cfg.channels if c.is_stable)
    name = layout.release_rpm(cfg.host.release_package_version, cfg.package.dist).name
    return f"{url}/{channels.channel_dir(cfg, stable)}/{name}"


def standin_base(cfg: Config, dest: Path) -> Path:
    """The stand-in for Fedora and NVIDIA's repositories: what every
    flavour's RPM needs of them, by name."""
    layout = Layout.of(cfg)
    base: set[str] = set()
    for f in cfg.flavours:
        rpm = layout.dist / RpmRecord.load(layout, f.name).file
        requires = output(["rpm", "-qp", "--requires", rpm], quiet=True).splitlines()
        base |= {r for r in requires if FEDORA_BASE.match(r)}
        base |= set(cfg.package.requires_for(f.features(cfg.build)))
    return build_standin_repo(dest, sorted(base))


STAND_IN_GPU = "stand-in GPU (no driver)"


def stand_in_nvidia_smi(directory: Path, compute_cap: int) -> Path:
    """An nvidia-smi answering the one query mistralrs-flavour asks with
    one GPU of the given compute capability (86 -> 8.6)."""
    directory.mkdir(parents=True, exist_ok=True)
    smi = directory / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n# stands in for the NVIDIA driver's nvidia-smi (written by scripts/demo)\n"
        # the gate's question too (buildlib/gate/gpu.py): compute capability, name, driver
        f'[ "$*" = "--query-gpu=compute_cap,name,driver_version --format=csv,noheader" ] &&'
        f' {{ echo "{compute_cap // 10}.{compute_cap % 10}, {STAND_IN_GPU}, none"; exit 0; }}\n'
        '[ "$*" = "--query-gpu=compute_cap --format=csv,noheader" ] || { echo "nvidia-smi stand-in: $*" >&2; exit 2; }\n'
        f"echo {compute_cap // 10}.{compute_cap % 10}\n"
    )
    smi.chmod(0o755)
    return directory


def installed_package(root: DnfRoot, name: str, fmt: str) -> str:
    return output(["rpm", f"--root={root.root}", "-q", name, "--qf", fmt], env={"HOME": str(root.root.parent / "home")},
                  quiet=True)


def walk_front_door(cfg: Config, url: str, scratch: Path) -> FrontDoor:
    """What the README tells a user, on one scratch machine per configured
    flavour, each with one GPU of that flavour's compute capability: install
    mistralrs-release from its URL, then ``mistralrs-$(mistralrs-flavour)``
    through the .repo file and key that package installed."""
    package_url = release_url(cfg, url)
    page = requests.get(f"{url}/", timeout=10)
    page.raise_for_status()
    if f"sudo dnf install {package_url}" not in page.text:
        raise UserError(f"the index page at {url}/ does not tell users to install {package_url}")
    standin = standin_base(cfg, scratch / "standin")
    shutil.rmtree(scratch / "dnf", ignore_errors=True)
    steps: list[FrontDoorStep] = []
    signatures: set[str] = set()
    repo_path = ""
    for f in sorted(cfg.flavours, key=lambda f: f.compute_cap):
        gpu = f"{f.compute_cap // 10}.{f.compute_cap % 10}"
        # at first only the stand-in base: no .repo file of ours, no key
        root = make_dnf_root(scratch / "dnf" / f.name, None, standin)
        # the key comes with this first package, so dnf cannot check it (as on Fedora,
        # where a package given by URL is not checked unless localpkg_gpgcheck is set)
        root.dnf("--setopt=localpkg_gpgcheck=0", "install", package_url, check=True, timeout=300)
        signatures.add(signature_key(installed_package(
            root, "mistralrs-release", "%|DSAHEADER?{%{DSAHEADER:pgpsig}}:{%{RSAHEADER:pgpsig}}|")))
        repo_file = root.installed_reposdir / "mistralrs.repo"
        if not repo_file.exists():
            raise UserError(f"mistralrs-release installed no /{repo_file.relative_to(root.root)}")
        repo_path = f"/{repo_file.relative_to(root.root)}"
        smi = stand_in_nvidia_smi(scratch / "nvidia-smi" / f.name, f.compute_cap)
        chosen = output([root.root / "usr" / "bin" / "mistralrs-flavour"],
                        env={"PATH": f"{smi}{os.pathsep}{os.environ.get('PATH', '')}"}, quiet=True)
        if chosen != f.name:
            raise UserError(f"mistralrs-flavour chose {chosen!r} for compute capability {gpu}; expected {f.name}")
        package = f.package
        # from here on dnf knows our repositories only through the release package's .repo file and key
        root.with_installed_repos().dnf("install", package, check=True, timeout=300)
        binary = root.root / "usr" / "bin" / cfg.upstream.binary_name(BuildRecord.load(Layout.of(cfg), f).version)
        reported = json.loads(output([binary, "info"], quiet=True))
        if reported.get("compute_cap") != str(f.compute_cap):
            raise UserError(f"the installed {package} reports compute capability {reported.get('compute_cap')}")
        nevr = installed_package(root, package, "%{NAME}-%{VERSION}-%{RELEASE}")
        log(f"GPU {gpu}: mistralrs-flavour -> {chosen}; dnf installed {nevr} through {repo_path};"
            f" {binary.name} info -> {json.dumps(reported)}")
        steps.append(FrontDoorStep(gpu, chosen, nevr, f"sm_{reported['compute_cap']}"))
    return FrontDoor(package_url, ", ".join(sorted(signatures)), repo_path, steps)


def signature_key(text: str) -> str:
    """rpm's pgpsig text -> "EdDSA/SHA256 <key id>"."""
    algorithm = text.split(",")[0]
    return f"{algorithm} {text.split('Key ID ')[-1]}" if "Key ID" in text else text


def signature_of(rpm: Path) -> str:
    return signature_key(output(["rpm", "-qp", "--nosignature", "--qf",
                                 "%|DSAHEADER?{%{DSAHEADER:pgpsig}}:{%|RSAHEADER?{%{RSAHEADER:pgpsig}}:{unsigned}|}|", rpm],
                                quiet=True))


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def try_gates(config: Path, cfg: Config) -> dict[str, str]:
    """Each flavour's gate, tried: on a machine without the flavour's GPU it
    fails in one line, kept for the summary; where it passes, the index
    page says where it was tested."""
    results = {}
    for f in cfg.flavours:
        proc = run([sys.executable, "-m", "doit", "-f", str(DODO), f"gate:{f.name}"],
                   env={CONFIG_ENV: str(config), REF_ENV: ""}, cwd=PROJECT, check=False, quiet=True, capture=True)
        said = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.startswith("error:")]
        results[f.name] = "passed" if proc.returncode == 0 else (said[0] if said else f"failed (exit {proc.returncode})")
        log(f"gate:{f.name}: {results[f.name]}")
    return results


def summary(config: Path, timings: Timings, url: str, door: FrontDoor, gates: dict[str, str] | None = None) -> str:
    cfg = load(config)
    layout = Layout.of(cfg)
    published = cfg.publish.target.path
    gates = gates or {}
    rows = [("flavour", "package", "size", "signed by key", "sm", "gate")]
    for f in cfg.flavours:
        record = RpmRecord.load(layout, f)
        name = record.file
        # the channel's copy (promoted), not staging's
        found = sorted(p for p in published.rglob(name) if STAGING_SUBDIR not in p.relative_to(published).parts)
        tested = "tested on hardware" if gates.get(f.name) == "passed" else "not tested on hardware"
        rows.append((f.name, name, f"{found[0].stat().st_size / 2**20:.2f} MiB" if found else "-",
                     signature_of(found[0]) if found else "not published", f"sm_{f.compute_cap}", tested))
    steps = [("nvidia-smi", "mistralrs-flavour", f"dnf installed through {door.repo_file}", "binary reports")]
    steps += [(s.smi_answer, s.chosen, s.installed, s.reported_cap) for s in door.steps]
    stages = "\n".join(f"  {name:<16} {seconds:6.1f} s" for name, seconds in timings.stages.items())
    gate_lines = "".join(f"  gate:{n}: {r}\n" for n, r in gates.items())
    return (f"{table(rows)}\n\nthe gates (staging -> GPU -> promote; the demo's flavours have gate = \"off\"):\n{gate_lines}"
            f"\nthe front door, in scratch roots (gpgcheck=1, repo_gpgcheck=1):\n"
            f"  dnf install {door.release_url}\n    -> mistralrs-release, signed by {door.release_signature}\n"
            f"  then on a machine with a GPU of each flavour, dnf install \"mistralrs-$(mistralrs-flavour)\":\n"
            + "\n".join("    " + line for line in table(steps).splitlines())
            + f"\n\ntime per stage:\n{stages}")


def forget_other_address(repo: Path, url: str) -> None:
    """A repository the demo published for another address (an earlier run
    with another MRPM_DEMO_PORT) holds a mistralrs-release pointing there,
    and publishing never overwrites a package: start that repository afresh."""
    for rpm in sorted(repo.rglob("mistralrs-release-*.rpm")):
        published_for = output(["rpm", "-qp", "--nosignature", "--qf", "%{URL}", rpm], quiet=True)
        if published_for != url:
            log(f"{repo} was published for {published_for}; publishing it afresh for {url}")
            shutil.rmtree(repo)
            return


def main() -> int:
    try:
        demo = demo_dir()
        timings = Timings()
        port_text = os.environ.get(DEMO_PORT_ENV, "8043")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UserError(f"{DEMO_PORT_ENV}={port_text!r}: expected a port number (1-65535)")
        port = int(port_text)
        claim_port(demo / "nginx", port)
        upstream = timings.stage("demo upstream", create_demo_repo, demo / "upstream")
        key_file, fingerprint = timings.stage("demo key", demo_key, demo / "keys")
        url = f"http://127.0.0.1:{port}"
        forget_other_address(demo / "repo", url)
        config = write_config(demo / "config.toml", upstream.path, {
            "publish": {"target": str(demo / "repo"), "base_url": url, "key_file": str(key_file),
                        "host_key": "", "ssh_key": ""},
            # where `doit release-package` finds the public key (demo_key exports it there)
            "host": {"key_dir": str(demo / "keys")},
        }, gate_off=True)
        cfg = load(config)
        timings.stage("doctor", doit, config, "doctor")
        timings.stage("fetch", doit, config, "fetch")
        timings.stage("build", doit, config, "build")
        timings.stage("verify", doit, config, "verify")
        timings.stage("package", doit, config, "spec", "rpm", "release-package")
        timings.stage("publish", doit, config, "publish")
        gates = timings.stage("gate", try_gates, config, cfg)
        timings.stage("promote", doit, config, "promote", "--channel", "stable")
        timings.stage("serve", serve, demo / "repo", demo / "nginx", port)
        door = timings.stage("front door", walk_front_door, cfg, url, demo)
        print("\n" + summary(config, timings, url, door, gates))
        print(f"\nThe repository is served at {url}/ (signing key {fingerprint});"
              f" stop it with: nginx -p {demo / 'nginx'} -c {demo / 'nginx' / 'nginx.conf'} -s stop")
        print("A user on Fedora 43 installs from it with:\n")
        print(f"  sudo dnf install {door.release_url}")
        print('  sudo dnf install "mistralrs-$(mistralrs-flavour)"')
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
