"""HTTP for the poll: GET with a deadline per attempt, urllib3's retries and
backoff, size limits, and ETag-conditional requests; the errors that decide
nothing.

Every answer is bounded before it is believed: each attempt has
``poll.timeout`` seconds in all (connect, headers and the whole body, not
per read, so a server trickling a byte a second is cut off too), and a body
is read as a stream and dropped past :data:`MAX_ANSWER_BYTES` (API,
repomd.xml) or :data:`MAX_METADATA_BYTES` (primary metadata).  The ETags
are kept with the checked values taken from their answers (a tag, a commit
id), never the answers themselves (:meth:`Http.remember`,
:func:`checked_etags`).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from ..config import Poll
from ..run import log
from ..run import Unreachable as UnreachableError

if TYPE_CHECKING:
    import requests

USER_AGENT = "mistralrs-rpm-poll"
MAX_METADATA_BYTES = 256 * 1024 * 1024
"""Refuse to decompress more primary metadata than this (a hostile server)."""
MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""The most an API answer or a repomd.xml may weigh (GitHub's latest
release, notes and a few hundred assets included, is well below 1 MiB)."""
MAX_STORED_CHARS = 200
"""The longest ETag or value the state file keeps."""
PollSettings = Poll


# --- errors that decide nothing --------------------------------------------


class RateLimited(Exception):
    def __init__(self, retry_at: datetime, exhausted: bool, limit: str | None, clamped: str = ""):
        self.retry_at = retry_at
        wait = max(0, int((retry_at - datetime.now(timezone.utc)).total_seconds()))
        what = f"rate limit reached (0 of {limit} requests left)" if exhausted and limit else "rate limit reached"
        super().__init__(
            f"GitHub API {what}: retry after {retry_at:%Y-%m-%d %H:%M:%S} UTC"
            f" (in {wait // 60} min {wait % 60} s{clamped}); nothing triggered"
            + ("; a token in the poll's token_env raises the limit" if exhausted and limit == "60" else "")
        )


class Unreachable(Exception):
    """No usable answer after the retries; the next poll tries again."""


class UpstreamUnreachable(UnreachableError):
    """GitHub's API gave no usable answer after the poll's retries: the poll
    ends non-zero with this one line (a rate limit is not this: it ends 0)."""


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
    remembered: str | None = None
    """The checked value stored with the ETag, when a 304 confirmed it."""


class _Deadline:
    """A wall-clock limit on one attempt: connect, TLS, headers and the whole
    body.  Socket timeouts count per read, so a server sending a byte a
    second never trips them; when this one passes, the sockets the attempt
    uses are shut down, which ends any read blocked on them, and ``expired``
    tells the failure that follows what it was.

    The sockets are watched through duplicates of their descriptors, so a
    socket urllib3 has already closed is never confused with a later one
    that got its number."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._attempt = 0
        self._watched: list[socket.socket] = []

    def start(self) -> None:
        """A new attempt: the clock starts again."""
        self.stop()
        with self._lock:
            self.expired = False
            self._attempt += 1
            # the attempt's number: a timer that fires as it is cancelled leaves the next attempt alone
            self._timer = threading.Timer(self.seconds, self._expire, args=(self._attempt,))
            self._timer.daemon = True
            self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        try:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):  # closed meanwhile: nothing to cut
            return
        with self._lock:
            self._watched.append(dup)
            if self.expired:
                _cut(dup)

    def _expire(self, attempt: int) -> None:
        with self._lock:
            if attempt != self._attempt:
                return
            self.expired = True
            for sock in self._watched:
                _cut(sock)

    def stop(self) -> None:
        with self._lock:
            if self._timer:
                self._timer.cancel()
                self._timer = None
            for sock in self._watched:
                sock.close()
            self._watched.clear()


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched_pools(manager, deadline: _Deadline) -> None:
    """Make the connections of a urllib3 pool manager (plain, proxy or SOCKS)
    report their sockets to the deadline: when a new connection has its
    socket (``_new_conn``, urllib3's hook for making it, in 1.x and 2.x;
    before any TLS handshake) and when a kept-alive one starts a request.
    ``pool_classes_by_scheme`` and ``ConnectionCls`` are the documented
    ways to give a pool manager other classes."""
    def watched(base):
        class Watched(base):
            def _new_conn(self):
                sock = super()._new_conn()
                deadline.watch(sock)
                return sock

            def request(self, *args, **kwargs):
                deadline.watch(self.sock)
                return super().request(*args, **kwargs)

        Watched.__name__ = f"Watched{base.__name__}"
        return Watched

    manager.pool_classes_by_scheme = {
        scheme: type(f"Watched{pool.__name__}", (pool,), {"ConnectionCls": watched(pool.ConnectionCls)})
        for scheme, pool in manager.pool_classes_by_scheme.items()
    }


def _retry(settings: PollSettings, sleep: Callable[[float], None], deadline: _Deadline):
    """urllib3's Retry for GETs: connection errors, read errors and 5xx
    answers are retried ``settings.retries`` times, ``backoff`` seconds
    before the first retry and doubled for each further one (at most
    ``BACKOFF_MAX``).  A rate-limit answer (403/429) is never retried: the
    caller reads its headers.  Nor is an attempt that ran out of time: a
    server that slow stays slow, and retrying would multiply the wait."""
    from urllib3.exceptions import MaxRetryError
    from urllib3.util.retry import Retry

    class _Retry(Retry):
        def get_backoff_time(self) -> float:
            # the first retry waits too (urllib3 waits only from the second)
            return min(self.DEFAULT_BACKOFF_MAX, settings.backoff * 2 ** max(0, len(self.history) - 1))

        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            if deadline.expired:
                raise MaxRetryError(_pool, url, error)
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            retry.failed = (f"HTTP {response.status}" if response is not None and error is None
                            else type(error).__name__ if error is not None else "no answer")
            retry.failed_url = _pool_url(_pool, url)
            return retry

        def sleep(self, response=None) -> None:
            wait = self.get_backoff_time()
            attempt = len(self.history) + 1
            log(f"==> poll: {getattr(self, 'failed_url', '?')}: {getattr(self, 'failed', 'no answer')};"
                f" next try in {wait:g} s (attempt {attempt} of {1 + settings.retries})")
            sleep(wait)
            deadline.start()

    return _Retry(total=settings.retries, connect=settings.retries, read=settings.retries,
                  status=settings.retries, other=0, redirect=5, allowed_methods=frozenset({"GET"}),
                  status_forcelist=frozenset(range(500, 600)), raise_on_status=False,
                  respect_retry_after_header=False)


class Http:
    """GET with a total time limit per attempt, a size limit per answer,
    retries with backoff on 5xx and connection errors (urllib3's Retry),
    and (for the API) ETag-conditional requests whose checked results are
    kept in the state file."""

    def __init__(self, settings: PollSettings, token: str | None = None, etags: dict | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        import requests  # here, not at the top: `doit` itself starts faster
        from requests.adapters import HTTPAdapter

        self.deadline = deadline = _Deadline(settings.timeout)

        class Adapter(HTTPAdapter):
            def init_poolmanager(self, *args, **kwargs):
                super().init_poolmanager(*args, **kwargs)
                _watched_pools(self.poolmanager, deadline)

            def proxy_manager_for(self, proxy, **kwargs):
                fresh = proxy not in self.proxy_manager
                manager = super().proxy_manager_for(proxy, **kwargs)
                if fresh:
                    _watched_pools(manager, deadline)
                return manager

        self.session = requests.Session()
        adapter = Adapter(max_retries=_retry(settings, sleep, deadline))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.auth = _Auth(token)
        self.etags = etags if etags is not None else {}
        self.reused: list[str] = []

    def close(self) -> None:
        self.deadline.stop()
        self.session.close()

    def get(self, url: str, headers: dict[str, str] | None = None, *,
            conditional: Callable[[str], bool] | None = None, auth: bool = True,
            limit: int = MAX_ANSWER_BYTES) -> Answer:
        """GET url.  With ``conditional`` (the check a stored value must
        pass), a stored ETag is sent and a 304 returns the stored value as
        ``remembered``; :meth:`remember` stores one after a 200."""
        import requests
        import urllib3

        headers = dict(headers or {})
        stored = self.etags.get(url) if conditional else None
        if stored and not conditional(stored["value"]):
            stored = None
        if stored:
            headers["If-None-Match"] = stored["etag"]
        tries = 1 + max(0, self.settings.retries)
        after = f"after {tries} attempt{'s' if tries > 1 else ''}"
        # Socket timeouts a little longer than the deadline: the deadline
        # decides, they are a second line should a socket escape it.
        socket_timeout = self.settings.timeout + 1
        r = None
        self.deadline.start()
        try:
            r = self.session.get(url, headers=headers, timeout=(socket_timeout, socket_timeout),
                                 auth=self.auth if auth else _Auth(None), stream=True)
            body = _read_limited(r, limit)
            if self.deadline.expired:  # a close-delimited body cut short looks complete
                raise Unreachable(self._too_slow(url))
        except (requests.RequestException, urllib3.exceptions.HTTPError, HTTPException, OSError) as e:
            if self.deadline.expired:
                raise Unreachable(self._too_slow(url)) from None
            if isinstance(e, (requests.ConnectionError, requests.Timeout)):
                raise Unreachable(f"{_safe(url)}: {type(e).__name__} {after}") from None
            raise Unreachable(f"{_safe(url)}: {type(e).__name__}") from None
        finally:
            self.deadline.stop()
            if r is not None:
                r.close()
        if r.status_code >= 500:
            raise Unreachable(f"{_safe(url)}: HTTP {r.status_code} {after}")
        answer = Answer(r.status_code, body, {k.lower(): v for k, v in r.headers.items()})
        if answer.status == 304 and stored:
            self.reused.append(url)
            return Answer(304, b"", answer.headers, remembered=stored["value"])
        return answer

    def remember(self, url: str, answer: Answer, value: str) -> None:
        """Keep answer's ETag with the checked value taken from it."""
        etag = answer.headers.get("etag", "")
        if _storable(etag) and _storable(value):
            self.etags[url] = {"etag": etag, "value": value}

    def _too_slow(self, url: str) -> str:
        return (f"{_safe(url)}: no complete answer within {self.settings.timeout:g} s (poll.timeout);"
                " not asked again in this poll")


def _pool_url(pool, url: str | None) -> str:
    """The URL a retry is for, as one safe line (urllib3 gives the pool and the path)."""
    where = f"{pool.scheme}://{pool.host}:{pool.port}" if pool is not None else ""
    return _safe(where + (url or ""))[:200]


def _storable(text: str) -> bool:
    return isinstance(text, str) and 0 < len(text) <= MAX_STORED_CHARS and text.isascii() and text.isprintable()


def checked_etags(stored: Any) -> dict[str, dict[str, str]]:
    """The ETag entries read back from a state file, each an ETag and the
    checked value :meth:`Http.remember` kept; an entry of another shape (an
    older poll kept whole answers) is dropped.  Each value is checked again
    where it is used (``conditional``)."""
    if not isinstance(stored, dict):
        return {}
    return {k: {"etag": v["etag"], "value": v["value"]} for k, v in stored.items()
            if isinstance(v, dict) and _storable(v.get("etag")) and _storable(v.get("value"))}


def _read_limited(r: "requests.Response", limit: int) -> bytes:
    """The body, read as a stream and dropped once it passes limit bytes
    (after decompression: a small gzip can inflate to anything)."""
    too_large = f"{_safe(r.url)}: answer larger than {limit // 2**20} MiB; stopped reading"
    declared = r.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise Unreachable(too_large)
    chunks, total = [], 0
    for chunk in r.iter_content(65536):
        total += len(chunk)
        if total > limit:
            raise Unreachable(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _safe(url: str) -> str:
    """A URL without any user:password part, for messages."""
    return re.sub(r"//[^/@]*@", "//", url)


def shown(value: Any) -> str:
    """A value from outside, quoted and cut short for a one-line message."""
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:60]) if len(text) > 60 or not text.isprintable() else repr(text)
