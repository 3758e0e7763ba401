"""The [host] table: the repository host's set-up, every key with a default."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import patterns as P
from .kinds import KeyType
from .model import Publish, read_path
from .targets import SshTarget
from .schema import ConfigError, Table, optional, read, setting, show

TOKEN_ENV = "CLOUDFLARE_API_TOKEN"
DEFAULT_UPLOAD_USER = "mistralrs-upload"


def _ip(version: int) -> object:
    def check(value: str) -> str:
        try:
            ok = not value or ipaddress.ip_address(value).version == version
        except ValueError:
            ok = False
        return "" if ok else f"expected an IPv{version} address, or \"\" for none"
    return check


def _host_path(default: str, *, shown: bool = False) -> object:
    return setting(default, read=lambda t, f: read_path(t, f, expand=True), shown_default=None if shown else "")


@dataclass(frozen=True, kw_only=True)
class Host:
    domain: str
    url_path: str
    """The repository's path on the web server, "" or "/mistralrs-rpm"."""
    https_port: int
    repo_root: Path
    upload_user: str
    email: str = setting("", pattern=optional(P.EMAIL), form="an e-mail address", shown_default="")
    cloudflare_zone: str = setting("", pattern=optional(P.DOMAIN), form='a DNS zone such as "example.org"', shown_default="")
    cloudflare_token_file: str = setting("", shown_default="", help="else `$CLOUDFLARE_API_TOKEN`")
    cloudflare_api: str = setting("https://api.cloudflare.com/client/v4", pattern=P.HTTP_URL, form="an http(s) URL",
                                  convert=lambda v, k: v.rstrip("/"), shown_default="")
    ipv4: str = setting("", check=_ip(4), shown_default="")
    ipv6: str = setting("", check=_ip(6), help="`\"\"`: no record", shown_default="")
    upload_key: str = setting("", pattern=optional(P.SSH_PUBLIC_KEY), form='one SSH public key line such as "ssh-ed25519 AAAA... ci"',
                              shown_default="")
    key_name: str = setting("mistralrs-rpm repository", pattern=P.KEY_NAME, form="a name of 5 or more characters without <>()",
                            shown_default="")
    key_email: str = setting("", pattern=optional(P.EMAIL), form="an e-mail address",
                             shown_default="", help="default: `package.packager`'s address")
    key_type: KeyType = setting(KeyType.ED25519, help='or `"rsa4096"`')
    key_expire: str = setting("0", pattern=P.EXPIRE, form='"0" (never), a period such as "2y", or a date YYYY-MM-DD',
                              help="never")
    key_passphrase_file: str = setting("", shown_default="", help="default: `publish.passphrase_file`")
    key_dir: Path = _host_path("keys", shown=True)
    http_port: int = setting(80, form="a port number", check=lambda p: "" if 1 <= p <= 65535 else "expected a port number")
    nginx_site: Path = _host_path("/etc/nginx/conf.d/mistralrs-repo.conf")
    nginx_conf: Path = _host_path("/etc/nginx/nginx.conf")
    """The host's main nginx.conf, for ``nginx -t -c`` after the site changed."""
    letsencrypt_dir: Path = _host_path("/etc/letsencrypt")
    cert_name: str = setting("mistralrs-repo", pattern=P.CERT_NAME, form="a certificate name (letters, digits, . _ -)",
                             shown_default="")
    reload_nginx: tuple[str, ...] = setting(("systemctl", "reload", "nginx"), form="a command as a list of words",
                                            check=lambda argv: "" if argv else 'expected a command such as ["systemctl", "reload", "nginx"]')
    repo_shell: Path = _host_path("/usr/local/bin/repo-shell", shown=True)
    release_package_version: int = setting(1, check=lambda v: "" if v >= 1 else "expected 1 or more")

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


def read_host(h: Table, publish: Publish, packager: str) -> Host:
    """The [host] table (h), checked; what [publish] already says (the
    domain, the port, the repository's directory, the upload user) comes
    from there."""
    url = urlsplit(publish.base_url)
    domain = url.hostname or ""
    if not P.DOMAIN.match(domain):
        raise ConfigError(f"publish.base_url = \"{publish.base_url}\": the host set-up needs a domain name there")
    if not P.URL_PATH.match(url.path) or any(part in (".", "..") for part in url.path.split("/")):
        raise ConfigError(f"publish.base_url = {show(publish.base_url)}: its path goes into nginx's site as a location;"
                          f" expected \"\" or segments of letters, digits and . _ ~ - such as /mistralrs-rpm")
    if isinstance(publish.target, SshTarget):
        repo_root, upload_user = Path(publish.target.path), publish.target.user
    else:
        repo_root, upload_user = publish.target.path, DEFAULT_UPLOAD_USER
    if not P.USER_NAME.match(upload_user):
        raise ConfigError(f"publish.target: {upload_user!r} is not a valid user name for the upload account")
    host = read(Host, h, domain=domain.lower(), url_path=url.path.rstrip("/"), https_port=url.port or 443,
                repo_root=repo_root, upload_user=upload_user)
    packager_email = re.search(r"<([^>]+)>", packager).group(1)
    return dataclasses.replace(host, key_email=host.key_email or packager_email,
                               key_passphrase_file=host.key_passphrase_file or publish.passphrase_file)
