from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from buildlib.demo.upstream import create_demo_repo  # noqa: E402


@pytest.fixture(scope="session")
def demo_upstream(tmp_path_factory):
    """The demo upstream as a local git repository, made once per run."""
    return create_demo_repo(tmp_path_factory.mktemp("upstream") / "mistral.rs")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache (mirror, cargo target dirs) for all tests: only the first
    build of a flavour compiles everything."""
    return tmp_path_factory.mktemp("cache")
