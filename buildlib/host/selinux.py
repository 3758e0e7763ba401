"""SELinux labels for the repository tree on a Fedora host.

With SELinux enforcing, nginx (httpd_t) reads only files labelled for web
content.  A local file-context rule ``<root>(/.*)?`` -> httpd_sys_content_t
(``semanage fcontext``, persistent: it survives a relabel) and ``restorecon
-R`` on the tree label what is there; files that rsync creates later inherit
the label of the directory they are created in, and a relabel keeps it.  The
upload user's rsync runs unconfined, so the label does not restrict it.

Skipped, with one line, where SELinux is not there (no ``getenforce``) or
disabled.  A second run changes nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..run import UserError, log, output, require_tool, run
from ..config import Host

WEB_CONTENT = "httpd_sys_content_t"
PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]")


def file_spec(root: Path) -> str:
    """The file-context regular expression for root and everything below."""
    text = str(root)
    if not PLAIN_PATH.fullmatch(text):
        raise UserError(
            f"repository directory {text!r}: SELinux labelling needs a path of letters, digits and ._-/ only"
            " (publish.target)"
        )
    return text.replace(".", r"\.") + "(/.*)?"  # "." is the only character here special in a regex


def selinux_mode() -> str | None:
    """getenforce's answer (Enforcing, Permissive, Disabled); None without SELinux."""
    if shutil.which("getenforce") is None:
        return None
    return output(["getenforce"], quiet=True)


def local_rule_type(semanage: str, spec: str) -> str | None:
    """The type of the local file-context rule for exactly spec, if any."""
    listing = output([semanage, "fcontext", "-l", "-C"], quiet=True)
    for line in listing.splitlines():
        fields = line.split()
        if fields and fields[0] == spec:
            context = fields[-1].split(":")
            return context[2] if len(context) >= 3 else fields[-1]
    return None


def label_repository(host: Host) -> bool:
    """Label host.repo_root for nginx; True if anything changed."""
    root = host.repo_root
    mode = selinux_mode()
    if mode is None or mode == "Disabled":
        why = "no getenforce: SELinux is not on this host" if mode is None else "SELinux is disabled"
        log(f"skipped: SELinux labels for {root} ({why})")
        return False
    spec = file_spec(root)
    if not root.is_dir():
        raise UserError(f"no repository directory {root}: run `doit setup:upload-user` first")
    semanage = require_tool("semanage", "dnf install policycoreutils-python-utils")
    restorecon = require_tool("restorecon", "dnf install policycoreutils")

    current = local_rule_type(semanage, spec)
    if current != WEB_CONTENT:
        run([semanage, "fcontext", "-a" if current is None else "-m", "-t", WEB_CONTENT, spec])
    log(f"{'wrote' if current != WEB_CONTENT else 'unchanged'}: SELinux file context {WEB_CONTENT} for {spec}")

    relabelled = [line for line in output([restorecon, "-R", "-v", root]).splitlines()
                  if line.startswith("Relabeled ")]
    if relabelled:
        log(f"relabelled: {len(relabelled)} files under {root} ({WEB_CONTENT})")
    else:
        log(f"unchanged: SELinux labels under {root}")
    return current != WEB_CONTENT or bool(relabelled)
