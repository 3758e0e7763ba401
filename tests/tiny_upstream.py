"""A tiny upstream made for one test: a cargo workspace without CUDA whose
packages and binaries change across tags the way mistral.rs's did, with
tags placed and dated as the test says.  Each binary prints its package's
version, so a test can tell which version's build it packages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import tomli_w

import pipeline

DAY = "2026-03-01T12:00:00+00:00"
LICENSE_TEXT = "MIT License\n\nCopyright (c) the tiny upstream's authors\n"


class TinyUpstream:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=master")

    def git(self, *args: str, date: str = DAY) -> str:
        return pipeline.git(self.path, *args, date=date)

    def commit(self, version: str, packages: dict[str, list[str]] | None = None, *, date: str = DAY,
               build_rs: str | None = None, note: str = "", license: str | None = LICENSE_TEXT,
               package_keys: dict | None = None, symlinks: dict[str, str] | None = None) -> str:
        """Write the workspace at `version` with packages {package: [binaries]}
        (default: mistralrs-cli building `mistralrs`), commit, return the id.
        license: the root LICENSE file's text (None: no such file);
        package_keys: added to every package's [package] table;
        symlinks: {path in the tree: target}, committed as symlinks."""
        packages = packages or {"mistralrs-cli": ["mistralrs"]}
        for old in self.path.iterdir():
            if old.name != ".git":
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        (self.path / "Cargo.toml").write_text(tomli_w.dumps({
            "workspace": {"members": list(packages), "resolver": "2",
                          "package": {"version": version, "edition": "2021"}},
        }))
        for package, binaries in packages.items():
            src = self.path / package / "src"
            src.mkdir(parents=True)
            (self.path / package / "Cargo.toml").write_text(tomli_w.dumps({
                "package": {"name": package, "version": {"workspace": True}, "edition": {"workspace": True},
                            "license": "MIT", **(package_keys or {})},
                "bin": [{"name": b, "path": "src/main.rs"} for b in binaries],
            }))
            (src / "main.rs").write_text(
                'fn main() { println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")); }\n')
            if build_rs is not None:
                (self.path / package / "build.rs").write_text(build_rs)
        if note:
            (self.path / "NOTE").write_text(note + "\n")
        if license is not None:
            (self.path / "LICENSE").write_text(license)
        for link, target in (symlinks or {}).items():
            (self.path / link).parent.mkdir(parents=True, exist_ok=True)
            (self.path / link).symlink_to(target)
        subprocess.run(["cargo", "generate-lockfile", "--offline", "--quiet"], cwd=self.path, check=True)
        self.git("add", "-A")
        self.git("commit", "--quiet", "--allow-empty", "-m", f"{version} {note}".strip(), date=date)
        return self.git("rev-parse", "HEAD")

    def tag(self, tag: str, commit: str = "HEAD", *, annotated_at: str | None = None) -> None:
        """A lightweight tag (as upstream's), or an annotated one dated annotated_at."""
        if annotated_at:
            self.git("tag", "--force", "-a", "-m", tag, tag, commit, date=annotated_at)
        else:
            self.git("tag", "--force", tag, commit)

    def rev(self, ref: str) -> str:
        return self.git("rev-parse", f"{ref}^{{commit}}")
