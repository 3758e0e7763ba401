"""HTTP for the poll: GET with timeouts, urllib3's retries and backoff, a
size limit, and ETag-conditional requests; the errors that decide nothing."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..config import Poll

if TYPE_CHECKING:
    import requests

USER_AGENT = "mistralrs-rpm-poll"
MAX_METADATA_BYTES = 256 * 1024 * 1024
"""Refuse to read a larger answer than this (a hostile server)."""
PollSettings = Poll


# --- errors that decide nothing --------------------------------------------


class RateLimited(Exception):
    def __init__(self, retry_at: datetime, exhausted: bool, limit: str | None):
        self.retry_at = retry_at
        wait = max(0, int((retry_at - datetime.now(timezone.utc)).total_seconds()))
        what = f"rate limit reached (0 of {limit} requests left)" if exhausted and limit else "rate limit reached"
        super().__init__(
            f"GitHub API {what}: retry after {retry_at:%Y-%m-%d %H:%M:%S} UTC"
            f" (in {wait // 60} min {wait % 60} s); nothing triggered"
            + ("; a token in the poll's token_env raises the limit" if exhausted and limit == "60" else "")
        )


class Unreachable(Exception):
    """No usable answer after the retries; the next poll tries again."""


class NotFound(Exception):
    pass


# --- HTTP ------------------------------------------------------------------


class _Auth:
    """An explicit auth object, with or without a token: requests then never
    consults ~/.netrc, which would otherwise replace the Authorization header."""

    def __init__(self, token: str | None):
        self._token = token

    def __call__(self, r):
        if self._token:
            r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:  # never show the token in a traceback or log
        return "_Auth(<token>)" if self._token else "_Auth(None)"


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    cached: bool = False
    """True when a 304 answer made us reuse the stored body."""


def _retry(settings: PollSettings, sleep: Callable[[float], None]):
    """urllib3's Retry for GETs: connection errors, read errors and 5xx
    answers are retried ``settings.retries`` times, ``backoff`` seconds
    before the first retry and doubled for each further one.  A rate-limit
    answer (403/429) is never retried: the caller reads its headers."""
    from urllib3.util.retry import Retry

    class _Retry(Retry):
        def get_backoff_time(self) -> float:
            # the first retry waits too (urllib3 waits only from the second)
            return settings.backoff * 2 ** max(0, len(self.history) - 1)

        def sleep(self, response=None) -> None:
            sleep(self.get_backoff_time())

    return _Retry(total=settings.retries, connect=settings.retries, read=settings.retries,
                  status=settings.retries, other=0, redirect=5, allowed_methods=frozenset({"GET"}),
                  status_forcelist=frozenset(range(500, 600)), raise_on_status=False,
                  respect_retry_after_header=False)


class Http:
    """GET with timeouts, retries with backoff on 5xx and connection errors
    (urllib3's Retry), and (for the API) ETag-conditional requests against a
    state file."""

    def __init__(self, settings: PollSettings, token: str | None = None, etags: dict | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        import requests  # here, not at the top: `doit` itself starts faster
        from requests.adapters import HTTPAdapter

        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=_retry(settings, sleep))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.auth = _Auth(token)
        self.etags = etags if etags is not None else {}
        self.reused: list[str] = []

    def get(self, url: str, headers: dict[str, str] | None = None, *, conditional: bool = False,
            auth: bool = True) -> Answer:
        import requests

        headers = dict(headers or {})
        stored = self.etags.get(url) if conditional else None
        if stored:
            headers["If-None-Match"] = stored["etag"]
        tries = 1 + max(0, self.settings.retries)
        after = f"after {tries} attempt{'s' if tries > 1 else ''}"
        try:
            r = self.session.get(url, headers=headers, timeout=self.settings.timeout,
                                 auth=self.auth if auth else _Auth(None), stream=True)
            body = _read_limited(r)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise Unreachable(f"{_safe(url)}: {type(e).__name__} {after}") from None
        except requests.RequestException as e:
            raise Unreachable(f"{_safe(url)}: {type(e).__name__}") from None
        if r.status_code >= 500:
            raise Unreachable(f"{_safe(url)}: HTTP {r.status_code} {after}")
        answer = Answer(r.status_code, body, {k.lower(): v for k, v in r.headers.items()})
        if answer.status == 304 and stored:
            self.reused.append(url)
            return Answer(200, base64.b64decode(stored["body"]), answer.headers, cached=True)
        if answer.status == 200 and conditional and answer.headers.get("etag"):
            self.etags[url] = {"etag": answer.headers["etag"], "body": base64.b64encode(body).decode()}
        return answer


def _read_limited(r: "requests.Response") -> bytes:
    chunks, total = [], 0
    for chunk in r.iter_content(65536):
        total += len(chunk)
        if total > MAX_METADATA_BYTES:
            r.close()
            raise Unreachable(f"{_safe(r.url)}: answer larger than {MAX_METADATA_BYTES // 2**20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _safe(url: str) -> str:
    """A URL without any user:password part, for messages."""
    return re.sub(r"//[^/@]*@", "//", url)


def shown(value: Any) -> str:
    """A value from outside, quoted and cut short for a one-line message."""
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:60]) if len(text) > 60 or not text.isprintable() else repr(text)
