"""GitHub's side of the poll: which repository, its latest release and the
head of the configured branch, every answer validated
(:func:`buildlib.refs.parse_ref`) before it is used."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import Config, Poll
from ..refs import COMMIT, RefError, parse_ref
from ..run import UserError
from .http import Answer, Http, NotFound, RateLimited, Unreachable, shown

GITHUB_URL = re.compile(
    r"^(?:https://github\.com/|ssh://git@github\.com/|git@github\.com:)"
    r"(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<name>[A-Za-z0-9._-]{1,100}?)(?:\.git)?/?\Z"
)
REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}\Z")
API_VERSION = "2022-11-28"


def github_repository(cfg: Config, settings: Poll) -> str:
    if settings.repository:
        if not REPOSITORY.match(settings.repository):
            raise UserError(f"poll.repository = {settings.repository!r}: expected \"owner/name\" as on GitHub")
        return settings.repository
    m = GITHUB_URL.match(cfg.upstream.url)
    if not m:
        raise UserError(
            f"upstream.url = {cfg.upstream.url!r} is not a GitHub URL: set poll.repository = \"owner/name\" to poll"
        )
    return f"{m.group('owner')}/{m.group('name')}"


# --- GitHub ----------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    release: str | None
    """The latest release's tag, validated; None when there is none."""
    release_problem: str
    head: str | None
    """The branch's head commit, validated."""
    head_problem: str
    notes: tuple[str, ...] = ()


def _check_api_answer(answer: Answer, url: str, what: str) -> None:
    h = answer.headers
    if answer.status in (403, 429):
        remaining = h.get("x-ratelimit-remaining")
        retry_after = h.get("retry-after")
        message = _message(answer.body)
        if answer.status == 429 or remaining == "0" or retry_after or "rate limit" in message.lower():
            now = datetime.now(timezone.utc)
            if retry_after and retry_after.isdigit():
                retry_at = datetime.fromtimestamp(now.timestamp() + int(retry_after), timezone.utc)
            elif h.get("x-ratelimit-reset", "").isdigit():
                retry_at = datetime.fromtimestamp(int(h["x-ratelimit-reset"]), timezone.utc)
            else:  # GitHub's advice for a secondary limit without headers
                retry_at = datetime.fromtimestamp(now.timestamp() + 60, timezone.utc)
            raise RateLimited(retry_at, remaining == "0", h.get("x-ratelimit-limit"))
    if answer.status == 401:
        raise UserError(f"GitHub refused the token ({what}: HTTP 401 {_message(answer.body)!r});"
                        " check the secret behind the poll's token_env")
    if answer.status == 404:
        raise NotFound(what)
    if answer.status != 200:
        raise Unreachable(f"{what}: unexpected HTTP {answer.status} {_message(answer.body)!r}")


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    msg = data.get("message") if isinstance(data, dict) else None
    return msg[:200] if isinstance(msg, str) else ""


def latest_release(http: Http, api: str, repository: str) -> tuple[str | None, str]:
    """(tag, problem): the validated tag of the latest release, or None and
    why not (no release yet, or a refused answer)."""
    url = f"{api}/repos/{repository}/releases/latest"
    answer = http.get(url, {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION},
                      conditional=True)
    try:
        _check_api_answer(answer, url, f"{repository}: latest release")
    except NotFound:
        return None, "upstream has no release yet"
    try:
        data = json.loads(answer.body)
    except ValueError:
        return None, f"refusing the latest release: the answer is not JSON ({answer.body[:40]!r})"
    if not isinstance(data, dict) or "tag_name" not in data:
        return None, "refusing the latest release: the answer has no tag_name"
    tag = data["tag_name"]
    if data.get("draft") is True or data.get("prerelease") is True:
        return None, f"refusing the latest release {shown(tag)}: marked as draft or prerelease"
    try:
        ref = parse_ref(tag) if isinstance(tag, str) else None
    except RefError:
        ref = None
    if ref is None or not ref.is_tag:
        return None, f"refusing upstream's latest release tag {shown(tag)}: expected vX.Y.Z or vX.Y.Z-rcN"
    return ref.text, ""


def head_commit(http: Http, api: str, repository: str, branch: str) -> tuple[str | None, str]:
    url = f"{api}/repos/{repository}/commits/{branch}"
    answer = http.get(url, {"Accept": "application/vnd.github.sha", "X-GitHub-Api-Version": API_VERSION},
                      conditional=True)
    try:
        _check_api_answer(answer, url, f"{repository}: head of {branch}")
    except NotFound:
        raise UserError(f"upstream.branch = {branch!r}: GitHub has no such branch in {repository}") from None
    text = answer.body.decode("ascii", errors="replace").strip()
    if text.startswith("{"):  # a proxy that dropped our Accept header
        try:
            text = json.loads(text).get("sha", "")
        except (ValueError, AttributeError):
            pass
    if not isinstance(text, str) or not COMMIT.match(text):
        return None, f"refusing the head of {branch}: {shown(text)} is not a 40-hex commit id"
    return text, ""


def ask_upstream(http: Http, settings: Poll, repository: str, branch: str) -> Upstream:
    api = settings.api_url.rstrip("/")
    if not re.match(r"^https?://[^\s]+\Z", api):
        raise UserError(f"poll.api_url = {settings.api_url!r}: expected an http(s) URL")
    try:
        release, release_problem = latest_release(http, api, repository)
        head, head_problem = head_commit(http, api, repository, branch)
    except NotFound as e:
        raise UserError(f"{e}: GitHub answers 404; check upstream.url or poll.repository") from None
    return Upstream(release, release_problem, head, head_problem)
