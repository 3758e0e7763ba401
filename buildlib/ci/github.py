"""GitHub's side of the poll: which repository, its latest release and the
head of the configured branch, every answer validated
(:func:`buildlib.refs.parse_ref`) before it is used.

Beyond :mod:`.http`'s limits on time and size, JSON nested deeper than
:data:`MAX_JSON_DEPTH` is refused before it is parsed, a retry hint is
believed up to :data:`MAX_RETRY_WAIT`, and only a validated tag or commit id
is kept with an ETag, checked again when it is read back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

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
MAX_JSON_DEPTH = 32
"""GitHub's answers nest 4 deep; Python's json recurses once per level."""
MAX_RETRY_WAIT = 6 * 3600
"""Seconds of a retry hint (Retry-After, X-RateLimit-Reset) believed: GitHub's
limits last an hour; more is a broken or hostile answer, or a clock off by hours."""


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


def _retry_at(headers: dict[str, str], now: datetime) -> tuple[datetime, str]:
    """When GitHub says to ask again, at most MAX_RETRY_WAIT from now, and a
    note when a hint was cut to that.  Only ASCII digits count (str.isdigit()
    also takes "²", which int() refuses); a hint in another form (an HTTP
    date) is passed over."""
    for name, relative in (("retry-after", True), ("x-ratelimit-reset", False)):
        value = headers.get(name, "")
        if value.isascii() and value.isdigit():
            if len(value) > 20:  # past any clock; int() refuses 4300 digits and more
                wait = MAX_RETRY_WAIT + 1
            else:
                wait = int(value) if relative else int(value) - int(now.timestamp())
            hint = f"{'Retry-After' if relative else 'X-RateLimit-Reset'}: {value}"
            break
    else:  # GitHub's advice for a secondary limit without headers
        wait, hint = 60, ""
    if wait <= MAX_RETRY_WAIT:
        return now + timedelta(seconds=max(0, wait)), ""
    quoted = hint if len(hint) <= 48 else f"{hint[:40]}... ({len(hint)} characters)"
    return (now + timedelta(seconds=MAX_RETRY_WAIT),
            f"; GitHub's {quoted!r} is clamped to {MAX_RETRY_WAIT // 3600} h")


def _check_api_answer(answer: Answer, url: str, what: str) -> None:
    h = answer.headers
    if answer.status in (403, 429):
        remaining = h.get("x-ratelimit-remaining")
        retry_after = h.get("retry-after")
        message = _message(answer.body)
        if answer.status == 429 or remaining == "0" or retry_after or "rate limit" in message.lower():
            retry_at, clamped = _retry_at(h, datetime.now(timezone.utc))
            limit = h.get("x-ratelimit-limit")
            limit = limit if limit and limit.isascii() and limit.isdigit() and len(limit) < 10 else None
            raise RateLimited(retry_at, remaining == "0", limit, clamped)
    if answer.status == 401:
        raise UserError(f"GitHub refused the token ({what}: HTTP 401 {_message(answer.body)!r});"
                        " check the secret behind the poll's token_env")
    if answer.status == 404:
        raise NotFound(what)
    if answer.status != 200:
        raise Unreachable(f"{what}: unexpected HTTP {answer.status} {_message(answer.body)!r}")


class TooDeep(ValueError):
    pass


_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')


def parse_json(body: bytes) -> Any:
    """JSON from the network: UTF-8 (as RFC 8259 requires between systems),
    nested at most MAX_JSON_DEPTH deep, counted before the parser (which
    recurses once per level) sees it; else ValueError (TooDeep).

    The count is one pass over the brackets, quotes and backslashes, in
    linear time whatever the body holds (a regular expression for whole
    strings went back over the rest of the body at every escaped quote:
    hours for a 4 MB answer of backslash-quotes)."""
    text = body.decode("utf-8")
    depth = 0
    in_string = False
    escaped_at = -1
    for m in _JSON_SPECIAL.finditer(text):
        char, at = m.group(), m.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise TooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels")
        elif char in "]}":
            depth -= 1
    return json.loads(text)


def _message(body: bytes) -> str:
    try:
        data = parse_json(body)
    except ValueError:
        return ""
    msg = data.get("message") if isinstance(data, dict) else None
    return msg[:200] if isinstance(msg, str) else ""


def _api_get(http: Http, url: str, accept: str, conditional: Callable[[str], bool], what: str) -> Answer:
    """GET an API URL; a remembered answer (304, its stored value checked by
    ``conditional``) as is, any other checked by :func:`_check_api_answer`."""
    answer = http.get(url, {"Accept": accept, "X-GitHub-Api-Version": API_VERSION}, conditional=conditional)
    if not answer.remembered:
        _check_api_answer(answer, url, what)
    return answer


def latest_release(http: Http, api: str, repository: str) -> tuple[str | None, str]:
    """(tag, problem): the validated tag of the latest release, or None and
    why not (no release yet, or a refused answer)."""
    url = f"{api}/repos/{repository}/releases/latest"
    try:
        answer = _api_get(http, url, "application/vnd.github+json", _release_tag, f"{repository}: latest release")
    except NotFound:
        return None, "upstream has no release yet"
    if answer.remembered:
        return answer.remembered, ""
    try:
        data = parse_json(answer.body)
    except TooDeep as e:
        return None, f"refusing the latest release: the answer is {e}"
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
    http.remember(url, answer, ref.text)
    return ref.text, ""


def _release_tag(value: str) -> bool:
    """A stored release tag is checked again when read back."""
    try:
        return parse_ref(value).is_tag
    except RefError:
        return False


def _commit(value: str) -> bool:
    return bool(COMMIT.match(value))


def head_commit(http: Http, api: str, repository: str, branch: str) -> tuple[str | None, str]:
    url = f"{api}/repos/{repository}/commits/{branch}"
    try:
        answer = _api_get(http, url, "application/vnd.github.sha", _commit, f"{repository}: head of {branch}")
    except NotFound:
        raise UserError(f"upstream.branch = {branch!r}: GitHub has no such branch in {repository}") from None
    if answer.remembered:
        return answer.remembered, ""
    text = answer.body.decode("ascii", errors="replace").strip()
    if text.startswith("{"):  # a proxy that dropped our Accept header
        try:
            text = parse_json(answer.body).get("sha", "")
        except TooDeep as e:
            return None, f"refusing the head of {branch}: the answer is {e}"
        except (ValueError, AttributeError):
            pass
    if not isinstance(text, str) or not COMMIT.match(text):
        return None, f"refusing the head of {branch}: {shown(text)} is not a 40-hex commit id"
    http.remember(url, answer, text)
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
