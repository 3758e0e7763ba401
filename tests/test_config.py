"""config.toml checking: every error names the key, the value and the form."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from buildlib import config as configmod
from buildlib.refs import RefError, check_rpm_version, parse_ref, rpm_version_of_tag, snapshot_version
from pipeline import CONFIG, project_config, run_doit, write_config


def load_with(tmp_path, mutate):
    data = project_config()
    mutate(data)
    return configmod.load(write_config(tmp_path, data))


def test_project_config_loads():
    cfg = configmod.load(CONFIG)
    assert [f.name for f in cfg.flavours] == ["ampere", "ada", "blackwell", "hopper", "ampere-dc", "blackwell-dc"]
    assert [f.compute_cap for f in cfg.flavours] == [86, 89, 120, 90, 80, 100]
    assert "A100" in cfg.flavour("ampere-dc").gpus and "B200" in cfg.flavour("blackwell-dc").gpus
    assert cfg.upstream.branch == "master"
    # upstream's history: mistralrs-cli builds `mistralrs` from 0.7.0 on (0.7.0-0.8.4 included)
    for version in ("0.7.0", "0.8.4-rc13", "0.8.4", "0.8.5", "0.9.2-rc1"):
        program = cfg.upstream.program(version)
        assert (program.package, program.binary) == ("mistralrs-cli", "mistralrs"), version
    # up to 0.6.x only mistralrs-server, without `serve`: refused in one line
    with pytest.raises(configmod.ConfigError, match=r"0\.6\.3 is older than 0\.7\.0.*mistralrs-server.*not packaged"):
        cfg.upstream.program("0.6.3")
    assert cfg.build.rustflags == "-C target-cpu=generic"
    assert {c.name for c in cfg.channels} == {"stable", "unstable"}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["flavours"]["ampere"].update(compute_cap="8.6"),
     'flavours.ampere.compute_cap = "8.6": write the compute capability as an integer without a dot: compute_cap = 86'),
    (lambda d: d["flavours"]["ampere"].update(compute_cap=8.6),
     "flavours.ampere.compute_cap = 8.6: write the compute capability as an integer without a dot: compute_cap = 86"),
    (lambda d: d["flavours"]["ada"].update(compute_cap="sm_89"), "compute_cap = 89"),
    (lambda d: d["build"].update(featurs=["cuda"]), "unknown key build.featurs; did you mean 'features'?"),
    (lambda d: d.update(flavour={}), "unknown key flavour; did you mean 'flavours'?"),
    (lambda d: d["flavours"]["ampere"].update(gpu=["x"]), "unknown key flavours.ampere.gpu; did you mean 'gpus'?"),
    (lambda d: d["build"].update(nvcc_threads="2"), 'build.nvcc_threads = "2": expected an integer'),
    (lambda d: d["build"].pop("cuda_version"), 'build.cuda_version is missing; expected a CUDA version such as "13.0"'),
    (lambda d: d["build"].update(features="cuda cudnn"), 'build.features = "cuda cudnn": expected a list of strings'),
    (lambda d: d["build"].update(features=["cuda; rm -rf /"]), "is not a cargo feature name"),
    (lambda d: d["flavours"].update({"Bad Name": {"compute_cap": 86, "gpus": []}}), "flavours.Bad Name: a flavour name"),
    (lambda d: d["flavours"]["ada"].update(compute_cap=86), "already used by flavour 'ampere'"),
    (lambda d: d["upstream"]["programs"].update({"0.9": {"package": "p", "binary": "b"}}),
     "is not a version of the form X.Y.Z"),
    (lambda d: d["upstream"]["programs"]["0.7.0"].update(binary="a b"), 'upstream.programs.0.7.0.binary = "a b"'),
    (lambda d: d["upstream"]["programs"]["0.7.0"].pop("package"), "upstream.programs.0.7.0.package is missing"),
    (lambda d: d["upstream"].update(binary_names={"0.0.0": "x"}), "replaced by [upstream.programs]"),
    (lambda d: d["channels"].pop("unstable"), "channels.unstable is missing"),
    (lambda d: d["package"].update(payload="zstd19"), 'package.payload = "zstd19": expected an rpm payload'),
    (lambda d: d["publish"].update(retention=0), "publish.retention = 0: expected 1 or more"),
    (lambda d: d["publish"].update(host_key=""), "publish.host_key is missing"),
    (lambda d: d["upstream"].update(branch="-x"), 'upstream.branch = "-x": expected a branch name'),
    (lambda d: d["upstream"].update(ref="main"), "upstream.ref: refusing ref 'main': expected a release tag"),
    (lambda d: d["publish"].update(metadata_expire="1 hour"), 'publish.metadata_expire = "1 hour": expected a duration'),
])
def test_config_errors_name_key_value_and_form(tmp_path, mutate, message):
    with pytest.raises(configmod.ConfigError) as e:
        load_with(tmp_path, mutate)
    assert message in str(e.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(configmod.ConfigError, match="copy config.toml from the project's top directory"):
        configmod.load(tmp_path / "nope.toml")
    (tmp_path / "config.toml").write_text("[build\n")
    with pytest.raises(configmod.ConfigError, match="not valid TOML"):
        configmod.load(tmp_path / "config.toml")


def test_doit_reports_a_bad_config_in_one_line(tmp_path):
    data = project_config()
    data["flavours"]["ampere"]["compute_cap"] = "8.6"
    rc, _, err = run_doit(write_config(tmp_path, data), "list")
    assert rc != 0
    assert "error: config.toml: flavours.ampere.compute_cap" in err and "compute_cap = 86" in err
    assert "Traceback" not in err


def test_adding_a_flavour_is_config_only(tmp_path):
    def add(d):
        d["flavours"]["blackwell-dc"] = {"compute_cap": 100, "gpus": ["B200"], "extra_features": []}
    cfg = load_with(tmp_path, add)
    assert cfg.flavour("blackwell-dc").compute_cap == 100
    out = subprocess.run([sys.executable, "-m", "doit", "list", "--all"], cwd=CONFIG.parent, capture_output=True,
                         text=True, env=dict(os.environ, MRPM_CONFIG=str(cfg.source))).stdout
    assert "build:blackwell-dc" in out and "verify:blackwell-dc" in out


@pytest.mark.parametrize("text", ["v0.9.2", "v0.9.2-rc1", "v10.0.0", "a" * 40, "0123456789abcdef0123456789abcdef01234567"])
def test_good_refs(text):
    assert parse_ref(text).text == text


@pytest.mark.parametrize("text", ["v1.0;touch x", "../x", "v0.9.2 ", "-v0.9.2", "v0.9", "v0.9.2-beta1", "v0.9.2\n",
                                  "A" * 40, "a" * 39, "", "v0.9.2-rc0", "refs/tags/v0.9.2", "v1.0.0;id"])
def test_bad_refs(text):
    with pytest.raises(RefError, match="refusing ref"):
        parse_ref(text)


def test_version_mapping():
    assert rpm_version_of_tag("v0.9.2") == "0.9.2"
    assert rpm_version_of_tag("v0.9.2-rc1") == "0.9.2~rc1"
    from datetime import date
    assert snapshot_version("v0.9.2", date(2026, 11, 24), 3, "abc1234" + "0" * 33) == "0.9.2^20261124.3.gabc1234"
    assert check_rpm_version("0.9.2^20261124.3.gabc1234")
    with pytest.raises(RefError):
        check_rpm_version("0.9.2;rm")


def test_cache_can_be_moved_by_environment(tmp_path, monkeypatch):
    path = write_config(tmp_path, project_config())
    assert configmod.load(path).paths.cache == (tmp_path / ".cache").resolve()
    monkeypatch.setenv("MRPM_CACHE", str(tmp_path / "runner-cache"))
    assert configmod.load(path).paths.cache == tmp_path / "runner-cache"


def test_values_are_typed_at_load(tmp_path, monkeypatch):
    """The ref, the target and durations are parsed once, when the
    configuration loads; nothing downstream parses them again."""
    monkeypatch.delenv("MRPM_REF", raising=False)
    cfg = load_with(tmp_path, lambda d: d["publish"].update(target="ci@repo.example.org:/srv/mistralrs-rpm/",
                                                              metadata_expire="2h"))
    assert cfg.upstream.ref.is_tag
    assert cfg.publish.target == configmod.SshTarget("ci", "repo.example.org", configmod.PurePosixPath("/srv/mistralrs-rpm"))
    assert cfg.publish.is_remote and cfg.host.upload_user == "ci"
    assert cfg.publish.metadata_expire == 7200 and configmod.format_duration(7200) == "2h"
    local = load_with(tmp_path, lambda d: d["publish"].update(target="repo"))
    assert local.publish.target == configmod.LocalTarget((tmp_path / "repo").resolve())
    assert local.host.repo_root == local.publish.target.path
    assert [c.is_stable for c in local.channels] == [c.name == configmod.STABLE for c in local.channels]
    monkeypatch.setenv("MRPM_REF", "a" * 40)
    assert load_with(tmp_path, lambda d: None).upstream.ref.is_commit
    monkeypatch.setenv("MRPM_REF", "v1;id")
    with pytest.raises(configmod.ConfigError, match="MRPM_REF: refusing ref"):
        load_with(tmp_path, lambda d: None)
