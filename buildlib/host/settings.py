"""The ``[host]`` table: what the repository host's set-up needs beyond
``[publish]``.

The domain, the URL path and the HTTPS port come from ``publish.base_url``;
the repository directory and the upload user from ``publish.target``
(``user@host:/path``).  Nothing is spelled twice.

config.py calls :func:`parse_host` while it reads config.toml, so the
settings are checked once with the rest.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..config import SSH_TARGET, Config, ConfigError, _Table

DOMAIN = re.compile(r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?\Z")
EXPIRE = re.compile(r"^(0|\d+[dwmy]?|\d{4}-\d{2}-\d{2})\Z")
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"
DEFAULT_UPLOAD_USER = "mistralrs-upload"


@dataclass(frozen=True)
class Host:
    domain: str
    url_path: str
    """The repository's path on the web server, "" or "/mistralrs-rpm"."""
    https_port: int
    http_port: int
    repo_root: Path
    upload_user: str
    email: str
    cloudflare_zone: str
    cloudflare_token_file: str
    cloudflare_api: str
    ipv4: str
    ipv6: str
    upload_key: str
    key_name: str
    key_email: str
    key_type: str
    key_expire: str
    key_passphrase_file: str
    key_dir: Path
    nginx_site: Path
    nginx_conf: Path
    """The host's main nginx.conf, for ``nginx -t -c`` after the site changed."""
    letsencrypt_dir: Path
    cert_name: str
    reload_nginx: tuple[str, ...]
    repo_shell: Path
    release_package_version: int

    @property
    def cert_file(self) -> Path:
        return self.letsencrypt_dir / "live" / self.cert_name / "fullchain.pem"

    @property
    def cert_key_file(self) -> Path:
        return self.letsencrypt_dir / "live" / self.cert_name / "privkey.pem"

    @property
    def cloudflare_credentials(self) -> Path:
        """certbot-dns-cloudflare's credentials file (mode 0600)."""
        return self.letsencrypt_dir / "mistralrs-cloudflare.ini"

    @property
    def deploy_hook(self) -> Path:
        """Run by ``certbot renew`` after each renewal (any certificate)."""
        return self.letsencrypt_dir / "renewal-hooks" / "deploy" / "mistralrs-repo-nginx"

    def cloudflare_token(self) -> str:
        """The API token: host.cloudflare_token_file, else $CLOUDFLARE_API_TOKEN."""
        if self.cloudflare_token_file:
            path = Path(self.cloudflare_token_file).expanduser()
            try:
                token = path.read_text().strip()
            except OSError as e:
                raise ConfigError(f"host.cloudflare_token_file = \"{path}\": cannot read it ({e.strerror})") from None
        else:
            token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise ConfigError(
                f"no Cloudflare API token: set host.cloudflare_token_file to a file holding one"
                f" (or export {TOKEN_ENV}); the token needs the permission Zone.DNS:Edit on the zone"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]{20,200}", token):
            raise ConfigError("the Cloudflare API token has unexpected characters; expected the token itself, one line")
        return token


def parse_host(h: _Table, publish, base: Path, packager: str) -> Host:
    """The [host] table (h), checked; publish is the parsed [publish]."""
    url = urlsplit(publish.base_url)
    domain = url.hostname or ""
    if not DOMAIN.match(domain):
        raise ConfigError(f"publish.base_url = \"{publish.base_url}\": the host set-up needs a domain name there")
    m = SSH_TARGET.match(publish.target)
    if m:
        repo_root = Path(m.group("path").rstrip("/") or "/")
        upload_user = m.group("user")
    else:
        repo_root = (base / publish.target).resolve()
        upload_user = DEFAULT_UPLOAD_USER
    packager_email = re.search(r"<([^>]+)>", packager).group(1)

    def path(name: str, default: str) -> Path:
        return (base / Path(h.string(name, default)).expanduser()).resolve()

    ipv4 = h.string("ipv4", "")
    ipv6 = h.string("ipv6", "")
    for key, value, version in (("ipv4", ipv4, 4), ("ipv6", ipv6, 6)):
        if value:
            try:
                ok = ipaddress.ip_address(value).version == version
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"host.{key} = \"{value}\": expected an IPv{version} address, or \"\" for none")
    reload_nginx = h.strings("reload_nginx", ["systemctl", "reload", "nginx"], form="a command as a list of words")
    if not reload_nginx:
        raise ConfigError('host.reload_nginx = []: expected a command such as ["systemctl", "reload", "nginx"]')
    host = Host(
        domain=domain.lower(),
        url_path=url.path.rstrip("/"),
        https_port=url.port or 443,
        http_port=h.get("http_port", int, 80, form="a port number"),
        repo_root=repo_root,
        upload_user=upload_user,
        email=h.string("email", "", pattern=re.compile(r"^(|[^@\s]+@[^@\s]+\.[^@\s]+)\Z"), form="an e-mail address"),
        cloudflare_zone=h.string("cloudflare_zone", "", pattern=re.compile(r"^(|" + DOMAIN.pattern[1:-2] + r")\Z"),
                                 form="a DNS zone such as \"example.org\""),
        cloudflare_token_file=h.string("cloudflare_token_file", ""),
        cloudflare_api=h.string("cloudflare_api", "https://api.cloudflare.com/client/v4",
                                pattern=re.compile(r"^https?://[^\s]+\Z"), form="an http(s) URL").rstrip("/"),
        ipv4=ipv4,
        ipv6=ipv6,
        upload_key=h.string("upload_key", "", pattern=re.compile(r"^(|" + SSH_PUBLIC_KEY.pattern[1:-2] + r")\Z"),
                            form="one SSH public key line such as \"ssh-ed25519 AAAA... ci\""),
        key_name=h.string("key_name", "mistralrs-rpm repository", pattern=re.compile(r"^[^<>()\n]{5,}\Z"),
                          form="a name of 5 or more characters without <>()"),
        key_email=h.string("key_email", "", pattern=re.compile(r"^(|[^@\s]+@[^@\s]+\.[^@\s]+)\Z"), form="an e-mail address") or packager_email,
        key_type=h.string("key_type", "ed25519", pattern=re.compile(r"^(ed25519|rsa4096)\Z"), form='"ed25519" or "rsa4096"'),
        key_expire=h.string("key_expire", "0", pattern=EXPIRE, form='"0" (never), a period such as "2y", or a date YYYY-MM-DD'),
        key_passphrase_file=h.string("key_passphrase_file", "") or publish.passphrase_file,
        key_dir=path("key_dir", "keys"),
        nginx_site=path("nginx_site", "/etc/nginx/conf.d/mistralrs-repo.conf"),
        nginx_conf=path("nginx_conf", "/etc/nginx/nginx.conf"),
        letsencrypt_dir=path("letsencrypt_dir", "/etc/letsencrypt"),
        cert_name=h.string("cert_name", "mistralrs-repo", pattern=re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z"),
                           form="a certificate name (letters, digits, . _ -)"),
        reload_nginx=reload_nginx,
        repo_shell=path("repo_shell", "/usr/local/bin/repo-shell"),
        release_package_version=h.get("release_package_version", int, 1, form="an integer"),
    )
    for port_key, port in (("http_port", host.http_port),):
        if not 1 <= port <= 65535:
            raise ConfigError(f"host.{port_key} = {port}: expected a port number")
    if host.release_package_version < 1:
        raise ConfigError(f"host.release_package_version = {host.release_package_version}: expected 1 or more")
    if not USER_NAME.match(host.upload_user):
        raise ConfigError(f"publish.target: {host.upload_user!r} is not a valid user name for the upload account")
    h.finish()
    return host


def host_settings(cfg: Config) -> Host:
    return cfg.host
