"""CUDA requirements that any CUDA 13.x runtime meets (issue 20): NAME-{cuda}
in package.requires becomes an rpm boolean dependency over the minors of
package.cuda_runtime; the rendered spec carries it, and dnf (with gpgcheck)
resolves it against a repository holding only a newer 13.x minor and
refuses one holding only 12.x."""

from __future__ import annotations

import subprocess

import pytest

import services
from buildlib import config as configmod
from buildlib.pipeline.spec import render_spec
from buildlib.publish import channels
from fixtures import fakerpm
from pipeline import project_config
from test_config import load_with
from test_package import fabricate, make_project
from test_publish import publish, write_config

CUDART_ANY_13 = "(" + " or ".join(f"cuda-cudart-13-{m}" for m in range(10)) + ")"


def test_cuda_placeholder_becomes_an_or_of_every_minor():
    cfg = configmod.load()
    requires = cfg.package.requires_for(("cuda", "cudnn", "nccl"))
    assert requires[0] == CUDART_ANY_13
    assert "(libcublas-13-0 or libcublas-13-1 or" in requires[1] and requires[1].endswith(" or libcublas-13-9)")
    # the driver stays a soname (any vendor's driver package), cuDNN and NCCL by name
    assert requires[-3:] == ("libcuda.so.1()(64bit)", "libcudnn9-cuda-13", "libnccl")


def test_one_version_is_a_plain_name(tmp_path):
    cfg = load_with(tmp_path, lambda d: d["package"].update(cuda_runtime="13.0-13.0"))
    assert cfg.package.requires_for(())[0] == "cuda-cudart-13-0"


@pytest.mark.parametrize("value, problem", [
    ("13", "package.cuda_runtime"),
    ("13.0-14.2", "one CUDA major"),
    ("13.4-13.2", "later one"),
    ("13.0-13.40", "at most 31 minors"),
    ("12.0-12.9", "build.cuda_version"),   # built with 13.0: a 12.x runtime cannot run it
])
def test_bad_cuda_runtime_is_refused(tmp_path, value, problem):
    with pytest.raises(configmod.ConfigError, match="package.cuda_runtime") as e:
        load_with(tmp_path, lambda d: d["package"].update(cuda_runtime=value))
    assert problem in str(e.value)


def test_a_runtime_older_than_the_build_is_refused(tmp_path):
    def mutate(d):
        d["build"]["cuda_version"] = "13.2"
        d["package"]["cuda_runtime"] = "13.0-13.9"
    with pytest.raises(configmod.ConfigError, match='CUDA 13.2 .* expected a range such as "13.2-13.9"'):
        load_with(tmp_path, mutate)


@pytest.mark.parametrize("dep", ["cuda-{cuda}-x", "{cuda}", "cuda-cudart-{cuda} >= 1", "cuda-cudart-{major}"])
def test_a_misplaced_placeholder_is_refused(tmp_path, dep):
    with pytest.raises(configmod.ConfigError, match="package.requires"):
        load_with(tmp_path, lambda d: d["package"].update(requires=[dep]))


def test_the_rendered_spec_requires_any_13x_runtime(tmp_path, pkg_libs):  # noqa: F811
    cfg, layout = make_project(tmp_path / "project")
    fabricate(layout, pkg_libs, "ampere", 86)
    text = render_spec(cfg, layout, cfg.flavour("ampere")).read_text()
    requires = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("Requires:")]
    assert requires == list(cfg.package.requires_for(cfg.flavour("ampere").features(cfg.build)))
    assert CUDART_ANY_13 in requires and "libcuda.so.1()(64bit)" in requires


def base_repo(tmp, provides: tuple[str, ...]):
    """A stand-in for NVIDIA's repository offering exactly provides."""
    fakerpm.build_base(tmp, ("/bin/sh", "libcuda.so.1()(64bit)", *provides))
    subprocess.run(["createrepo_c", "-q", str(tmp)], check=True)
    return tmp


@pytest.mark.services
def test_dnf_resolves_a_newer_minor_and_refuses_12x(tmp_path, keys):  # noqa: F811
    requires = configmod.load().package.requires_for(("cuda", "cudnn", "nccl"))
    newer = base_repo(tmp_path / "cuda-13-2", ("cuda-cudart-13-2", "libcublas-13-2", "libcurand-13-2",
                                               "cuda-nvrtc-13-2", "libcudnn9-cuda-13", "libnccl"))
    older = base_repo(tmp_path / "cuda-12-9", ("cuda-cudart-12-9", "libcublas-12-9", "libcurand-12-9",
                                               "cuda-nvrtc-12-9", "libcudnn9-cuda-13", "libnccl"))
    target = tmp_path / "srv"
    target.mkdir()
    assert project_config()["package"]["cuda_runtime"] == "13.0-13.9"
    with services.nginx(target) as url:
        cfg = write_config(tmp_path / "work", str(target), url, keys)
        fakerpm.build(cfg.paths.dist, "ampere", requires=requires)
        publish(cfg)
        ok = services.make_dnf_root(tmp_path / "dnf-13-2", channels.render_repo_file(cfg), newer)
        ok.dnf("install", "mistralrs-ampere", check=True)
        assert "flavour=ampere" in ok.run_installed()

        refused = services.make_dnf_root(tmp_path / "dnf-12-9", channels.render_repo_file(cfg), older)
        proc = refused.dnf("install", "mistralrs-ampere")
        assert proc.returncode != 0
        assert "cuda-cudart-13-0 or" in proc.stdout + proc.stderr
