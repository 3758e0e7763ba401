"""The repository's signing key: made once, never replaced by a tool.

``host.key_dir`` receives two files:

``RPM-GPG-KEY-mistralrs``
    the public key (commit it: the release package and the index page are
    built from it, and users' trust starts there);
``mistralrs-signing-key.secret.asc``
    the secret key, ASCII-armored and protected by the passphrase (mode
    0600, ignored by git through the directory's own ``.gitignore``): put it
    into CI's secret store (``publish.key_env``) and an offline backup, then
    delete it here.

A second run finds the key and changes nothing.  If only the public key is
left (the secret went to the secret store), no new key is made either: a
new key would silently break every user's trust, so replacing it is a
decision a person makes by deleting the public key.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path


from ..publish import signing
from ..run import UserError, log
from .files import ensure_file, report
from ..config import Host

PUBLIC_NAME = signing.KEY_FILE_NAME
SECRET_NAME = "mistralrs-signing-key.secret.asc"


class SigningKeyError(UserError):
    pass


@dataclass(frozen=True)
class KeyFiles:
    fingerprint: str
    public: Path
    secret: Path | None
    created: bool


def read_passphrase(host: Host) -> str:
    if not host.key_passphrase_file:
        raise SigningKeyError(
            "no passphrase for the signing key: set host.key_passphrase_file (or publish.passphrase_file) to a file"
            " holding one, e.g. `install -m 600 /dev/null pass && openssl rand -base64 32 > pass`"
        )
    path = Path(host.key_passphrase_file).expanduser()
    try:
        text = path.read_text()
    except OSError as e:
        raise SigningKeyError(f"cannot read the signing key's passphrase from {path}: {e.strerror}") from None
    passphrase = text.rstrip("\r\n")
    if len(passphrase) < 12:
        raise SigningKeyError(f"{path}: the passphrase is shorter than 12 characters; make a longer one")
    if os.stat(path).st_mode & 0o077:
        log(f"warning: {path} is readable by others than its owner (chmod 600 it)")
    return passphrase


def _gpg(home: Path):
    return signing.python_gnupg(home)


def fingerprint_of(armored: str) -> list[str]:
    """Fingerprints of the primary keys in armored key material."""
    with signing.private_gnupghome() as home:
        result = _gpg(home).import_keys(armored)
        return [fp for fp in dict.fromkeys(result.fingerprints)]


def key_parameters(host: Host, passphrase: str) -> str:
    """gpg's batch key generation input (it reaches gpg on stdin)."""
    if host.key_type == "ed25519":
        kind = ["Key-Type: eddsa", "Key-Curve: ed25519"]
    else:
        kind = ["Key-Type: RSA", "Key-Length: 4096"]
    lines = [*kind, "Key-Usage: sign", f"Name-Real: {host.key_name}", f"Name-Email: {host.key_email}",
             f"Expire-Date: {host.key_expire}", f"Passphrase: {passphrase}", "%commit"]
    return "\n".join(lines) + "\n"


def _check_secret(armored_secret: str, public: str, fingerprint: str, passphrase: str) -> None:
    """The exported secret key, alone in a fresh keyring, signs with this
    passphrase, and the public key verifies it."""
    with signing.private_gnupghome() as home:
        gpg = _gpg(home)
        gpg.import_keys(armored_secret)
        sig = gpg.sign_file(io.BytesIO(b"mistralrs-rpm key check"), keyid=fingerprint, passphrase=passphrase,
                            detach=True, binary=False)
        if not sig.data:
            raise SigningKeyError(f"the exported secret key does not sign with the passphrase ({sig.status})")
    with signing.private_gnupghome() as home:
        gpg = _gpg(home)
        gpg.import_keys(public)
        data = home / "data"
        data.write_bytes(b"mistralrs-rpm key check")
        result = gpg.verify_file(io.BytesIO(sig.data), str(data))
    if not result.valid or (result.pubkey_fingerprint or result.fingerprint or "").upper() != fingerprint.upper():
        raise SigningKeyError(f"the exported public key does not verify a signature of the secret key ({result.status})")


def generate_signing_key(host: Host) -> KeyFiles:
    """Make the signing key unless one exists; export both halves."""
    public = host.key_dir / PUBLIC_NAME
    secret = host.key_dir / SECRET_NAME
    if secret.exists():
        armored = secret.read_text()
        fingerprints = fingerprint_of(armored)
        if len(fingerprints) != 1 or "PRIVATE KEY BLOCK" not in armored:
            raise SigningKeyError(f"{secret} does not hold exactly one ASCII-armored secret key; move it away or fix it")
        fp = fingerprints[0]
        if public.exists() and fingerprint_of(public.read_text()) == [fp]:
            log(f"unchanged: signing key {fp} ({secret}, {public})")
        else:
            with signing.private_gnupghome() as home:
                gpg = _gpg(home)
                gpg.import_keys(armored)
                report(public, ensure_file(public, gpg.export_keys(fp), 0o644), f"public key of {fp}")
        return KeyFiles(fp, public, secret, created=False)
    if public.exists():
        fps = fingerprint_of(public.read_text())
        log(f"unchanged: signing key {', '.join(fps)} (public key {public}; its secret key is kept elsewhere)")
        if len(fps) != 1:
            raise SigningKeyError(f"{public} does not hold exactly one public key")
        return KeyFiles(fps[0], public, None, created=False)

    passphrase = read_passphrase(host)
    with signing.private_gnupghome() as home:
        gpg = _gpg(home)
        result = gpg.gen_key(key_parameters(host, passphrase))
        fp = result.fingerprint
        if not fp:
            raise SigningKeyError(f"gpg could not make the key: {(result.stderr or '').strip()[-300:]}")
        public_text = gpg.export_keys(fp)
        secret_text = gpg.export_keys(fp, secret=True, passphrase=passphrase, expect_passphrase=True)
    if "PUBLIC KEY BLOCK" not in public_text or "PRIVATE KEY BLOCK" not in secret_text:
        raise SigningKeyError("gpg made the key but could not export it")
    _check_secret(secret_text, public_text, fp, passphrase)

    host.key_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(host.key_dir, 0o700)
    ensure_file(host.key_dir / ".gitignore", f"# the secret key never goes into git\n{SECRET_NAME}\n", 0o644)
    ensure_file(secret, secret_text, 0o600)
    ensure_file(public, public_text, 0o644)
    log(f"created: signing key {fp} ({host.key_type}, expires: {host.key_expire if host.key_expire != '0' else 'never'})")
    log(f"wrote: public key ({public}) -- commit it")
    log(f"wrote: secret key ({secret}) -- store it in CI's secret store (publish.key_env) and offline, then delete it here")
    return KeyFiles(fp, public, secret, created=True)
