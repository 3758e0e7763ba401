"""Task creators for the repository host's one-time set-up (``doit setup``)
and the ``mistralrs-release`` package.

The setup tasks act on the machine they run on (the repository host, as
root, except gpg-key which runs where the key is made); each compares what
is there with what should be, changes only what differs and says so, so
they always run (``uptodate: False``) and a second run changes nothing.
Order on a new host: gpg-key, dns, tls, nginx, upload-user, selinux,
firewall (the last two act only where SELinux and firewalld are, as on
Fedora).
"""

from __future__ import annotations

from doit.tools import config_changed

from ..host import gpgkey, release_package
from ..layout import FLAVOUR_SCRIPT_TEMPLATE, RELEASE_SPEC_TEMPLATE, REPO_FILE_TEMPLATE
from . import context
from .context import action, lazy


# The steps' modules are imported on first use so a no-op doit starts fast.


setup_dns = lazy("buildlib.host.dns:setup_dns")


obtain_certificate = lazy("buildlib.host.tls:obtain_certificate")


install_site = lazy("buildlib.host.nginx:install_site")


setup_upload_user = lazy("buildlib.host.upload_user:setup_upload_user")


label_repository = lazy("buildlib.host.selinux:label_repository")


open_web_ports = lazy("buildlib.host.firewall:open_web_ports")


def _host():
    cfg, layout = context.current()
    return cfg, layout, cfg.host


def task_setup():
    """Set up the repository host: signing key, DNS, TLS, nginx, upload user, SELinux, firewall."""
    cfg, layout, host = _host()
    steps = [
        ("gpg-key", "make the repository signing key (once) and export both halves into host.key_dir",
         gpgkey.generate_signing_key),
        ("dns", f"point {host.domain}'s A/AAAA records at host.ipv4/ipv6 (Cloudflare API)", setup_dns),
        ("tls", f"certificate for {host.domain} via certbot's Cloudflare DNS challenge, renewal reloads nginx",
         obtain_certificate),
        ("nginx", f"nginx site for {cfg.publish.base_url}: render, nginx -t, install, reload", install_site),
        ("upload-user", f"account {host.upload_user} for CI: key forced to repo-shell, repository dir, lock",
         setup_upload_user),
        ("selinux", f"SELinux: label {host.repo_root} for nginx (semanage fcontext, restorecon), if SELinux is on",
         label_repository),
        ("firewall", "firewalld: open nginx's HTTP and HTTPS ports (permanent), if firewalld runs",
         open_web_ports),
    ]
    for name, doc, fn in steps:
        yield {
            "name": name,
            "doc": doc,
            "actions": [action(fn, host)],
            "uptodate": [False],
            "verbosity": 2,
        }


def _release_package(cfg, layout, host):
    # SIGTERM/SIGHUP/SIGINT: the key's scratch keyring goes, one line, no traceback
    from ..publish.cleanup import cancellable

    with cancellable("release-package"):
        return release_package.build_release_package(cfg, layout, host)


def task_release_package():
    """Build mistralrs-release (noarch) into dist/, where `doit publish` takes it to every channel."""
    cfg, layout, host = _host()
    key = host.key_dir / gpgkey.PUBLIC_NAME
    return {
        "basename": "release-package",
        "actions": [action(_release_package, cfg, layout, host)],
        "file_dep": [RELEASE_SPEC_TEMPLATE, FLAVOUR_SCRIPT_TEMPLATE, REPO_FILE_TEMPLATE] + ([key] if key.exists() else []),
        "targets": [layout.release_rpm(host.release_package_version, cfg.package.dist)],
        "uptodate": [config_changed(release_package.release_inputs(cfg, host))],
        "verbosity": 2,
    }
