"""The repository host's Fedora steps: SELinux labels and firewalld.

getenforce, semanage, restorecon and firewall-cmd are stand-ins on PATH
(nothing else is on it) that keep their state in files and record every
call, so the exact commands and a second run's quiet are asserted.  The
stand-ins model what the set-up relies on: semanage's list of local rules,
restorecon relabelling a tree once a rule covers it, firewalld's permanent
and runtime configuration (--reload copies one to the other).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from buildlib.host import firewall, selinux
from buildlib.run import UserError

from test_setup import host_for

STANDIN = f"""#!{sys.executable}
import json, os, pathlib, sys
state = pathlib.Path(os.environ["STANDIN_STATE"])
name = pathlib.Path(sys.argv[0]).name
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps([name, *args]) + "\\n")

def load(key, default):
    p = state / (key + ".json")
    return json.loads(p.read_text()) if p.exists() else default

def save(key, value):
    (state / (key + ".json")).write_text(json.dumps(value))

if name == "getenforce":
    print(os.environ["STANDIN_SELINUX"])
elif name == "semanage":
    rules = load("rules", {{}})
    if args == ["fcontext", "-l", "-C"]:
        print("SELinux fcontext                                   type               Context\\n")
        for spec, kind in rules.items():
            print(f"{{spec:<50}} all files          system_u:object_r:{{kind}}:s0")
    elif args[:2] in (["fcontext", "-a"], ["fcontext", "-m"]) and args[2] == "-t" and len(args) == 5:
        if (args[4] in rules) != (args[1] == "-m"):
            sys.exit("ValueError: File context for " + args[4] + (" already defined" if args[1] == "-a" else " is not defined"))
        rules[args[4]] = args[3]
        save("rules", rules)
    else:
        sys.exit("semanage stand-in: unexpected " + " ".join(args))
elif name == "restorecon":
    assert args[:2] == ["-R", "-v"] and len(args) == 3, args
    import re
    labels = load("labels", {{}})
    for path in sorted([args[2], *(str(p) for p in pathlib.Path(args[2]).rglob("*"))]):
        want = next((k for s, k in load("rules", {{}}).items() if re.fullmatch(s, path)), "default_t")
        if labels.get(path, "default_t") != want:
            print(f"Relabeled {{path}} from system_u:object_r:{{labels.get(path, 'default_t')}}:s0"
                  f" to system_u:object_r:{{want}}:s0")
            labels[path] = want
    save("labels", labels)
elif name == "firewall-cmd":
    if args == ["--state"]:
        running = os.environ["STANDIN_FIREWALLD"] == "running"
        print("running" if running else "not running")
        sys.exit(0 if running else 252)
    permanent, live = load("permanent", []), load("live", [])
    if args == ["--reload"]:
        save("live", permanent)
    elif len(args) == 2 and args[0] == "--permanent" and args[1].startswith("--query-"):
        sys.exit(0 if args[1][len("--query-"):] in permanent else 1)
    elif len(args) == 1 and args[0].startswith("--query-"):
        sys.exit(0 if args[0][len("--query-"):] in live else 1)
    elif args[0] == "--permanent" and all(a.startswith("--add-") for a in args[1:]):
        save("permanent", permanent + [a[len("--add-"):] for a in args[1:]])
    else:
        sys.exit("firewall-cmd stand-in: unexpected " + " ".join(args))
"""


@pytest.fixture
def fedora(tmp_path, monkeypatch):
    """PATH with only the stand-ins; calls() returns and forgets the calls so far."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("getenforce", "semanage", "restorecon", "firewall-cmd"):
        (bin_dir / name).write_text(STANDIN)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("STANDIN_STATE", str(state))
    monkeypatch.setenv("STANDIN_SELINUX", "Enforcing")
    monkeypatch.setenv("STANDIN_FIREWALLD", "running")
    host = host_for(tmp_path)
    host.repo_root.mkdir(parents=True)
    (host.repo_root / "fedora" / "43").mkdir(parents=True)
    (host.repo_root / "index.html").write_text("hello\n")

    class Fedora:
        def __init__(self):
            self.host, self.bin, self.state = host, bin_dir, state

        def calls(self) -> list[list[str]]:
            log = state / "calls.jsonl"
            lines = log.read_text().splitlines() if log.exists() else []
            log.unlink(missing_ok=True)
            return [[Path(c[0]).name, *c[1:]] for c in map(json.loads, lines)]

        def saved(self, key: str):
            return json.loads((state / f"{key}.json").read_text())

    return Fedora()


def test_selinux_rule_is_added_once_and_the_tree_relabelled(fedora, capfd):
    root = fedora.host.repo_root
    spec = f"{root}(/.*)?"
    assert selinux.label_repository(fedora.host) is True
    assert fedora.calls() == [
        ["getenforce"],
        ["semanage", "fcontext", "-l", "-C"],
        ["semanage", "fcontext", "-a", "-t", "httpd_sys_content_t", spec],
        ["restorecon", "-R", "-v", str(root)],
    ]
    assert fedora.saved("rules") == {spec: "httpd_sys_content_t"}
    assert set(fedora.saved("labels").values()) == {"httpd_sys_content_t"} and len(fedora.saved("labels")) == 4
    err = capfd.readouterr().err
    assert f"wrote: SELinux file context httpd_sys_content_t for {spec}" in err
    assert f"relabelled: 4 files under {root} (httpd_sys_content_t)" in err

    # A second run asks and changes nothing.
    assert selinux.label_repository(fedora.host) is False
    assert fedora.calls() == [
        ["getenforce"],
        ["semanage", "fcontext", "-l", "-C"],
        ["restorecon", "-R", "-v", str(root)],
    ]
    assert fedora.saved("rules") == {spec: "httpd_sys_content_t"}
    err = capfd.readouterr().err
    assert f"unchanged: SELinux file context httpd_sys_content_t for {spec}" in err
    assert f"unchanged: SELinux labels under {root}" in err

    # Files rsync creates later fall under the persistent rule too.
    (root / "fedora" / "43" / "new.rpm").write_bytes(b"rpm")
    assert selinux.label_repository(fedora.host) is True
    assert fedora.saved("labels")[str(root / "fedora" / "43" / "new.rpm")] == "httpd_sys_content_t"


def test_selinux_rule_of_another_type_is_modified(fedora):
    root = fedora.host.repo_root
    spec = f"{root}(/.*)?"
    (fedora.state / "rules.json").write_text(json.dumps({spec: "var_t"}))
    selinux.label_repository(fedora.host)
    assert ["semanage", "fcontext", "-m", "-t", "httpd_sys_content_t", spec] in fedora.calls()
    assert fedora.saved("rules") == {spec: "httpd_sys_content_t"}


def test_selinux_spec_escapes_dots_and_refuses_odd_paths(fedora):
    assert selinux.file_spec(Path("/srv/repo.example.org/rpm")) == r"/srv/repo\.example\.org/rpm(/.*)?"
    for odd in ("/srv/my repo", "/srv/x(y)", "/srv/a*b", "/"):
        with pytest.raises(UserError, match="letters, digits and ._-/ only"):
            selinux.file_spec(Path(odd))


def test_selinux_absent_or_disabled_is_skipped_with_a_line(fedora, monkeypatch, capfd):
    root = fedora.host.repo_root
    monkeypatch.setenv("STANDIN_SELINUX", "Disabled")
    assert selinux.label_repository(fedora.host) is False
    assert fedora.calls() == [["getenforce"]]
    assert capfd.readouterr().err.strip() == f"skipped: SELinux labels for {root} (SELinux is disabled)"

    (fedora.bin / "getenforce").unlink()
    assert selinux.label_repository(fedora.host) is False
    assert fedora.calls() == []
    assert capfd.readouterr().err.strip() == (f"skipped: SELinux labels for {root}"
                                              " (no getenforce: SELinux is not on this host)")


def test_selinux_without_semanage_says_which_package(fedora):
    (fedora.bin / "semanage").unlink()
    with pytest.raises(UserError, match="dnf install policycoreutils-python-utils"):
        selinux.label_repository(fedora.host)
    assert fedora.calls() == [["getenforce"]]


# What open_web_ports asks before it changes anything (permanent and live).
FIREWALL_QUERIES = [
    ["firewall-cmd", "--state"],
    ["firewall-cmd", "--permanent", "--query-service=http"],
    ["firewall-cmd", "--permanent", "--query-service=https"],
    ["firewall-cmd", "--query-service=http"],
    ["firewall-cmd", "--query-service=https"],
]


def test_firewall_opens_http_and_https_once(fedora, capfd):
    assert firewall.open_web_ports(fedora.host) is True
    assert fedora.calls() == [
        *FIREWALL_QUERIES,
        ["firewall-cmd", "--permanent", "--add-service=http", "--add-service=https"],
        ["firewall-cmd", "--reload"],
    ]
    assert fedora.saved("live") == ["service=http", "service=https"]
    assert "wrote: firewalld opens http, https (permanent, reloaded)" in capfd.readouterr().err

    assert firewall.open_web_ports(fedora.host) is False
    assert fedora.calls() == FIREWALL_QUERIES
    assert capfd.readouterr().err.strip() == "unchanged: firewalld opens http, https"


def test_firewall_other_ports_and_a_permanent_rule_not_yet_live(fedora):
    host = dataclasses.replace(fedora.host, https_port=8443)
    (fedora.state / "permanent.json").write_text(json.dumps(["service=http"]))
    assert firewall.open_web_ports(host) is True
    changes = [c for c in fedora.calls() if not any(a.startswith(("--query-", "--state")) for a in c)]
    assert changes == [["firewall-cmd", "--permanent", "--add-port=8443/tcp"], ["firewall-cmd", "--reload"]]
    assert fedora.saved("live") == ["service=http", "port=8443/tcp"]

    # Permanent but not live (no reload since): only the reload.
    (fedora.state / "live.json").write_text("[]")
    assert firewall.open_web_ports(host) is True
    assert [c for c in fedora.calls() if "--reload" in c or any(a.startswith("--add-") for a in c)] == [
        ["firewall-cmd", "--reload"]]


def test_firewall_absent_or_stopped_is_skipped_with_a_line(fedora, monkeypatch, capfd):
    monkeypatch.setenv("STANDIN_FIREWALLD", "stopped")
    assert firewall.open_web_ports(fedora.host) is False
    assert fedora.calls() == [["firewall-cmd", "--state"]]
    assert capfd.readouterr().err.strip() == "skipped: firewall (firewalld is not running)"

    (fedora.bin / "firewall-cmd").unlink()
    assert firewall.open_web_ports(fedora.host) is False
    assert fedora.calls() == []
    assert capfd.readouterr().err.strip() == "skipped: firewall (no firewall-cmd: firewalld is not installed)"


def test_doit_lists_the_fedora_steps_after_the_upload_user(tmp_path):
    from pipeline import project_config, write_config
    from test_setup import _doit

    data = project_config()
    data["paths"] = {"build": "build", "dist": "dist", "cache": "cache", "artifacts": "artifacts"}
    listing = _doit(tmp_path, write_config(tmp_path / "proj", data), "list", "--all", "--sort=definition")
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[0] for line in listing.stdout.splitlines() if line.startswith("setup:")]
    assert names == ["setup:gpg-key", "setup:dns", "setup:tls", "setup:nginx", "setup:upload-user",
                     "setup:selinux", "setup:firewall"]
