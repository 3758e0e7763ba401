"""The signing key, rpmsign, and every signature check.

The key lives only for one publish: :func:`signing_key` imports the
ASCII-armored secret key (from ``publish.key_file`` or the environment
variable ``publish.key_env``) into a private ``GNUPGHOME`` (mode 0700) and
removes it, with its gpg-agent stopped, afterwards, also when a signal
cancels the publish or it is killed (:mod:`.cleanup`).  Which key may sign
is the repository's to say (``anchor.repository_key``).

The passphrase never reaches a command line or a log.  It is handed to the
agent once, on gpg-preset-passphrase's standard input, and the agent is told
to ``allow-preset-passphrase``; every later gpg (rpmsign's, python-gnupg's)
then signs through the agent without asking.  This works the same for rpm
4.18 (Debian, ``%_gpg_name``) and rpm 6 (Fedora 43, ``%_openpgp_sign_id``),
because neither needs a passphrase option in its sign command; gpg runs with
``--batch --pinentry-mode error`` so that a missing passphrase fails at once
instead of waiting for a pinentry.

Checks are made against the public key only, in places that hold nothing
else: packages with ``rpm -Kv`` in a scratch rpm database, ``repomd.xml.asc``
with gpg in a scratch keyring.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..run import Refused, log, output, read_regular_file, require_tool, run
from . import cleanup

if TYPE_CHECKING:
    import gnupg

KEY_FILE_NAME = "RPM-GPG-KEY-mistralrs"
DEMO_KEY_NAME = "mistralrs-signing-key.asc"


class SigningError(Refused):
    pass


@dataclass(frozen=True)
class SigningKey:
    """An imported key, usable while its :func:`signing_key` block runs."""

    fingerprint: str
    public_key: str
    """ASCII-armored public key."""
    gnupghome: Path
    gpg_binary: str

    def gpg(self) -> "gnupg.GPG":
        return python_gnupg(self.gnupghome, self.gpg_binary)


# --- the key ---------------------------------------------------------------


def _read_secret(file_setting: str, env_setting: str, what: str, required: bool) -> str | None:
    if file_setting:
        path = Path(file_setting).expanduser()
        try:
            # an armored key is a few KiB; a FIFO or /dev/zero is refused, not read
            data = read_regular_file(path, 1 << 20, what, SigningError)
        except FileNotFoundError:
            raise SigningError(f"publish: cannot read the {what} from {path}: No such file or directory") from None
        except SigningError as e:
            raise SigningError(f"publish: {e}") from None
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise SigningError(f"publish: the {what} in {path} is not ASCII-armored text") from None
    if env_setting and env_setting in os.environ:
        return os.environ[env_setting]
    if required:
        raise SigningError(
            f"publish: no {what}: set publish.key_file to an ASCII-armored secret key file,"
            f" or put the key into the environment variable {env_setting or 'named by publish.key_env'}"
        )
    return None


def python_gnupg(home: Path, gpg_binary: str | None = None) -> "gnupg.GPG":
    """python-gnupg on a private home; imported here so that `doit` starts fast."""
    import gnupg

    return gnupg.GPG(gnupghome=str(home), gpgbinary=gpg_binary or _real_gpg())


def _real_gpg() -> str:
    return os.path.realpath(require_tool("gpg", "install gnupg"))


@contextlib.contextmanager
def private_gnupghome(parent: Path | None = None) -> Iterator[Path]:
    """A fresh GNUPGHOME (0700), removed with its agent stopped afterwards:
    when the block ends, when a signal cancels it, and (through the
    watchdog, or else the next publish's sweep) when the process is killed
    (:mod:`.cleanup`).

    gpg puts its agent's socket in the home when /run/user/<uid> is absent;
    a socket path has to fit in 107 bytes, so long parents fall back to /tmp.
    """
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
        if len(str(parent)) > 60:
            parent = None
    with cleanup.cancellable("gpg"):
        home = Path(tempfile.mkdtemp(prefix="g" if parent is not None else cleanup.GNUPG_PREFIX, dir=parent))
        try:
            os.chmod(home, 0o700)
            cleanup.mark_owner(home)
            cleanup.watch(home, gnupghome=True)
            yield home
        finally:
            cleanup.kill_agent(home)
            shutil.rmtree(home, ignore_errors=True)


def _keygrips(gpg_binary: str, home: Path, fingerprint: str) -> list[str]:
    text = output([gpg_binary, "--homedir", home, "--batch", "--with-colons", "--with-keygrip",
                   "--list-secret-keys", fingerprint], quiet=True)
    return [line.split(":")[9] for line in text.splitlines() if line.startswith("grp:")]


def _preset_passphrase(home: Path, keygrips: Sequence[str], passphrase: str) -> None:
    libexec = output(["gpgconf", "--list-dirs", "libexecdir"], quiet=True)
    preset = Path(libexec) / "gpg-preset-passphrase"
    if not preset.exists():
        raise SigningError(f"{preset} is missing (install gnupg's agent tools)")
    env = {"GNUPGHOME": str(home)}
    run(["gpgconf", "--launch", "gpg-agent"], env=env, quiet=True, capture=True)
    for grip in keygrips:
        # the passphrase goes on stdin; argv holds only the keygrip
        run([preset, "--preset", grip], env=env, input=passphrase.encode(), capture=True)


@contextlib.contextmanager
def signing_key(publish, gnupg_parent: Path | None = None) -> Iterator[SigningKey]:
    """Import the configured secret key (cfg.publish) for the block's duration."""
    armored = _read_secret(publish.key_file, publish.key_env, "signing key", required=True)
    passphrase = _read_secret(publish.passphrase_file, publish.passphrase_env, "passphrase", required=False) or ""
    passphrase = passphrase.rstrip("\r\n")
    if "PRIVATE KEY BLOCK" not in armored:
        where = publish.key_file or f"${publish.key_env}"
        raise SigningError(f"publish: {where} does not hold an ASCII-armored secret key (-----BEGIN PGP PRIVATE KEY BLOCK-----)")
    gpg_binary = _real_gpg()
    with private_gnupghome(gnupg_parent) as home:
        (home / "gpg-agent.conf").write_text("allow-preset-passphrase\nallow-loopback-pinentry\n")
        (home / "gpg.conf").write_text("pinentry-mode error\n")
        gpg = python_gnupg(home, gpg_binary)
        result = gpg.import_keys(armored)
        secrets = gpg.list_keys(secret=True)
        if not secrets:
            raise SigningError(f"publish: the signing key could not be imported ({result.summary() or 'no secret key found'})")
        if len(secrets) > 1:
            raise SigningError(f"publish: the signing key material holds {len(secrets)} secret keys; give exactly one")
        fingerprint = secrets[0]["fingerprint"]
        if passphrase:
            _preset_passphrase(home, _keygrips(gpg_binary, home, fingerprint), passphrase)
        key = SigningKey(fingerprint=fingerprint, public_key=gpg.export_keys(fingerprint),
                         gnupghome=home, gpg_binary=gpg_binary)
        _check_usable(key)
        log(f"signing with key {fingerprint}")
        yield key


def _check_usable(key: SigningKey) -> None:
    """Sign a few bytes: a wrong or missing passphrase fails here, clearly."""
    import io

    sig = key.gpg().sign_file(io.BytesIO(b"mistralrs-rpm"), keyid=key.fingerprint, detach=True, binary=False)
    if not sig.data or sig.fingerprint != key.fingerprint:
        raise SigningError(
            "publish: the signing key cannot sign: wrong or missing passphrase?"
            " (publish.passphrase_file or the environment variable publish.passphrase_env)"
        )


def make_demo_key(dest_dir: Path, passphrase: str = "", name: str = "mistralrs-rpm demo") -> tuple[Path, str]:
    """A new Ed25519 signing key, written ASCII-armored (mode 0600) into
    dest_dir; returns (path, fingerprint).  For the demo and the tests."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with private_gnupghome() as home:
        gpg = python_gnupg(home)
        params = [
            "Key-Type: eddsa", "Key-Curve: ed25519", "Key-Usage: sign",
            f"Name-Real: {name}", "Name-Email: packager@mistralrs-rpm.invalid", "Expire-Date: 0",
        ]
        params.append(f"Passphrase: {passphrase}" if passphrase else "%no-protection")
        # gen_key_input's text reaches gpg on stdin, not argv
        result = gpg.gen_key("\n".join(params) + "\n%commit\n")
        fingerprint = result.fingerprint
        if not fingerprint:
            raise SigningError(f"gpg could not make a demo key: {result.stderr[-300:]}")
        armored = gpg.export_keys(fingerprint, secret=True, passphrase=passphrase or None,
                                  expect_passphrase=bool(passphrase))
        if "PRIVATE KEY BLOCK" not in armored:
            raise SigningError("gpg could not export the demo key")
    path = dest_dir / DEMO_KEY_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(armored)
    return path, fingerprint


# --- packages --------------------------------------------------------------


def sign_rpms(key: SigningKey, rpms: Sequence[Path]) -> None:
    """rpmsign --addsign, in place: give it copies, never dist/'s files."""
    if not rpms:
        return
    run([
        require_tool("rpmsign", "install rpm (rpmsign)"), "--addsign",
        "--define", f"_openpgp_sign_id {key.fingerprint}",
        "--define", f"_gpg_name {key.fingerprint}",
        "--define", "_openpgp_sign gpg",
        "--define", f"__gpg {key.gpg_binary}",
        "--define", f"_gpg_path {key.gnupghome}",
        "--define", "_gpg_sign_cmd_extra_args --batch --pinentry-mode error",
        *rpms,
    ], env={"GNUPGHOME": str(key.gnupghome)}, capture=True)


_SIG_LINE = re.compile(r"signature, key (?:id|fingerprint):? ([0-9a-f]+):\s*(\S.*)$", re.IGNORECASE)
_BAD_WORDS = re.compile(r"\b(BAD|NOKEY|NOTTRUSTED|NOT OK|not found|FAILED)\b", re.IGNORECASE)


def verify_rpms(public_key: str, fingerprint: str, rpms: Sequence[Path]) -> None:
    """Every package carries a valid signature by this key, and nothing bad.

    The check runs in a scratch rpm database holding only the public key, so
    neither the host's keys nor another key's signature can make it pass.
    """
    for rpm, problem in check_rpms(public_key, fingerprint, rpms).items():
        if problem:
            raise SigningError(f"{rpm.name}: {problem}; refusing to publish it")
    if rpms:
        log(f"signatures OK: {len(rpms)} package(s), key {fingerprint[-16:].upper()}")


def check_rpms(public_key: str, fingerprint: str, rpms: Sequence[Path]) -> dict[Path, str]:
    """Each package -> "" (a valid signature by this key, nothing bad) or
    what is wrong with it; checked as :func:`verify_rpms` does."""
    if not rpms:
        return {}
    fingerprint = fingerprint.lower()
    with tempfile.TemporaryDirectory(prefix="mrpm-rpmdb-") as tmp:
        keyfile = Path(tmp) / "key.asc"
        keyfile.write_text(public_key)
        db = Path(tmp) / "db"
        db.mkdir()
        run(["rpm", "--dbpath", db, "--import", keyfile], quiet=True, capture=True)
        proc = run(["rpm", "--dbpath", db, "-Kv", *rpms], capture=True, check=False, quiet=True)
    text = (proc.stdout or b"").decode(errors="replace") + (proc.stderr or b"").decode(errors="replace")
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line.strip())
    problems = {}
    for rpm in rpms:
        lines = blocks.get(str(rpm))
        bad = [line for line in lines or [] if _BAD_WORDS.search(line)]
        ours = [m for m in (_SIG_LINE.search(line) for line in lines or [])
                if m and fingerprint.endswith(m.group(1).lower()) and m.group(2).strip().upper() == "OK"]
        if lines is None:
            problems[rpm] = f"rpm -K could not read the package ({text.strip()[-200:]})"
        elif bad:
            problems[rpm] = f"signature check failed: {'; '.join(bad)}"
        elif not ours:
            problems[rpm] = f"not signed by key {fingerprint[-16:].upper()}"
        else:
            problems[rpm] = ""
    return problems


def key_fingerprints(armored: str) -> list[str]:
    """Fingerprints (upper case) of the primary keys in armored key material."""
    with private_gnupghome() as home:
        return [fp.upper() for fp in dict.fromkeys(python_gnupg(home).import_keys(armored).fingerprints)]


# --- repository metadata ---------------------------------------------------


def sign_repomd(key: SigningKey, repodata: Path) -> Path:
    """repodata/repomd.xml.asc, detached and armored, made anew and checked.

    createrepo_c carries the old signature over, so it is replaced every
    time; python-gnupg gets an open file, never a path (0.5.7 reads a path
    after closing it and signs a truncated file).
    """
    repomd = repodata / "repomd.xml"
    asc = repodata / "repomd.xml.asc"
    asc.unlink(missing_ok=True)
    with open(repomd, "rb") as f:
        sig = key.gpg().sign_file(f, keyid=key.fingerprint, detach=True, binary=False)
    if not sig.data or sig.fingerprint != key.fingerprint:
        raise SigningError(f"signing {repomd} failed: {sig.status or sig.stderr[-200:]}")
    tmp = asc.with_name(asc.name + ".tmp")
    tmp.write_bytes(sig.data)
    os.replace(tmp, asc)
    verify_repomd(key.public_key, key.fingerprint, repodata)
    return asc


def verify_repomd(public_key: str, fingerprint: str, repodata: Path) -> None:
    """repomd.xml.asc is present and a good signature of repomd.xml by this key."""
    repomd = repodata / "repomd.xml"
    asc = repodata / "repomd.xml.asc"
    if not asc.exists():
        raise SigningError(f"{asc} is missing: the metadata is unsigned; refusing to publish it")
    with private_gnupghome() as home:
        gpg = python_gnupg(home)
        gpg.import_keys(public_key)
        with open(asc, "rb") as f:
            result = gpg.verify_file(f, str(repomd))
    if not result.valid or (result.pubkey_fingerprint or result.fingerprint or "").upper() != fingerprint.upper():
        raise SigningError(
            f"{asc} is not a good signature of {repomd.name} by key {fingerprint[-16:].upper()}"
            f" ({result.status or 'no signature'}); refusing to publish it"
        )
