"""The main job end to end on the demo upstream: `scripts/demo`.

Everything it makes lives under .demo/ in the checkout (ignored by git;
`rm -rf .demo` cleans it): the demo upstream repository, a config pointing
at it, the cache, artifacts, RPMs, a demo signing key, the published
repository, the nginx serving it and the scratch root dnf installs into.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from .config import CONFIG_ENV, REF_ENV, load
from .demo_upstream import create_demo_repo
from .layout import PROJECT, Layout
from .run import UserError, log

DEMO = PROJECT / ".demo"
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


def write_config(dest: Path, upstream: Path, overrides: dict[str, dict]) -> Path:
    """The project's config.toml with the demo's settings swapped in, so the
    demo runs exactly the configuration format users edit."""
    data = tomllib.loads((PROJECT / "config.toml").read_text())
    data["upstream"]["url"] = str(upstream)
    data["upstream"]["ref"] = DEMO_REF
    data["build"]["min_free_gib"] = 1
    data["paths"] = {"cache": "cache", "build": "build", "artifacts": "artifacts", "dist": "dist"}
    for table, values in overrides.items():
        data.setdefault(table, {}).update(values)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("# Written by scripts/demo from the project's config.toml.\n" + tomli_w.dumps(data))
    return dest


def doit(config: Path, *tasks: str) -> None:
    env = dict(os.environ, **{CONFIG_ENV: str(config)})
    env.pop(REF_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py"), *tasks], env=env, cwd=PROJECT)
    if proc.returncode != 0:
        raise UserError(f"`doit {' '.join(tasks)}` failed (exit {proc.returncode}); see the output above")


def summary(config: Path, timings: Timings) -> str:
    cfg = load(config)
    layout = Layout.of(cfg)
    rows = [("flavour", "artifact", "size", "sm", "verified")]
    for f in cfg.flavours:
        record = json.loads(layout.build_record(f.name).read_text())
        verified = json.loads(layout.verify_record(f.name).read_text())
        rows.append((f.name, layout.artifact(f.name).name, f"{record['size'] / 2**20:.1f} MiB",
                     ",".join(f"sm_{a}" for a in verified["archs"]), verified["method"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
    stages = "  ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.stages.items())
    return f"{table}\n\ntime per stage: {stages}"


def main() -> int:
    try:
        timings = Timings()
        upstream = timings.stage("demo upstream", create_demo_repo, DEMO / "upstream")
        config = write_config(DEMO / "config.toml", upstream.path, {})
        timings.stage("doctor", doit, config, "doctor")
        timings.stage("fetch", doit, config, "fetch")
        timings.stage("build", doit, config, "build")
        timings.stage("verify", doit, config, "verify")
        print("\n" + summary(config, timings))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
