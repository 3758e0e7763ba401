"""config.toml checking: every error names the key, the value and the form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("text", ["v1.0;touch x", "../x", "v1\uff10.0.0", "v0.9.1\u0660", "v0.9.2-rc1\uff11", "v0.9.2 ", "-v0.9.2", "v0.9", "v0.9.2-beta1", "v0.9.2\n",
                                  "A" * 40, "a" * 39, "", "v0.9.2-rc0", "refs/tags/v0.9.2", "v1.0.0;id"])
def test_bad_refs(text):
    with pytest.raises(RefError, match="refusing ref"):
        parse_ref(text)


def test_version_mapping():
    assert rpm_version_of_tag("v0.9.2") == "0.9.2"
    assert rpm_version_of_tag("v0.9.2-rc1") == "0.9.2~rc1"
    from datetime import date
    assert snapshot_version("v0.9.2", date(2026, 11, 24), 3, "abc1234" + "0" * 33) == "0.9.2^20261124.3gitabc1234"
    assert check_rpm_version("0.9.2^20261124.3gitabc1234")
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
    local = load_with(tmp_path, lambda d: d["publish"].update(target=f"{tmp_path}//repo/"))
    assert local.publish.target == configmod.LocalTarget(tmp_path / "repo")
    assert local.host.repo_root == local.publish.target.path
    assert [c.is_stable for c in local.channels] == [c.name == configmod.STABLE for c in local.channels]
    monkeypatch.setenv("MRPM_REF", "a" * 40)
    assert load_with(tmp_path, lambda d: None).upstream.ref.is_commit
    monkeypatch.setenv("MRPM_REF", "v1;id")
    with pytest.raises(configmod.ConfigError, match="MRPM_REF: refusing ref"):
        load_with(tmp_path, lambda d: None)


# --- hostile values: refused when the configuration loads ------------------------

TOUCH = "%(touch /tmp/mrpm-pwned)"


def _set(table: str, key: str, value):
    return lambda d: d[table].update({key: value})


def _channel(name: str):
    return lambda d: d["channels"].update({name: {"subdir": "x"}})


def _gpus(value: str):
    return lambda d: d["flavours"]["ampere"].update(gpus=["RTX 3090", value])


HOSTILE = {
    # the release spec's values
    "base_url macro": (_set("publish", "base_url", f"https://repo.example.org/{TOUCH}"), "publish.base_url"),
    "base_url newline": (_set("publish", "base_url", "https://repo.example.org/x\n%post\ntouch /tmp/x"), "publish.base_url"),
    "packager macro": (_set("package", "packager", f"Eve {TOUCH} <eve@example.org>"), "package.packager"),
    "packager newline": (_set("package", "packager", "Eve <eve@example.org>\n%post\ntouch /tmp/x"), "package.packager"),
    "channel macro": (_channel(TOUCH), "channels."),
    "channel newline": (_channel("extra\n%post\ntouch /tmp/x"), "channels."),
    "channel dotdot": (_channel("../../../../x"), "channels."),
    # the flavour spec's values
    "summary newline": (_set("package", "summary", "Fast\nRequires: evil"), "package.summary"),
    "summary too long": (_set("package", "summary", "x" * 201), "package.summary"),
    # the License tag is computed: package.license is refused whatever it holds,
    # and the licenses that make it up are SPDX expressions
    "license key": (_set("package", "license", "MIT"), "package.license"),
    "bundled license macro": (lambda d: d.update(bundled=[{"name": "x", "version": "1", "license": f"MIT {TOUCH}",
                                                           "url": "https://example.org/x"}]), "bundled[0].license"),
    "crate_license newline": (lambda d: d.update(crate_license=[{"name": "x", "version": "1.0.0",
                                                                 "license": "MIT\n%post"}]), "crate_license[0].license"),
    "url macro": (_set("package", "url", f"https://example.org/{TOUCH}"), "package.url"),
    "url newline": (_set("package", "url", "https://example.org/\n%post"), "package.url"),
    "gpus macro": (_gpus(TOUCH), "flavours.ampere.gpus"),
    "gpus newline": (_gpus("H100\n%post\ntouch /tmp/x"), "flavours.ampere.gpus"),
    "gpus section": (_gpus("%post"), "flavours.ampere.gpus"),
    "flavour macro": (lambda d: d["flavours"].update({TOUCH: {"compute_cap": 75, "gpus": ["x"]}}), "a flavour name"),
    "requires macro": (_set("package", "requires", [TOUCH]), "package.requires"),
    "feature_requires key": (lambda d: d["package"]["feature_requires"].update({TOUCH: ["x"]}), "package.feature_requires"),
    "dist macro": (_set("package", "dist", ".fc43%{lua:x}"), "package.dist"),
    # ssh's known_hosts
    "host_key newline": (_set("publish", "host_key", "repo.example.org ssh-ed25519 AAAAC3Nz\n* ssh-ed25519 AAAAC3Nz"),
                         "publish.host_key"),
    "host_key wildcard": (_set("publish", "host_key", "* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"), "publish.host_key"),
    "host_key marker": (_set("publish", "host_key", "@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
                        "publish.host_key"),
    # commands and environment
    "upstream dash": (_set("upstream", "url", "--upload-pack=touch /tmp/x"), "upstream.url"),
    "upstream helper": (_set("upstream", "url", "ext::sh"), "upstream.url"),
    "key_env": (_set("publish", "key_env", "X; touch /tmp/x"), "publish.key_env"),
    "rustflags control": (_set("build", "rustflags", "-C target-cpu=generic\x1b[2J"), "build.rustflags"),
    # TOML's nan and inf
    "timeout nan": (lambda d: d.setdefault("poll", {}).update(timeout=float("nan")), "poll.timeout = nan"),
    "timeout inf": (lambda d: d.setdefault("poll", {}).update(timeout=float("inf")), "poll.timeout = inf"),
    "backoff inf": (lambda d: d.setdefault("poll", {}).update(backoff=float("inf")), "poll.backoff = inf"),
    "timeout bool": (lambda d: d.setdefault("poll", {}).update(timeout=True), "poll.timeout = true"),
    "retrigger nan": (lambda d: d.setdefault("poll", {}).update(retrigger_after=float("nan")), "poll.retrigger_after = nan"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_values_are_refused_at_load(tmp_path, name):
    mutate, key = HOSTILE[name]
    with pytest.raises(configmod.ConfigError) as e:
        load_with(tmp_path, mutate)
    message = str(e.value)
    assert key in message and "\n" not in message, message


BAD_TARGETS = [
    "mistralrs-upload@repo.example.org:/srv/mistralrs-rpm;id",
    "mistralrs-upload@repo.example.org:relative/path",
    "-oProxyCommand=touch /tmp/mrpm-pwned:/x",
    "-oProxyCommand=sh:/x",
    "mistralrs-upload@-oProxyCommand=sh:/x",
    "mistralrs-upload@repo.example.org:/srv/../etc",
    "mistralrs-upload@repo.example.org:/srv/$(id)",
    "repo",
    "./repo",
    "/srv/../etc",
    "/srv/repo:x",
    "/srv/my repo",
    "~/repo",
    "",
]


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_malformed_targets_are_refused(tmp_path, target):
    with pytest.raises(configmod.ConfigError, match="publish.target = .*expected an absolute directory"):
        load_with(tmp_path, lambda d: d["publish"].update(target=target))


@pytest.mark.slow
def test_malformed_target_ends_doit_publish_in_one_line_and_publishes_nothing(tmp_path):
    """Before, these were taken for local directory names: publish exited 0
    and a repository appeared in the working directory."""
    for target in BAD_TARGETS[:3]:
        data = project_config()
        data["publish"]["target"] = target
        work = tmp_path / "work"
        rc, _, err = run_doit(write_config(work, data), "publish")
        assert rc != 0 and "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "publish.target" in errors[0], err
        assert sorted(p.name for p in work.iterdir()) == ["config.toml"]


def test_dotdot_channel_deletes_nothing_outside_the_project(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    project = tmp_path / "project"
    data = project_config()
    data["publish"]["target"] = str(project / "repo")
    # staging is <paths.build>/publish/<channel>: this one is tmp_path/victim
    data["channels"]["../../../victim"] = {"subdir": "x"}
    rc, _, err = run_doit(write_config(project, data), "publish")
    assert rc != 0 and "Traceback" not in err
    assert "channels." in err and "a channel name is" in err
    assert (victim / "keep").read_text() == "precious"


def test_config_file_not_utf8_or_a_directory(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(CONFIG.read_bytes().replace(b'summary = "', b'summary = "caf\xe9 '))
    with pytest.raises(configmod.ConfigError, match="not UTF-8"):
        configmod.load(bad)
    with pytest.raises(configmod.ConfigError, match="is a directory"):
        configmod.load(tmp_path)
    for path in (bad, tmp_path):
        rc, _, err = run_doit(path, "list")
        assert rc != 0 and "Traceback" not in err, err
        assert len([line for line in err.splitlines() if line.strip()]) == 1, err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "oversize"])
def test_a_config_that_is_not_a_small_regular_file_is_refused_at_once(tmp_path, kind):
    """A FIFO used to hang doit forever (nobody writes to it) and /dev/zero
    read until memory ran out; each is now one line, at once."""
    if kind == "fifo":
        path = tmp_path / "config.toml"
        os.mkfifo(path)
        expected = "not a regular file"
    elif kind == "dev-zero":
        path, expected = "/dev/zero", "not a regular file"
    else:
        path = tmp_path / "config.toml"
        path.write_bytes(CONFIG.read_bytes() + b"#" * (configmod.MAX_CONFIG_BYTES + 1) + b"\n")
        expected = "larger than 1024 KiB"
    with pytest.raises(configmod.ConfigError, match=expected):
        configmod.load(Path(path))
    # as users meet it: doit ends (a hang or a MemoryError would fail the timeout), one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(CONFIG.parent / "dodo.py"), "list"],
                          cwd=CONFIG.parent, env=dict(os.environ, MRPM_CONFIG=str(path)),
                          capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and expected in lines[0], proc.stderr


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["flavours"].update(release={"compute_cap": 75, "gpus": ["T4"]}),
     "flavours.release: its package would be mistralrs-release, the repository's release package"),
    (lambda d: d["flavours"].update({"ampere-debuginfo": {"compute_cap": 75, "gpus": ["T4"]}}),
     "read by dnf as debug data"),
    (lambda d: d["channels"]["unstable"].update(subdir=""),
     "channels.unstable.subdir: subdir = \"\" (the top directory) is already used by channel 'stable'"),
    (lambda d: d["channels"].update(nightly={"subdir": "unstable"}),
     "channels.nightly.subdir: subdir = \"unstable\" is already used by channel 'unstable'"),
    (lambda d: d["channels"].update(meta={"subdir": "repodata"}), "the top channel's metadata directory"),
])
def test_names_that_clash_on_the_host_are_refused_at_load(tmp_path, mutate, message):
    with pytest.raises(configmod.ConfigError) as e:
        load_with(tmp_path, mutate)
    assert message in str(e.value)


@pytest.mark.parametrize("ref", ["v0.9.\uff12", "v0.9.2\u0660", "v\u0660.9.2", "v0.9.2-rc\u0661"])
def test_non_ascii_digits_in_mrpm_ref_are_refused(tmp_path, monkeypatch, ref):
    monkeypatch.setenv("MRPM_REF", ref)
    with pytest.raises(configmod.ConfigError, match="MRPM_REF: refusing ref") as e:
        load_with(tmp_path, lambda d: None)
    assert str(e.value).isascii()


# Every path the configuration names reaches rpmbuild's --define (where
# '%(...)' runs a command: `rpmbuild --define "_topdir /x/b%(touch f)"`
# touches f), rsync (':' makes a host of it), nginx's site (';' ends a
# directive) or an authorized_keys line: refused when the config loads.
@pytest.mark.parametrize("section, key", [
    ("paths", "build"), ("paths", "cache"), ("paths", "artifacts"), ("paths", "dist"),
    ("host", "key_dir"), ("host", "letsencrypt_dir"), ("host", "nginx_site"), ("host", "nginx_conf"),
    ("host", "repo_shell"),
])
@pytest.mark.parametrize("value", ["b%(touch PWNED)", "with space", "x;include /etc/shadow", "host:dir", "$(id)"])
def test_a_path_with_characters_rpm_rsync_nginx_or_a_shell_read_is_refused(tmp_path, section, key, value):
    def mutate(d):
        d.setdefault(section, {})[key] = value
    with pytest.raises(configmod.ConfigError) as e:
        load_with(tmp_path, mutate)
    message = str(e.value)
    assert f"{section}.{key} = " in message and "letters, digits and . _ + - /" in message, message
    assert "\n" not in message


def test_mrpm_cache_is_held_to_the_same_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("MRPM_CACHE", str(tmp_path / "cache%(touch PWNED)"))
    with pytest.raises(configmod.ConfigError, match=r"MRPM_CACHE = .*letters, digits and \. _ \+ - /"):
        load_with(tmp_path, lambda d: None)
    monkeypatch.setenv("MRPM_CACHE", str(tmp_path / "runner-cache"))
    assert load_with(tmp_path, lambda d: None).paths.cache == tmp_path / "runner-cache"


def test_a_checkout_under_an_odd_directory_is_named_in_the_error(tmp_path):
    odd = tmp_path / "my project"
    odd.mkdir()
    with pytest.raises(configmod.ConfigError) as e:
        load_with(odd, lambda d: None)
    # the first path key read (host.key_dir, relative: "keys") names it
    assert 'host.key_dir = "keys", that is "' in str(e.value) and "/my proj" in str(e.value), str(e.value)


# publish.base_url's path becomes nginx `location` and `return` lines of the
# host's site (setup:nginx): ';' ends a directive there, '$' expands a
# variable, quotes and '..' change what is matched.
@pytest.mark.parametrize("path", ["/a;b", "/r$host", "/a/../etc", "/'x'", "/a(b)", "/a,b", "/a@b", "/.", "/a:b"])
def test_base_url_path_is_held_to_what_nginx_takes_literally(tmp_path, path):
    with pytest.raises(configmod.ConfigError, match=r"publish\.base_url = .*nginx's site as a location"):
        load_with(tmp_path, lambda d: d["publish"].update(base_url=f"https://repo.example.org{path}"))


@pytest.mark.parametrize("path, url_path", [("", ""), ("/", ""), ("/mistralrs-rpm", "/mistralrs-rpm"),
                                            ("/a/b_c.d~e/", "/a/b_c.d~e")])
def test_plain_base_url_paths_load(tmp_path, path, url_path):
    cfg = load_with(tmp_path, lambda d: d["publish"].update(base_url=f"https://repo.example.org{path}"))
    assert cfg.host.url_path == url_path


# host.email goes to certbot as --email's value, host.key_email into gpg's
# key parameters: an address starting with '-' (an option to certbot) or
# holding shell or gpg syntax is refused when the config loads.
@pytest.mark.parametrize("key", ["email", "key_email"])
@pytest.mark.parametrize("value", ["--server=https://evil.example@x.y", "-x@y.z", "$(id)@x.y", "a@b.c;", "a b@c.d"])
def test_host_email_addresses_are_plain(tmp_path, key, value):
    with pytest.raises(configmod.ConfigError, match=rf"host\.{key} = .*expected an e-mail address"):
        load_with(tmp_path, lambda d: d.setdefault("host", {}).update({key: value}))
    cfg = load_with(tmp_path, lambda d: d.setdefault("host", {}).update({key: "ops+repo@mail.example.org"}))
    assert getattr(cfg.host, key) == "ops+repo@mail.example.org"


@pytest.mark.parametrize("value", ["key file", "k'ey", "$(id)", "-oProxyCommand=x", "-i", "a;b"])
def test_ssh_key_path_is_plain(tmp_path, value):
    """publish.ssh_key reaches `ssh -i` inside rsync's -e command line,
    which rsync splits into words by its own rules."""
    with pytest.raises(configmod.ConfigError, match=r"publish\.ssh_key = .*a key file path"):
        load_with(tmp_path, lambda d: d["publish"].update(ssh_key=value))
    for good in ("~/.ssh/id_ed25519", "/etc/mistralrs-rpm/upload_key", "keys/ci"):
        assert load_with(tmp_path, lambda d: d["publish"].update(ssh_key=good)).publish.ssh_key == good


def test_rebuild_check_switch(tmp_path):
    assert load_with(tmp_path, lambda d: d["build"].pop("rebuild_check", None)).build.rebuild_check == "off"
    assert not load_with(tmp_path, lambda d: d["build"].update(rebuild_check="off")).build.rebuild_releases
    cfg = load_with(tmp_path, lambda d: d["build"].update(rebuild_check="releases"))
    assert cfg.build.rebuild_check == "releases" and cfg.build.rebuild_releases
    for bad, shown in (("always", '"always"'), ("Releases", '"Releases"'), (True, "true"), ("", '""')):
        with pytest.raises(configmod.ConfigError) as e:
            load_with(tmp_path, lambda d: d["build"].update(rebuild_check=bad))
        assert str(e.value).endswith(f'config.toml: build.rebuild_check = {shown}: expected "off" or "releases"')
