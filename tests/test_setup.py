"""The repository host's set-up: signing key, nginx site, TLS, DNS, upload user.

nginx runs for real on 127.0.0.1 (random ports, a certificate made on the
spot), gpg for real in private homes, the Cloudflare API as the local
stand-in of tests/fake_cloudflare.py.  Nothing outside temporary
directories is changed, except a throw-away user account that the upload
user test makes and removes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from buildlib import config
from buildlib.host import cloudflare
from buildlib.publish import signing
from buildlib.host import gpgkey, nginx, tls, upload_user
from buildlib.host.dns import setup_dns
from buildlib.run import UserError
from fake_cloudflare import FakeCloudflare
from pipeline import project_config, write_config
from services import stop_process
from services import free_port, wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


# --- helpers shared with test_site.py and test_release_package.py ----------


def host_for(tmp: Path, **changes) -> config.Host:
    """Host settings from the project's config.toml, everything under tmp."""
    data = project_config()
    data["publish"]["target"] = str(tmp / "srv" / "mistralrs-rpm")
    data["publish"]["base_url"] = "https://localhost/mistralrs-rpm"
    cfg = config.parse(data, tmp / "config.toml")
    host = cfg.host
    defaults = dict(key_dir=tmp / "keys", nginx_site=tmp / "etc" / "nginx" / "mistralrs-repo.conf",
                    nginx_conf=tmp / "etc" / "nginx" / "nginx.conf", letsencrypt_dir=tmp / "etc" / "letsencrypt",
                    repo_shell=tmp / "bin" / "repo-shell", reload_nginx=("true",))
    defaults.update(changes)
    return dataclasses.replace(host, **defaults)


def make_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for name and 127.0.0.1, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def spki_hash(cert: Path) -> str:
    """base64 SHA-256 of the certificate's public key (Chromium's pin form)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, check=True,
                         capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclasses.dataclass
class Served:
    https: str
    """https://localhost:<port><url_path>"""
    http: str
    cert: Path
    https_port: int
    http_port: int
    conf: Path
    prefix: Path


@contextlib.contextmanager
def serve_site(tmp: Path, repo_root: Path, url_path: str = "/mistralrs-rpm", site_file: Path | None = None,
               site: nginx.Site | None = None) -> Iterator[Served]:
    """Real nginx on 127.0.0.1 running the rendered site (or site_file as
    installed by install_site, rendered for the same ports)."""
    prefix = tmp / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    cert, key = make_cert(tmp / "cert")
    https_port, http_port = free_port(), free_port()
    site = site or nginx.Site(domain="localhost", url_path=url_path, repo_root=repo_root, cert_file=cert,
                              cert_key_file=key, https_port=https_port, http_port=http_port,
                              addresses=("127.0.0.1:",))
    if site_file is None:
        site_file = prefix / "site.conf"
        site_file.write_text(nginx.render_site(site))
    conf = prefix / "nginx.conf"
    conf.write_text(nginx.main_config(prefix, site_file, user="root" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(site.https_port, proc, "nginx")
        yield Served(https=f"https://localhost:{site.https_port}{url_path}",
                     http=f"http://127.0.0.1:{site.http_port}{url_path}",
                     cert=cert, https_port=site.https_port, http_port=site.http_port, conf=conf, prefix=prefix)
    finally:
        stop_process(proc)


HASHED = "0" * 63 + "1"


def sample_tree(root: Path) -> Path:
    """A repository tree as publishing leaves it (content is irrelevant)."""
    arch = root / "fedora" / "43" / "x86_64"
    for channel in (arch, arch / "unstable"):
        (channel / "repodata").mkdir(parents=True, exist_ok=True)
        (channel / "repodata" / "repomd.xml").write_text("<?xml version='1.0'?><repomd/>\n")
        (channel / "repodata" / "repomd.xml.asc").write_text("-----BEGIN PGP SIGNATURE-----\n")
        (channel / "repodata" / f"{HASHED}-primary.xml.gz").write_bytes(gzip.compress(b"<metadata/>"))
        (channel / "repodata" / f"{HASHED}-primary.xml.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    (arch / "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm").write_bytes(b"\xed\xab\xee\xdb" + os.urandom(4096))
    (root / "index.html").write_text("<!doctype html><title>repo</title><p>hello</p>\n")
    (root / "style.css").write_text("body { margin: 0 }\n")
    (root / signing.KEY_FILE_NAME).write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    (root / "mistralrs.repo").write_text("[mistralrs]\n")
    (root / ".publish.lock").write_text("")
    return root


# --- nginx -------------------------------------------------------------------


@needs_nginx
@needs_openssl
def test_nginx_site_serves_the_repository_over_https(tmp_path):
    root = sample_tree(tmp_path / "srv" / "mistralrs-rpm")
    with serve_site(tmp_path, root) as srv:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(srv.cert)

        def get(url, **kw):
            return s.get(url, allow_redirects=False, timeout=10, **kw)

        # HTTP moves to HTTPS, path and query kept, to the configured name
        r = get(f"{srv.http}/fedora/43/x86_64/repodata/repomd.xml?x=1", headers={"Host": "evil.example"})
        assert r.status_code == 301
        assert r.headers["Location"] == f"{srv.https}/fedora/43/x86_64/repodata/repomd.xml?x=1"

        r = get(f"{srv.https}/")
        assert r.status_code == 200 and "hello" in r.text
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Cache-Control"] == "public, max-age=300"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        assert "Server" not in r.headers or "/" not in r.headers["Server"]  # no version
        assert get(f"{srv.https}/style.css").headers["Content-Type"] == "text/css; charset=utf-8"

        arch = f"{srv.https}/fedora/43/x86_64"
        expect = {
            f"{arch}/repodata/repomd.xml": ("application/xml; charset=utf-8", "public, max-age=60, must-revalidate"),
            f"{arch}/repodata/repomd.xml.asc": ("application/pgp-signature", "public, max-age=60, must-revalidate"),
            f"{arch}/unstable/repodata/repomd.xml": ("application/xml; charset=utf-8",
                                                      "public, max-age=60, must-revalidate"),
            f"{arch}/repodata/{HASHED}-primary.xml.gz": ("application/gzip", "public, max-age=31536000, immutable"),
            f"{arch}/repodata/{HASHED}-primary.xml.zst": ("application/zstd", "public, max-age=31536000, immutable"),
            f"{arch}/mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm": ("application/x-rpm",
                                                                 "public, max-age=31536000, immutable"),
            f"{srv.https}/{signing.KEY_FILE_NAME}": ("application/pgp-keys", "public, max-age=300"),
            f"{srv.https}/mistralrs.repo": ("text/plain; charset=utf-8", "public, max-age=300"),
        }
        for url, (ctype, cache) in expect.items():
            r = get(url)
            assert r.status_code == 200, url
            assert (r.headers["Content-Type"], r.headers["Cache-Control"]) == (ctype, cache), url
        rpm = root / "fedora/43/x86_64/mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
        assert get(f"{arch}/{rpm.name}").content == rpm.read_bytes()
        head = s.head(f"{arch}/{rpm.name}", timeout=10)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == rpm.stat().st_size

        # no listings anywhere, and nothing outside the tree or hidden
        for path in ("/fedora/", "/fedora/43/x86_64/", "/fedora/43/x86_64/repodata/"):
            r = get(f"{srv.https}{path}")
            assert r.status_code in (403, 404), path
            assert "repomd" not in r.text and ".rpm" not in r.text and "Index of" not in r.text
        assert get(f"{srv.https}/.publish.lock").status_code == 404
        assert get(f"{srv.https}/fedora/43/x86_64/repodata/.repomd.xml.tmp").status_code == 404
        assert get(f"{srv.https}/missing.rpm").status_code == 404
        assert get(f"https://localhost:{srv.https_port}/mistralrs-rpm/../etc/passwd").status_code in (400, 404)
        assert get(f"https://localhost:{srv.https_port}/other/").status_code == 404
        r = get(f"https://localhost:{srv.https_port}/")
        assert r.status_code == 302 and r.headers["Location"].endswith("/mistralrs-rpm/")
        r = get(f"https://localhost:{srv.https_port}/mistralrs-rpm")
        assert r.status_code == 301 and r.headers["Location"].endswith("/mistralrs-rpm/")


@needs_nginx
@needs_openssl
def test_nginx_site_at_the_top_of_the_domain(tmp_path):
    root = sample_tree(tmp_path / "srv")
    with serve_site(tmp_path, root, url_path="") as srv:
        r = requests.get(f"{srv.https}/fedora/43/x86_64/repodata/repomd.xml", verify=str(srv.cert), timeout=10)
        assert r.status_code == 200 and r.headers["Cache-Control"].endswith("must-revalidate")
        r = requests.get(f"{srv.https}/", verify=str(srv.cert), timeout=10)
        assert "hello" in r.text


@needs_nginx
@needs_openssl
def test_a_broken_site_does_not_pass_the_check(tmp_path):
    cert, key = make_cert(tmp_path / "cert")
    site = nginx.Site(domain="localhost", url_path="/r", repo_root=tmp_path, cert_file=cert, cert_key_file=key)
    nginx.check_site(nginx.render_site(site))
    missing = dataclasses.replace(site, cert_file=tmp_path / "nope.pem")
    with pytest.raises(nginx.NginxError, match="nginx -t"):
        nginx.check_site(nginx.render_site(missing))


@needs_nginx
@needs_openssl
def test_install_site_writes_checks_and_reloads_only_on_change(tmp_path, capfd):
    host = host_for(tmp_path)
    make_cert(host.cert_file.parent)
    host.nginx_site.parent.mkdir(parents=True)
    host.nginx_site.write_text("# an old site\n")
    host.nginx_conf.write_text(nginx.main_config(tmp_path / "etc" / "nginx", host.nginx_site))
    reloads = tmp_path / "reloads"
    host = dataclasses.replace(host, reload_nginx=(sys.executable, "-c", f"open({str(reloads)!r}, 'a').write('x')"))

    with pytest.raises(nginx.NginxError, match="setup:tls"):
        nginx.install_site(dataclasses.replace(host, letsencrypt_dir=tmp_path / "none"))
    assert host.nginx_site.read_text() == "# an old site\n"

    assert nginx.install_site(host) is True
    assert reloads.read_text() == "x"
    assert "wrote: nginx site" in capfd.readouterr().err
    assert nginx.install_site(host) is False
    assert reloads.read_text() == "x"
    assert "unchanged: nginx site" in capfd.readouterr().err
    text = host.nginx_site.read_text()
    assert "listen 443 ssl;" in text and "listen [::]:443 ssl;" in text and "listen 80;" in text
    assert "autoindex off;" in text and f"alias {host.repo_root}/;" in text
    assert "return 301 https://localhost$request_uri;" in text

    # the host's whole configuration is checked before a reload
    host.nginx_conf.write_text("this is not nginx\n")
    host.nginx_site.write_text("# changed by hand\n")
    with pytest.raises(nginx.NginxError, match="not reloaded"):
        nginx.install_site(host)
    assert reloads.read_text() == "x"


# --- DNS (Cloudflare) ----------------------------------------------------------

TOKEN = "test-token-0123456789abcdefghij"


def test_dns_records_created_updated_and_never_duplicated(tmp_path, monkeypatch):
    # a ~/.netrc entry for the API host must not replace the token
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login someone password wrong\n")
    os.chmod(tmp_path / ".netrc", 0o600)
    with FakeCloudflare(TOKEN) as fake:
        cf = cloudflare.Cloudflare(TOKEN, api=fake.url, timeout=5)
        name = "repo.example.org"
        # missing: created, once
        assert cloudflare.ensure_host_records(cf, "example.org", name, "192.0.2.10", "2001:db8::10") == {
            "A": "created", "AAAA": "created"}
        assert [r["content"] for r in fake.named(name, "A")] == ["192.0.2.10"]
        assert [r["content"] for r in fake.named(name, "AAAA")] == ["2001:db8::10"]
        assert fake.named(name, "A")[0]["proxied"] is False
        # already present (an address written differently is the same address): no write at all
        before = len(fake.writes())
        assert cloudflare.ensure_host_records(cf, "example.org", name, "192.0.2.10", "2001:DB8:0::10") == {
            "A": "unchanged", "AAAA": "unchanged"}
        assert len(fake.writes()) == before
        # another address: updated in place, still one record
        rid = fake.named(name, "A")[0]["id"]
        assert cloudflare.ensure_record(cf, "example.org", name, "A", "198.51.100.7") == "updated"
        assert [(r["id"], r["content"]) for r in fake.named(name, "A")] == [(rid, "198.51.100.7")]
        assert fake.writes()[-1] == ("PUT", f"/client/v4/zones/{fake.zones['example.org']}/dns_records/{rid}")
        # the queries name the record: name and type in the list request
        lists = [p for m, p, _ in fake.requests if m == "GET" and "dns_records" in p]
        assert all("name=repo.example.org" in p and "type=" in p for p in lists)


def test_dns_refuses_to_guess_between_several_records(tmp_path):
    with FakeCloudflare(TOKEN) as fake:
        fake.add_record("example.org", "repo.example.org", "A", "192.0.2.1")
        fake.add_record("example.org", "repo.example.org", "A", "192.0.2.2")
        cf = cloudflare.Cloudflare(TOKEN, api=fake.url, timeout=5)
        with pytest.raises(cloudflare.CloudflareError, match="2 A records"):
            cloudflare.ensure_record(cf, "example.org", "repo.example.org", "A", "192.0.2.3")
        assert fake.writes() == []
        # one of them is right: nothing is written
        assert cloudflare.ensure_record(cf, "example.org", "repo.example.org", "A", "192.0.2.2") == "unchanged"
        assert fake.writes() == []


def test_dns_errors_are_one_clear_line(tmp_path):
    with FakeCloudflare(TOKEN) as fake:
        bad = cloudflare.Cloudflare("wrong-token-0123456789abcdef", api=fake.url, timeout=5)
        with pytest.raises(cloudflare.CloudflareError, match="refused the API token: Authentication error .code 10000."):
            cloudflare.ensure_record(bad, "example.org", "repo.example.org", "A", "192.0.2.1")
        cf = cloudflare.Cloudflare(TOKEN, api=fake.url, timeout=5)
        with pytest.raises(cloudflare.CloudflareError, match="no active zone 'example.net'"):
            cloudflare.ensure_record(cf, "example.net", "repo.example.net", "A", "192.0.2.1")
        with pytest.raises(cloudflare.CloudflareError, match="not an IPv4 address"):
            cloudflare.ensure_record(cf, "example.org", "repo.example.org", "A", "2001:db8::1")
        with pytest.raises(cloudflare.CloudflareError, match="not inside the zone"):
            cloudflare.ensure_record(cf, "example.org", "repo.example.net", "A", "192.0.2.1")
        assert fake.writes() == []
    port = free_port()  # nothing listens there
    dead = cloudflare.Cloudflare(TOKEN, api=f"http://127.0.0.1:{port}/client/v4", timeout=2)
    with pytest.raises(cloudflare.CloudflareError, match="ConnectionError"):
        dead.zone_id("example.org")


def test_cloudflare_answer_nested_too_deep_is_one_line():
    """JSON nested 100k deep makes Python's parser raise RecursionError, not
    ValueError; it is an answer that is no API answer, in one line."""
    from fake_github import FakeGitHub, Reply

    fake = FakeGitHub().start()
    try:
        fake.queue("/client/v4/zones?name=example.org&status=active",
                   Reply(200, b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}))
        cf = cloudflare.Cloudflare(TOKEN, api=f"{fake.url}/client/v4", timeout=5)
        with pytest.raises(cloudflare.CloudflareError, match="HTTP 200 with no API answer"):
            cf.zone_id("example.org")
    finally:
        fake.stop()


def test_setup_dns_reads_the_token_file(tmp_path):
    token_file = tmp_path / "cf-token"
    token_file.write_text(TOKEN + "\n")
    with FakeCloudflare(TOKEN) as fake:
        host = host_for(tmp_path, domain="repo.example.org", cloudflare_zone="example.org", cloudflare_api=fake.url,
                        cloudflare_token_file=str(token_file), ipv4="192.0.2.10", ipv6="")
        assert setup_dns(host) == {"A": "created"}
        assert setup_dns(host) == {"A": "unchanged"}
        assert len(fake.named("repo.example.org", "A")) == 1
        with pytest.raises(UserError, match="cloudflare_zone"):
            setup_dns(dataclasses.replace(host, cloudflare_zone=""))
        with pytest.raises(UserError, match="cannot read"):
            setup_dns(dataclasses.replace(host, cloudflare_token_file=str(tmp_path / "missing")))


# --- signing key -----------------------------------------------------------------


def _passphrase(tmp: Path, text: str = "a long enough passphrase") -> Path:
    path = tmp / "passphrase"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("key_type", ["ed25519", "rsa4096"])
def test_gpg_key_is_made_once_exported_and_never_replaced(tmp_path, key_type, capfd):
    host = host_for(tmp_path, key_passphrase_file=str(_passphrase(tmp_path)), key_type=key_type)
    made = gpgkey.generate_signing_key(host)
    assert made.created
    public, secret = host.key_dir / signing.KEY_FILE_NAME, host.key_dir / gpgkey.SECRET_NAME
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(host.key_dir.stat().st_mode) == 0o700
    assert gpgkey.SECRET_NAME in (host.key_dir / ".gitignore").read_text()
    assert "PUBLIC KEY BLOCK" in public.read_text() and "PRIVATE KEY" not in public.read_text()
    assert "PRIVATE KEY BLOCK" in secret.read_text()

    # the key as gpg sees it: the algorithm, no expiry, signing only, our user id
    listing = subprocess.run(["gpg", "--batch", "--with-colons", "--show-keys", str(public)],
                             capture_output=True, text=True, check=True).stdout
    pub = next(line.split(":") for line in listing.splitlines() if line.startswith("pub:"))
    assert pub[3] == ("22" if key_type == "ed25519" else "1")  # EdDSA / RSA
    assert pub[2] == ("255" if key_type == "ed25519" else "4096")
    assert pub[6] == ""  # no expiry
    assert "s" in pub[11].lower()
    assert "mistralrs-rpm repository <packager@mistralrs-rpm.invalid>" in listing

    # the exported secret key is what publishing imports: it signs, and the public key verifies
    publish = dataclasses.replace(config.parse(project_config(), tmp_path / "c.toml").publish,
                                  key_file=str(secret), passphrase_file=str(_passphrase(tmp_path)))
    with signing.signing_key(publish) as key:
        assert key.fingerprint == made.fingerprint
    # the wrong passphrase does not unlock it
    (tmp_path / "w").mkdir()
    wrong = dataclasses.replace(publish, passphrase_file=str(_passphrase(tmp_path / "w", "wrong passphrase here")))
    with pytest.raises(UserError):
        with signing.signing_key(wrong):
            pass

    # a second run: nothing changes
    before = {p.name: p.read_bytes() for p in host.key_dir.iterdir()}
    again = gpgkey.generate_signing_key(host)
    assert (again.fingerprint, again.created) == (made.fingerprint, False)
    assert {p.name: p.read_bytes() for p in host.key_dir.iterdir()} == before
    # the secret half moved to CI's store: still no new key
    secret.unlink()
    assert gpgkey.generate_signing_key(host).fingerprint == made.fingerprint
    assert not secret.exists()
    assert "unchanged: signing key" in capfd.readouterr().err


def test_gpg_key_needs_a_passphrase_file(tmp_path):
    with pytest.raises(UserError, match="passphrase_file"):
        gpgkey.generate_signing_key(host_for(tmp_path, key_passphrase_file=""))
    with pytest.raises(UserError, match="shorter than 12"):
        gpgkey.generate_signing_key(host_for(tmp_path, key_passphrase_file=str(_passphrase(tmp_path, "short"))))
    assert not (tmp_path / "keys").exists()


@pytest.mark.slow
def test_gpg_key_generation_leaves_no_agent_running(tmp_path):
    def agents():
        out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        return {line for line in out.splitlines() if line.startswith("gpg-agent") and str(tmp_path) not in line
                and "/tmp/g" in line}

    host = host_for(tmp_path, key_passphrase_file=str(_passphrase(tmp_path)))
    gpgkey.generate_signing_key(host)
    # our private homes live under the system temp directory as g*; none of them keeps an agent
    leftover = [a for a in agents() if not any(Path(w).exists() for w in a.split() if w.startswith("/tmp/g"))]
    assert leftover == []


# --- TLS ---------------------------------------------------------------------------


def test_tls_credentials_hook_and_certbot_argv(tmp_path, monkeypatch):
    monkeypatch.setenv(config.TOKEN_ENV, TOKEN)
    reloads = tmp_path / "reloads"
    host = host_for(tmp_path, email="admin@example.org",
                    reload_nginx=(sys.executable, "-c", f"open({str(reloads)!r}, 'a').write('x')"))
    assert tls.write_credentials(host) is True
    creds = host.cloudflare_credentials
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert f"dns_cloudflare_api_token = {TOKEN}\n" in creds.read_text()
    assert tls.write_credentials(host) is False
    # a file made readable by someone is put right
    creds.chmod(0o644)
    assert tls.write_credentials(host) is True and stat.S_IMODE(creds.stat().st_mode) == 0o600

    argv = tls.certbot_argv(host)
    assert argv[:2] == ["certbot", "certonly"]
    assert TOKEN not in " ".join(argv)
    pairs = dict(zip(argv, argv[1:]))
    assert pairs["--dns-cloudflare-credentials"] == str(creds)
    assert pairs["-d"] == "localhost" and pairs["--cert-name"] == host.cert_name
    assert pairs["--email"] == "admin@example.org"
    assert pairs["--config-dir"] == str(host.letsencrypt_dir)
    assert {"--dns-cloudflare", "--non-interactive", "--agree-tos", "--keep-until-expiring"} <= set(argv)
    with pytest.raises(UserError, match="host.email"):
        tls.certbot_argv(dataclasses.replace(host, email=""))
    certbot = shutil.which("certbot")
    if certbot:
        # every option is one this certbot and its cloudflare plugin know
        known = set(re.findall(r"--[a-z][a-z-]+", subprocess.run([certbot, "--help", "all"], capture_output=True,
                                                                    text=True).stdout))
        assert {a for a in argv if a.startswith("--")} <= known

    # the deploy hook: only this certificate's renewal reloads nginx, after nginx -t
    assert tls.write_deploy_hook(host) is True and tls.write_deploy_hook(host) is False
    hook = host.deploy_hook
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    host.nginx_conf.parent.mkdir(parents=True, exist_ok=True)
    make_cert(host.cert_file.parent)
    host.nginx_site.write_text(nginx.render_site(nginx.Site.of(host)))
    host.nginx_conf.write_text(nginx.main_config(tmp_path / "etc" / "nginx", host.nginx_site))

    def run_hook(lineage):
        return subprocess.run([str(hook)], env=dict(os.environ, RENEWED_LINEAGE=lineage), capture_output=True, text=True)

    assert run_hook(str(host.letsencrypt_dir / "live" / "other-cert")).returncode == 0
    assert not reloads.exists()
    proc = run_hook(str(host.letsencrypt_dir / "live" / host.cert_name))
    assert proc.returncode == 0, proc.stderr
    assert reloads.read_text() == "x"
    host.nginx_conf.write_text("broken\n")
    assert run_hook(str(host.letsencrypt_dir / "live" / host.cert_name)).returncode != 0
    assert reloads.read_text() == "x"


def test_tls_with_a_certificate_present_runs_no_certbot(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(config.TOKEN_ENV, TOKEN)
    host = host_for(tmp_path, email="admin@example.org")
    make_cert(host.cert_file.parent)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no certbot reachable
    assert tls.obtain_certificate(host) is False
    assert "certbot's timer renews it" in capfd.readouterr().err
    host.cert_file.unlink()
    with pytest.raises(UserError, match="certbot"):
        tls.obtain_certificate(host)


# --- upload user -------------------------------------------------------------------

UPLOAD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3sd3u1mHlaYc3ePNXwWGfvpbkkfc0C7rU0M9i0Ip0p ci@example"


def test_authorized_keys_line_forces_repo_shell(tmp_path):
    host = host_for(tmp_path, upload_key=UPLOAD_KEY)
    line = upload_user.authorized_keys_line(host)
    assert line == f'command="{host.repo_shell} {host.repo_root}",restrict {UPLOAD_KEY}\n'
    with pytest.raises(UserError, match="upload_key"):
        upload_user.authorized_keys_line(dataclasses.replace(host, upload_key=""))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd")
def test_upload_user_is_created_restricted_and_idempotent(tmp_path):
    user = "mrpm-setup-test"
    subprocess.run(["userdel", "-r", user], capture_output=True)
    for parent in [tmp_path, *tmp_path.parents]:  # reachable by the user, as services.give_to does
        if parent != Path("/"):
            os.chmod(parent, parent.stat().st_mode | 0o011)
    host = host_for(tmp_path, upload_key=UPLOAD_KEY)
    host = dataclasses.replace(host, upload_user=user)
    try:
        changes = upload_user.setup_upload_user(host, home=tmp_path / "home" / user)
        assert set(changes) >= {"user", "repo-shell", "authorized_keys", "repository directory", "lock"}
        account = pwd.getpwnam(user)
        assert account.pw_shell == "/bin/sh" and account.pw_uid != 0
        keys = Path(account.pw_dir) / ".ssh" / "authorized_keys"
        assert keys.read_text() == upload_user.authorized_keys_line(host)
        assert (keys.stat().st_uid, stat.S_IMODE(keys.stat().st_mode)) == (0, 0o644)  # the user cannot loosen it
        assert keys.parent.stat().st_uid == 0
        assert host.repo_root.stat().st_uid == account.pw_uid
        lock = host.repo_root / ".publish.lock"
        assert lock.stat().st_uid == account.pw_uid
        assert os.access(host.repo_shell, os.X_OK)
        assert upload_user.setup_upload_user(host, home=tmp_path / "home" / user) == []

        # the forced command, run as the user the way sshd runs it: the lock works, a shell does not
        def as_user(command):
            return subprocess.run([shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--", str(host.repo_shell), str(host.repo_root)],
                                  env={"SSH_ORIGINAL_COMMAND": command, "PATH": "/usr/bin:/bin"},
                                  input="", capture_output=True, text=True, timeout=20)

        locked = as_user("lock")
        assert locked.stdout == "locked\n", locked.stderr
        refused = as_user("sh -c id")
        assert refused.returncode != 0 and "only 'lock' and rsync" in refused.stderr
    finally:
        subprocess.run(["userdel", "-r", user], capture_output=True)
        subprocess.run(["groupdel", user], capture_output=True)


def test_upload_user_needs_root(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match="root"):
        upload_user.setup_upload_user(host_for(tmp_path, upload_key=UPLOAD_KEY))


# --- the doit tasks ------------------------------------------------------------------

DODO = """\
from buildlib.tasks import context
from buildlib.tasks.setup import task_release_package, task_setup  # noqa: F401

DOIT_CONFIG = context.doit_config()
"""


def _doit(tmp: Path, config_path: Path, *args: str) -> subprocess.CompletedProcess:
    dodo = tmp / "dodo_setup.py"
    dodo.write_text(DODO)
    env = dict(os.environ, MRPM_CONFIG=str(config_path), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    env.pop("MRPM_REF", None)
    return subprocess.run([sys.executable, "-m", "doit", "-f", str(dodo), "-d", str(tmp), *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_doit_setup_tasks_listed_and_gpg_key_runs_twice(tmp_path):
    data = project_config()
    data["publish"]["passphrase_file"] = str(_passphrase(tmp_path))
    data["paths"] = {"build": "build", "dist": "dist", "cache": "cache", "artifacts": "artifacts"}
    config_path = write_config(tmp_path / "proj", data)
    listing = _doit(tmp_path, config_path, "list", "--all")
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
    assert {"setup", "setup:gpg-key", "setup:dns", "setup:tls", "setup:nginx", "setup:upload-user",
            "release-package"} <= names
    assert all(len(line.split(None, 1)) == 2 for line in listing.stdout.splitlines() if line.strip())

    first = _doit(tmp_path, config_path, "setup:gpg-key")
    assert first.returncode == 0, first.stderr
    assert "created: signing key" in first.stderr
    assert (tmp_path / "proj" / "keys" / signing.KEY_FILE_NAME).exists()
    second = _doit(tmp_path, config_path, "setup:gpg-key")
    assert second.returncode == 0 and "unchanged: signing key" in second.stderr

    built = _doit(tmp_path, config_path, "release-package")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "proj" / "dist" / "mistralrs-release-1-1.fc43.noarch.rpm").exists()
    again = _doit(tmp_path, config_path, "release-package")
    assert again.returncode == 0 and "-- release-package" in again.stdout  # up to date

    # a user's mistake is one line, not a traceback
    dns = _doit(tmp_path, config_path, "setup:dns")
    assert dns.returncode != 0
    assert "error: host.cloudflare_zone is not set" in dns.stderr and "Traceback" not in dns.stderr
