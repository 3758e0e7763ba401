"""Starting the build workflows: Gitea's workflow dispatch REST API.

The poll runs as a scheduled workflow.  Gitea before 1.26 cancels, at every
cron tick, the unfinished jobs of the earlier scheduled runs of the same
workflow (``CancelPreviousJobs`` in ``startTasks``; removed by
go-gitea/gitea#32751), so a build that is a job of the poll's run would be
cancelled 15 minutes after it starts.  Runs started by ``workflow_dispatch``
are never cancelled that way, so the poll starts ``build-release.yml`` and
``build-prerelease.yml`` through ``POST /repos/{owner}/{repo}/actions/
workflows/{file}/dispatches`` (go-gitea/gitea#32059, from Gitea 1.24; 1.23
answers 404).

Where: the workflow passes ``github.api_url``, ``github.repository`` and
``github.ref_name`` in :data:`API_ENV`, :data:`REPOSITORY_ENV`,
:data:`REF_ENV`; without them (a poll on a workstation) the poll decides
and starts nothing.  The token, with write access to the repository's
actions, comes from the secret named by ``poll.dispatch_token_env``: the
job's own token may not start other workflows.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ..config import STABLE, UNSTABLE, Poll
from ..run import UserError, log

API_ENV = "MRPM_GITEA_API"
REPOSITORY_ENV = "MRPM_GITEA_REPOSITORY"
REF_ENV = "MRPM_GITEA_REF"
WORKFLOWS = {STABLE: "build-release.yml", UNSTABLE: "build-prerelease.yml"}
"""The workflow each channel's builds run in."""
REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}\Z")
REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}\Z")


class DispatchFailed(UserError):
    """Gitea did not start a build workflow; the message says what to fix."""


@dataclass(frozen=True)
class Gitea:
    api: str
    repository: str
    ref: str
    token: str

    def __repr__(self) -> str:  # never the token
        return f"Gitea({self.api!r}, {self.repository!r}, {self.ref!r})"


def gitea_from_env(settings: Poll) -> Gitea | None:
    """Where to start builds, from the workflow's environment; None outside CI."""
    api = os.environ.get(API_ENV, "").strip()
    if not api:
        return None
    repository, ref = os.environ.get(REPOSITORY_ENV, ""), os.environ.get(REF_ENV, "")
    if not re.match(r"^https?://[^\s]+\Z", api):
        raise DispatchFailed(f"{API_ENV} = {api[:80]!r}: expected the http(s) URL of Gitea's API (github.api_url)")
    if not REPOSITORY.match(repository):
        raise DispatchFailed(f"{REPOSITORY_ENV} = {repository[:80]!r}: expected owner/name (github.repository)")
    if not REF.match(ref):
        raise DispatchFailed(f"{REF_ENV} = {ref[:80]!r}: expected the branch the workflows run from (github.ref_name)")
    token = os.environ.get(settings.dispatch_token_env, "").strip()
    if not token:
        raise DispatchFailed(f"${settings.dispatch_token_env} is empty: the poll starts the build workflows with a"
                             " Gitea token that has write access to this repository's actions (a secret)")
    return Gitea(api.rstrip("/"), repository, ref, token)


def dispatch(gitea: Gitea, workflow: str, inputs: dict[str, str], timeout: float) -> None:
    """Start workflow on gitea.ref with inputs; Gitea answers 204 No Content."""
    import requests

    url = f"{gitea.api}/repos/{gitea.repository}/actions/workflows/{workflow}/dispatches"
    where = f"dispatch of {workflow} in {gitea.repository}"
    try:
        r = requests.post(url, data=json.dumps({"ref": gitea.ref, "inputs": inputs}), timeout=timeout,
                          headers={"Authorization": f"token {gitea.token}", "Content-Type": "application/json",
                                   "Accept": "application/json"}, allow_redirects=False)
    except requests.RequestException as e:
        raise DispatchFailed(f"{where}: Gitea unreachable ({type(e).__name__}); no build started") from None
    if r.status_code in (200, 201, 204):
        log(f"==> poll: started {workflow} on {gitea.ref} with {json.dumps(inputs, separators=(',', ':'))}")
        return
    if r.status_code in (401, 403):
        raise DispatchFailed(f"{where}: Gitea refused the token (HTTP {r.status_code}); the secret behind"
                             " poll.dispatch_token_env needs write access to the repository's actions")
    if r.status_code == 404:
        raise DispatchFailed(f"{where}: HTTP 404: Gitea before 1.24 has no dispatch API, or {workflow} is not"
                             f" on {gitea.ref}")
    raise DispatchFailed(f"{where}: HTTP {r.status_code} {_message(r.content)!r}")


def _message(body: bytes) -> str:
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    msg = data.get("message") if isinstance(data, dict) else None
    return msg[:200] if isinstance(msg, str) else ""
