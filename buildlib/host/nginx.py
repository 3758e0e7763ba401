"""The nginx site serving the repository, from rpm/nginx/mistralrs-repo.conf.j2.

The rendered site is checked twice before nginx reloads it: alone, with
``nginx -t`` on a throw-away main configuration in a temporary prefix (so
that a bad template never reaches the host's nginx, and the check runs
unprivileged), and then as part of the host's configuration
(``nginx -t -c host.nginx_conf``), because only that one knows about the
other sites.  A site that is already as rendered is left alone and nginx is
not reloaded.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


from ..publish import signing
from ..layout import NGINX_SITE_TEMPLATE
from ..run import UserError, require_tool, run
from ..templates import render
from .files import ensure_file, report
from ..config import Host

SHORT_MAX_AGE = 60
"""repomd.xml and repomd.xml.asc, in seconds: a client sees a publish within a minute."""
DEFAULT_MAX_AGE = 300
"""The index page, the .repo file, the public key."""
LONG_MAX_AGE = 31536000
"""Packages and hash-named metadata: they never change."""


class NginxError(UserError):
    pass


@dataclass(frozen=True)
class Site:
    domain: str
    url_path: str
    repo_root: Path
    cert_file: Path
    cert_key_file: Path
    https_port: int = 443
    http_port: int = 80
    addresses: tuple[str, ...] = ("", "[::]:")
    """Each listen address is this prefix plus the port ("" = all IPv4)."""

    @classmethod
    def of(cls, host: Host) -> "Site":
        return cls(domain=host.domain, url_path=host.url_path, repo_root=host.repo_root, cert_file=host.cert_file,
                   cert_key_file=host.cert_key_file, https_port=host.https_port, http_port=host.http_port)

    @property
    def base_url(self) -> str:
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self.domain}{port}{self.url_path}/"


def render_site(site: Site) -> str:
    return render(
        NGINX_SITE_TEMPLATE, trim=True,
        base_url=site.base_url,
        domain=site.domain,
        url_path=site.url_path,
        repo_root=str(site.repo_root).rstrip("/"),
        cert_file=site.cert_file,
        cert_key_file=site.cert_key_file,
        http_listen=[f"{a}{site.http_port}" for a in site.addresses],
        https_listen=[f"{a}{site.https_port}" for a in site.addresses],
        https_port_suffix="" if site.https_port == 443 else f":{site.https_port}",
        key_name=signing.KEY_FILE_NAME,
        short_max_age=SHORT_MAX_AGE,
        default_max_age=DEFAULT_MAX_AGE,
        long_max_age=LONG_MAX_AGE,
    )


def nginx_binary() -> str:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else require_tool("nginx", "install nginx")
    )


def main_config(prefix: Path, site_file: Path, user: str = "") -> str:
    """A minimal nginx.conf around one site, everything under prefix."""
    user_line = f"user {user};\n" if user else ""
    return f"""\
{user_line}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site_file};
}}
"""


def check_site(text: str) -> None:
    """nginx -t on the site alone (its certificate files must exist)."""
    with tempfile.TemporaryDirectory(prefix="mrpm-nginx-check-") as tmp:
        prefix = Path(tmp)
        site = prefix / "site.conf"
        site.write_text(text)
        conf = prefix / "nginx.conf"
        conf.write_text(main_config(prefix, site))
        proc = run([nginx_binary(), "-t", "-q", "-p", prefix, "-c", conf], capture=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").replace(str(prefix), "<check>").strip()
        raise NginxError(f"the rendered nginx site does not pass nginx -t: {err[-600:]}")


def install_site(host: Host) -> bool:
    """Render, check, write host.nginx_site if it differs, reload nginx."""
    if not host.cert_file.exists():
        raise NginxError(f"no TLS certificate at {host.cert_file}: run `doit setup:tls` first")
    text = render_site(Site.of(host))
    check_site(text)
    changed = ensure_file(host.nginx_site, text, 0o644)
    report(host.nginx_site, changed, "nginx site")
    if changed:
        proc = run([nginx_binary(), "-t", "-q", "-c", host.nginx_conf], capture=True, check=False)
        if proc.returncode != 0:
            raise NginxError(
                f"nginx -t fails with the new site {host.nginx_site} in place: "
                f"{proc.stderr.decode(errors='replace').strip()[-600:]}; nginx was not reloaded"
            )
        run(list(host.reload_nginx))
    return changed
