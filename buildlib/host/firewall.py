"""firewalld on the repository host: open nginx's HTTP and HTTPS ports.

Fedora's firewalld closes 80 and 443 by default.  Where it runs, the
services http and https (or, for other ports, the ports themselves) are
added to the default zone permanently and the configuration reloaded, so
that they stay open after a reboot.  Skipped, with one line, where firewalld
is not installed or not running.  A second run only asks, and changes
nothing.
"""

from __future__ import annotations

import shutil

from ..run import log, run
from ..config import Host


def wanted(host: Host) -> list[str]:
    """firewalld's names for nginx's ports: service=http/https or port=N/tcp."""
    return [f"service={name}" if port == default else f"port={port}/tcp"
            for port, default, name in ((host.http_port, 80, "http"), (host.https_port, 443, "https"))]


def open_web_ports(host: Host) -> bool:
    """Open nginx's ports in firewalld where it runs; True if anything changed."""
    firewall_cmd = shutil.which("firewall-cmd")
    if firewall_cmd is None:
        log("skipped: firewall (no firewall-cmd: firewalld is not installed)")
        return False
    if run([firewall_cmd, "--state"], capture=True, check=False, quiet=True).returncode != 0:
        log("skipped: firewall (firewalld is not running)")
        return False

    def has(item: str, *permanent: str) -> bool:
        return run([firewall_cmd, *permanent, f"--query-{item}"], capture=True, check=False,
                   quiet=True).returncode == 0

    items = wanted(host)
    names = ", ".join(item.split("=", 1)[1] for item in items)
    missing = [item for item in items if not has(item, "--permanent")]
    not_live = [item for item in items if not has(item)]
    if missing:
        run([firewall_cmd, "--permanent", *[f"--add-{item}" for item in missing]])
    if missing or not_live:
        run([firewall_cmd, "--reload"])
        log(f"wrote: firewalld opens {names} (permanent, reloaded)")
        return True
    log(f"unchanged: firewalld opens {names}")
    return False
