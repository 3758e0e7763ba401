"""The repository's A/AAAA records, from [host] settings (see buildlib.host.cloudflare)."""

from __future__ import annotations

from . import cloudflare
from ..config import ConfigError
from ..config import Host


def setup_dns(host: Host) -> dict[str, str]:
    """host.domain -> host.ipv4 / host.ipv6 in Cloudflare; what it did per type."""
    if not host.cloudflare_zone:
        raise ConfigError('host.cloudflare_zone is not set: name the Cloudflare zone holding the domain, e.g. "example.org"')
    cf = cloudflare.Cloudflare(host.cloudflare_token(), api=host.cloudflare_api)
    return cloudflare.ensure_host_records(cf, host.cloudflare_zone, host.domain, host.ipv4, host.ipv6)
