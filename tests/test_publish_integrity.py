"""A publish cancelled or killed leaves no secret behind; the repository's
key is an anchor, not an input; published packages are checked against the
metadata.  Real tools throughout: gpg, rpmsign, createrepo_c, rsync, sshd
with the forced command scripts/repo-shell, nginx and Debian's dnf."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import services  # noqa: E402
from fixtures import fakerpm  # noqa: E402
from test_publish import install_and_run, publish, published, stable_dir, write_config  # noqa: E402

from buildlib.layout import Layout  # noqa: E402
from buildlib.publish import cleanup, repodata, signing, transport  # noqa: E402
from buildlib.run import UserError, sha256_of  # noqa: E402

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("rpmbuild", "rpmsign", "createrepo_c", "rsync", "gpg", "dnf")),
    reason="needs rpm-build, rpmsign, createrepo_c, rsync, gpg and dnf (scripts/bootstrap installs them)",
)

OLD = "mistralrs-ampere-0.9.1-1.fc43.x86_64.rpm"
NEW = "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
SSH_KEY_ENV = "MRPM_SSH_KEY"


# --- helpers -------------------------------------------------------------------


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain text (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in argv:
                found.append(f"{entry.name}: {argv}")
    return found


def agents_for(home: str) -> list[str]:
    return [p for p in processes_mentioning(home) if "gpg-agent" in p]


def wait_until(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def ssh_env_config(tmp_path, keys, remote, url, monkeypatch, name="work"):
    """Publishing over SSH with the upload key in the environment variable
    publish.ssh_key_env (MRPM_SSH_KEY), as CI has it: the publish writes it
    into its scratch directory."""
    sshd, root = remote
    cfg = write_config(tmp_path / name, sshd.target(root), url, keys, host_key=sshd.host_key_line)
    assert cfg.publish.ssh_key == "" and cfg.publish.ssh_key_env == SSH_KEY_ENV
    monkeypatch.setenv(SSH_KEY_ENV, sshd.client_key.read_text())
    return cfg


def start_doit_publish(cfg, env_extra: dict) -> subprocess.Popen:
    """`doit publish` as CI runs it, in a process group of its own."""
    env = dict(os.environ, MRPM_CONFIG=str(cfg.source), **env_extra)
    env.pop("MRPM_REF", None)
    return subprocess.Popen([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "publish"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            text=True)


def read_until(proc: subprocess.Popen, done, timeout: float = 90) -> str:
    """Output up to the first line for which done(line, seen) is true."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"publish ended early:\n{seen}")
        seen += line
        if done(line, seen):
            return seen
    raise AssertionError(f"timed out:\n{seen}")


SCRATCH = re.compile(r"UserKnownHostsFile=(/\S+/mrpm-publish-[^/\s]+)/known_hosts")
GNUPGHOME = re.compile(r"_gpg_path (/\S+?)'?(?:\s|$)")


def secrets_of(output: str) -> tuple[Path, Path]:
    """The publish's scratch directory (upload key) and private GNUPGHOME, from its log."""
    scratch = SCRATCH.search(output)
    home = GNUPGHOME.search(output)
    assert scratch and home, output
    return Path(scratch.group(1)), Path(home.group(1))


def assert_nothing_left(scratch: Path, home: Path) -> None:
    assert not scratch.exists(), f"scratch directory (upload key) left: {sorted(scratch.iterdir())}"
    assert not home.exists(), "private keyring left"
    assert not agents_for(str(home)), agents_for(str(home))
    # no rsync, ssh or gpg still running on the publish's files
    assert not processes_mentioning(str(scratch)), processes_mentioning(str(scratch))
    assert not processes_mentioning(str(home)), processes_mentioning(str(home))


def old_repository_intact(root: Path, keys) -> None:
    """Still the old repository (the new package not listed), validly signed."""
    public = (root / signing.KEY_FILE_NAME).read_text()
    signing.verify_repomd(public, keys["main"][1], stable_dir(root) / "repodata")
    assert published(root) in ([OLD], [OLD, NEW])


# --- 5: cancellation -------------------------------------------------------------


@pytest.fixture
def slow_gpg(tmp_path):
    """gpg, unchanged, except that rpmsign's signing call first leaves a
    mark and waits: so a signal lands while a package is being signed."""
    bin_dir = tmp_path / "slowbin"
    bin_dir.mkdir()
    mark = tmp_path / "signing-now"
    real = shutil.which("gpg")
    wrapper = bin_dir / "gpg"
    wrapper.write_text(f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = "-sbo" ]; then touch '{mark}'; sleep 60; fi
done
exec '{real}' "$@"
""")
    wrapper.chmod(0o755)
    return bin_dir, mark


@pytest.mark.services
@pytest.mark.parametrize("when", ["upload", "signing"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_signal_cancels_cleanly(tmp_path, keys, remote, signum, when, slow_gpg, monkeypatch):
    sshd, root = remote
    cfg = ssh_env_config(tmp_path, keys, remote, "http://127.0.0.1:9/", monkeypatch)
    env = {}
    fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
    publish(cfg)
    key_before = (root / signing.KEY_FILE_NAME).read_bytes()
    fakerpm.build(cfg.paths.dist, "ampere", version="0.9.2", size_kib=1024)

    if when == "upload":
        proc = start_doit_publish(cfg, {**env, transport.BWLIMIT_ENV: "packages:100"})
        out = read_until(proc, lambda line, _: re.search(r"uploading [0-9]+ package", line) is not None)
        time.sleep(1.0)  # rsync is sending, slowly
        assert processes_mentioning("files-packages.txt"), "no rsync running"
    else:
        bin_dir, mark = slow_gpg
        proc = start_doit_publish(cfg, {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        out = read_until(proc, lambda line, _: "rpmsign --addsign" in line)
        assert wait_until(mark.exists), "rpmsign never called gpg"
    scratch, home = secrets_of(out)
    assert (scratch / "id_upload").exists() and home.is_dir()  # the secrets are there while it runs

    os.kill(proc.pid, signum)  # the publish itself, as CI's runner signals it; not its children
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    name = signal.Signals(signum).name
    errors = [line for line in rest.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"publish cancelled by {name}" in errors[0], rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    assert_nothing_left(scratch, home)
    assert not list(Layout.of(cfg).gnupg_parent.iterdir())
    # the repository is what a killed publish leaves: complete and signed, old or new
    old_repository_intact(root, keys)
    assert (root / signing.KEY_FILE_NAME).read_bytes() == key_before
    # and the next publish completes it
    assert publish(cfg)["channels"]["stable"]["kept"] == [OLD, NEW]


@pytest.mark.services
def test_sigkill_leaves_nothing_secret(tmp_path, keys, base_repo, remote, monkeypatch):
    """SIGKILL of the whole process group runs no code of ours: the watchdog
    (its own session) removes the keyring, stops the agent and removes the
    upload key at once; the repository still installs."""
    sshd, root = remote
    with services.nginx(root) as url:
        cfg = ssh_env_config(tmp_path, keys, remote, url, monkeypatch)
        env = {transport.BWLIMIT_ENV: "packages:100"}
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
        publish(cfg)
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.2", size_kib=1024)
        proc = start_doit_publish(cfg, env)
        out = read_until(proc, lambda line, _: re.search(r"uploading [0-9]+ package", line) is not None)
        scratch, home = secrets_of(out)
        time.sleep(1.0)
        assert agents_for(str(home))  # the passphrase is preset in it
        assert (scratch / "id_upload").exists()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: not scratch.exists() and not home.exists() and not agents_for(str(home))), \
            (scratch.exists(), home.exists(), agents_for(str(home)))
        assert_nothing_left(scratch, home)
        old_repository_intact(root, keys)
        assert "version=0.9.1-1" in install_and_run(tmp_path / "dnf", cfg, base_repo, "mistralrs-ampere")


@pytest.mark.slow
def test_next_publish_sweeps_what_a_killed_one_left(tmp_path, keys):
    """When the watchdog died too: the next publish removes keyrings and
    scratch directories whose owner is gone and stops their agents; what a
    running publish owns is left alone."""
    target = tmp_path / "srv"
    cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    layout = Layout.of(cfg)
    fakerpm.build(cfg.paths.dist, "ampere")
    dead = subprocess.Popen(["true"])
    dead.wait()

    def leftover(parent: Path, prefix: str, owner_pid: int) -> Path:
        parent.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        (d / cleanup.OWNER_FILE).write_text(f"{owner_pid} {cleanup._start_time(owner_pid) or '1'}\n")
        return d

    # a keyring holding the secret key, its agent running with the passphrase preset
    home = leftover(layout.gnupg_parent, "g", dead.pid)
    os.chmod(home, 0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import", str(keys["main"][0])], check=True,
                   capture_output=True, input=b"")
    subprocess.run(["gpgconf", "--launch", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(home)}, check=True)
    assert agents_for(str(home))
    scratch = leftover(Path(tempfile.gettempdir()), cleanup.SCRATCH_PREFIX, dead.pid)
    (scratch / "id_upload").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    alive = leftover(Path(tempfile.gettempdir()), cleanup.SCRATCH_PREFIX, os.getpid())  # a running publish's
    try:
        publish(cfg)
        assert not home.exists() and not scratch.exists()
        assert wait_until(lambda: not agents_for(str(home)), 10), agents_for(str(home))
        assert alive.exists()
    finally:
        shutil.rmtree(alive, ignore_errors=True)


# --- 6: the repository's key is the anchor ---------------------------------------


@pytest.mark.services
def test_wrong_signing_key_is_refused_before_upload(tmp_path, keys, base_repo):
    target = tmp_path / "srv"
    with services.nginx(target) as url:
        cfg = write_config(tmp_path / "work", str(target), url, keys)
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
        publish(cfg)
        snapshot = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.2")
        other_key, other_fpr = keys["other"]
        wrong = dataclasses.replace(cfg, publish=dataclasses.replace(
            cfg.publish, key_file=str(other_key), passphrase_file=""))
        with pytest.raises(UserError, match=rf"signing key {other_fpr.upper()} is not the repository's key"
                                            rf" {keys['main'][1].upper()}.*nothing was uploaded") as e:
            publish(wrong)
        assert "\n" not in str(e.value)
        after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
        assert after == snapshot  # the key file, the metadata, the packages: untouched

        # a pinned key decides too, before the host is asked
        pinned = dataclasses.replace(cfg, publish=dataclasses.replace(cfg.publish, key_fingerprint=other_fpr.upper()))
        with pytest.raises(UserError, match="publish.key_fingerprint pins"):
            publish(pinned)

        # the right key publishes; replacing the key on purpose: pin the new one
        assert publish(cfg)["channels"]["stable"]["added"] == [NEW]
        rotate = dataclasses.replace(wrong, publish=dataclasses.replace(wrong.publish, key_fingerprint=other_fpr))
        report = publish(rotate)
        host_key = (target / signing.KEY_FILE_NAME).read_text()
        assert signing.key_fingerprints(host_key) == [other_fpr.upper()]
        # every package left is signed by the new key (re-signed from dist/), and dnf installs with it
        rpm_files = sorted(stable_dir(target).glob("*.rpm"))
        signing.verify_rpms(host_key, other_fpr, rpm_files)
        signing.verify_repomd(host_key, other_fpr, stable_dir(target) / "repodata")
        assert sorted(report["channels"]["stable"]["kept"]) == [OLD, NEW]
        assert "version=0.9.2-1" in install_and_run(tmp_path / "dnf", rotate, base_repo, "mistralrs-ampere")


@pytest.mark.slow
def test_wrong_signed_published_package_is_not_kept(tmp_path, keys):
    """What the old code left (a package signed by another key, listed in
    metadata that key signed) is not taken as 'already published'."""
    target = tmp_path / "srv"
    cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
    publish(cfg)
    channel = stable_dir(target)
    intruder = fakerpm.build(tmp_path / "intruder", "ampere", version="0.9.5", marker="not ours")
    pub = dataclasses.make_dataclass("P", ["key_file", "key_env", "passphrase_file", "passphrase_env"])
    with signing.signing_key(pub(str(keys["other"][0]), "", "", "")) as key:
        signing.sign_rpms(key, [intruder])
        shutil.copy(intruder, channel)
        subprocess.run(["createrepo_c", "-q", "--no-database", "--update", str(channel)], check=True)
        signing.sign_repomd(key, channel / "repodata")
    assert intruder.name in published(target)
    report = publish(cfg)["channels"]["stable"]
    assert intruder.name in report["damaged"] and "against the repository's key" in report["damaged"][intruder.name]
    assert published(target) == [OLD] and not (channel / intruder.name).exists()
    signing.verify_repomd((target / signing.KEY_FILE_NAME).read_text(), keys["main"][1], channel / "repodata")


@pytest.mark.slow
def test_foreign_signed_package_in_dist_is_refused(tmp_path, keys):
    target = tmp_path / "srv"
    cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
    publish(cfg)
    foreign = fakerpm.build(cfg.paths.dist, "ampere", version="0.9.2")
    pub = dataclasses.make_dataclass("P", ["key_file", "key_env", "passphrase_file", "passphrase_env"])
    with signing.signing_key(pub(str(keys["other"][0]), "", "", "")) as key:
        signing.sign_rpms(key, [foreign])
    before = foreign.read_bytes()
    with pytest.raises(UserError, match=rf"{foreign.name} in dist/ is already signed by key"
                                        rf" {keys['other'][1][-16:].upper()}, not the repository's key"):
        publish(cfg)
    assert foreign.read_bytes() == before  # not signed over
    assert published(target) == [OLD] and not (stable_dir(target) / foreign.name).exists()


# --- 7: published packages are checked -------------------------------------------


def flip_byte(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.services
@pytest.mark.parametrize("where", ["local", "ssh"])
def test_flipped_byte_is_found_and_healed(tmp_path, keys, base_repo, request, where):
    if where == "ssh":
        sshd, root = request.getfixturevalue("remote")
        target = root
    else:
        target = tmp_path / "srv"
    with services.nginx(target) as url:
        if where == "ssh":
            cfg = write_config(tmp_path / "work", sshd.target(root), url, keys, host_key=sshd.host_key_line,
                               ssh_key=str(sshd.client_key))
        else:
            cfg = write_config(tmp_path / "work", str(target), url, keys)
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
        fakerpm.build(cfg.paths.dist, "ada", version="0.9.1")
        publish(cfg)
        channel = stable_dir(target)
        ampere = channel / OLD
        ada = channel / "mistralrs-ada-0.9.1-1.fc43.x86_64.rpm"
        size = ampere.stat().st_size
        flip_byte(ampere)
        assert ampere.stat().st_size == size

        # in dist/: uploaded again, signed, and the metadata describes the new file
        report = publish(cfg)["channels"]["stable"]
        assert list(report["damaged"]) == [OLD] and report["healed"] == [OLD], report
        assert "SHA-256" in report["damaged"][OLD]
        md = repodata.read_metadata(channel / "repodata")
        assert md.packages[OLD].pkgid == sha256_of(ampere)
        public = (target / signing.KEY_FILE_NAME).read_text()
        signing.verify_rpms(public, keys["main"][1], [ampere])
        assert "flavour=ampere" in install_and_run(tmp_path / "dnf1", cfg, base_repo, "mistralrs-ampere")
        # and then it is up to date again
        again = publish(cfg)["channels"]["stable"]
        assert again["damaged"] == {} and not again["metadata_rebuilt"]

        # not in dist/ any more: named in one line and dropped, the rest stays installable
        (cfg.paths.dist / ada.name).unlink()
        flip_byte(ada)
        report = publish(cfg)["channels"]["stable"]
        assert list(report["damaged"]) == [ada.name] and report["healed"] == []
        assert published(target) == [OLD] and not ada.exists()

        # a missing package is uploaded again
        ampere.unlink()
        report = publish(cfg)["channels"]["stable"]
        assert report["damaged"] == {OLD: "is missing"} and report["healed"] == [OLD]
        assert "flavour=ampere" in install_and_run(tmp_path / "dnf2", cfg, base_repo, "mistralrs-ampere")


@pytest.mark.slow
def test_key_fingerprint_setting(tmp_path, keys):
    cfg = write_config(tmp_path / "a", str(tmp_path / "srv"), "http://127.0.0.1:9/", keys)
    assert cfg.publish.key_fingerprint == ""
    text = Path(cfg.source).read_text().replace("[publish]\n", '[publish]\nkey_fingerprint = "%s"\n')
    spaced = " ".join(keys["main"][1][i:i + 4].lower() for i in range(0, 40, 4))
    Path(cfg.source).write_text(text % spaced)
    from buildlib import config

    assert config.load(cfg.source).publish.key_fingerprint == keys["main"][1].upper()
    Path(cfg.source).write_text(text % "0xDEADBEEF")
    with pytest.raises(UserError, match="publish.key_fingerprint.*40 hex digits"):
        config.load(cfg.source)


# --- the SBOMs beside the packages: not in the metadata, checked against dist/ ------------


@pytest.mark.services
@pytest.mark.parametrize("where", ["local", "ssh"])
def test_published_sboms_are_checked_against_dist(tmp_path, keys, request, where):
    if where == "ssh":  # no cheap digests on the host: the SBOMs are fetched and hashed here
        sshd, target = request.getfixturevalue("remote")
        cfg = write_config(tmp_path / "work", sshd.target(target), "http://127.0.0.1:9/", keys,
                           host_key=sshd.host_key_line, ssh_key=str(sshd.client_key))
    else:
        target = tmp_path / "srv"
        cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    dist = cfg.paths.dist
    fakerpm.build(dist, "ampere", version="0.9.1")
    fakerpm.build(dist, "ada", version="0.9.1")
    publish(cfg)
    channel = stable_dir(target)
    ampere = OLD.removesuffix(".rpm") + ".cdx.json"
    ada = "mistralrs-ada-0.9.1-1.fc43.x86_64.cdx.json"

    # same size, other bytes: found and uploaded again; the packages stay as they are
    flip_byte(channel / ampere)
    report = publish(cfg)["channels"]["stable"]
    assert report["sbom_damaged"] == {ampere: "is not the copy beside its package in dist/"}, report
    assert report["damaged"] == {} and not report["metadata_rebuilt"] and report["added"] == []
    assert (channel / ampere).read_bytes() == (dist / ampere).read_bytes()
    assert publish(cfg)["channels"]["stable"]["sbom_damaged"] == {}

    # missing: uploaded again
    (channel / ampere).unlink()
    assert publish(cfg)["channels"]["stable"]["sbom_damaged"] == {ampere: "is missing"}
    assert (channel / ampere).read_bytes() == (dist / ampere).read_bytes()

    # missing, and dist/ no longer holds the package: said so, the package stays published
    (dist / ada).unlink()
    (dist / ada.replace(".cdx.json", ".rpm")).unlink()
    (channel / ada).unlink()
    report = publish(cfg)["channels"]["stable"]
    assert report["sbom_damaged"] == {ada: "is missing, and dist/ does not hold it to restore it from"}
    assert ada.replace(".cdx.json", ".rpm") in published(target) and not (channel / ada).exists()


@pytest.mark.slow
def test_metadata_rebuilt_after_a_bad_signature_keeps_what_clients_may_still_fetch(tmp_path, keys):
    """A bad repomd.xml.asc makes the publish rebuild the metadata from the
    packages; the files the last good repomd.xml names stay on the host for
    metadata_expire, as on every publish, for clients that still hold it."""
    target = tmp_path / "srv"
    cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
    publish(cfg)
    channel = stable_dir(target)
    last_good = repodata.referenced_files(channel / "repodata" / "repomd.xml")
    (channel / "repodata" / "repomd.xml.asc").write_text("-----BEGIN PGP SIGNATURE-----\nbroken\n")
    fakerpm.build(cfg.paths.dist, "ampere", version="0.9.2")  # new metadata, other file names
    report = publish(cfg)["channels"]["stable"]
    assert report["metadata_rebuilt"]
    signing.verify_repomd((target / signing.KEY_FILE_NAME).read_text(), keys["main"][1], channel / "repodata")
    assert repodata.referenced_files(channel / "repodata" / "repomd.xml") != last_good
    kept = {p.name for p in (channel / "repodata").iterdir()}
    assert last_good - {"repomd.xml", "repomd.xml.asc"} <= kept, sorted(last_good - kept)


def test_a_local_target_hashes_each_published_package_once_and_still_sees_a_change(tmp_path, monkeypatch):
    """The digest memo: an unchanged file is not read again; a byte changed
    in place with its size and time put back is still found (its ctime
    moved), and so is a file replaced by another."""
    from buildlib.config import LocalTarget
    from buildlib.publish import transport_local

    root = tmp_path / "srv"
    (root / "ch").mkdir(parents=True)
    package = root / "ch" / "a.rpm"
    package.write_bytes(b"x" * 4096)
    memo = tmp_path / "build" / "digests.json"
    hashed = []
    real = transport_local.sha256_of
    monkeypatch.setattr(transport_local, "sha256_of", lambda p: hashed.append(p.name) or real(p))
    monkeypatch.setattr(transport_local, "RACY_S", 0.0)  # the files here were all just written

    def digests():
        t = transport_local.LocalTransport(LocalTarget(root), tmp_path / "scratch", memo)
        return t.digests(PurePosixPath("ch"), ["a.rpm"])["a.rpm"]

    first = digests()
    assert digests() == first and hashed == ["a.rpm"]  # the second publish reads nothing
    before = package.stat()
    time.sleep(0.02)  # past a coarse filesystem clock's tick
    with open(package, "r+b") as f:  # a byte changed in place, size and mtime put back
        f.write(b"y")
    os.utime(package, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert digests() != first and hashed == ["a.rpm", "a.rpm"]
    package.with_name("b.rpm").write_bytes(b"x" * 4096)
    os.replace(package.with_name("b.rpm"), package)  # another file under the name
    assert digests() == first and len(hashed) == 3
    memo.write_text("not json")  # a damaged memo is only a slower publish
    assert digests() == first and len(hashed) == 4
