"""TLS: a Let's Encrypt certificate through certbot's Cloudflare DNS plugin.

The DNS challenge needs no open port and works before nginx is set up, so
the order is dns -> tls -> nginx.  The Cloudflare token reaches certbot in
its credentials file (mode 0600, certbot warns about anything looser), never
on a command line.  certbot's own timer renews the certificate; a deploy
hook in ``renewal-hooks/deploy/`` checks nginx's configuration and reloads
it after a renewal of this certificate.
"""

from __future__ import annotations

import shlex


from ..config import ConfigError
from ..layout import CERTBOT_HOOK_TEMPLATE
from ..run import log, require_tool, run
from ..templates import render
from .files import ensure_file, report
from .nginx import nginx_binary
from ..config import Host

PROPAGATION_S = 30


def credentials_text(token: str) -> str:
    return ("# certbot-dns-cloudflare credentials, written by mistralrs-rpm (doit setup:tls)\n"
            f"dns_cloudflare_api_token = {token}\n")


def write_credentials(host: Host) -> bool:
    path = host.cloudflare_credentials
    path.parent.mkdir(parents=True, exist_ok=True)
    changed = ensure_file(path, credentials_text(host.cloudflare_token()), 0o600)
    report(path, changed, "certbot's Cloudflare credentials (mode 0600)")
    return changed


def render_deploy_hook(host: Host) -> str:
    return render(CERTBOT_HOOK_TEMPLATE, 
        cert_name=host.cert_name,
        nginx_test=shlex.join([nginx_binary(), "-t", "-q", "-c", str(host.nginx_conf)]),
        reload=shlex.join(host.reload_nginx),
    )


def write_deploy_hook(host: Host) -> bool:
    changed = ensure_file(host.deploy_hook, render_deploy_hook(host), 0o755)
    report(host.deploy_hook, changed, "certbot deploy hook (reloads nginx after a renewal)")
    return changed


def certbot_argv(host: Host, certbot: str = "certbot") -> list[str]:
    if not host.email:
        raise ConfigError("host.email is not set: Let's Encrypt needs an address for expiry notices")
    return [
        certbot, "certonly", "--non-interactive", "--agree-tos", "--no-eff-email",
        "--email", host.email,
        "--dns-cloudflare",
        "--dns-cloudflare-credentials", str(host.cloudflare_credentials),
        "--dns-cloudflare-propagation-seconds", str(PROPAGATION_S),
        "--config-dir", str(host.letsencrypt_dir),
        "--cert-name", host.cert_name,
        "--keep-until-expiring",
        "-d", host.domain,
    ]


def obtain_certificate(host: Host) -> bool:
    """Credentials, hook, and a certificate if there is none yet."""
    write_credentials(host)
    write_deploy_hook(host)
    if host.cert_file.exists():
        log(f"unchanged: certificate for {host.domain} ({host.cert_file}; certbot's timer renews it)")
        return False
    certbot = require_tool("certbot", "install certbot and python3-certbot-dns-cloudflare")
    run(certbot_argv(host, certbot))
    log(f"created: certificate for {host.domain} ({host.cert_file})")
    return True
