"""Poll upstream and the published repositories; decide what CI builds.

Two questions, each answered per channel and per flavour:

* stable: is upstream's latest release (GitHub ``releases/latest``) in the
  stable repository for every flavour, at the tag's RPM version?
* unstable: is there a snapshot of the head commit of the configured branch
  (GitHub ``commits/<branch>``) in the unstable repository, i.e. a package
  whose version ends with ``.g<sha7>``?

Everything from the network is validated before it is used or written
anywhere (:func:`buildlib.refs.parse_ref`), so a tag such as ``v1.0.0;id``
never reaches a shell, a workflow output or a build.

When the answer cannot be known, nothing is triggered: API rate limiting
(one line saying when to retry), an API or repository that stays unreachable
after the retries, or an answer we refuse.  Those end the poll successfully
with ``build_*=false``: the next scheduled poll, 15 minutes later, asks
again, and a red cron run every 15 minutes would only teach people to ignore
it.  The poll fails only for what a person must fix (configuration, a token
GitHub rejects, a repository or branch that does not exist).

Every answer is bounded before it is believed: each attempt has
``poll.timeout`` seconds in all (connect, headers and the whole body, not
per read, so a server trickling a byte a second is cut off too), a body is
read as a stream and dropped past :data:`MAX_ANSWER_BYTES` (API, repomd.xml)
or :data:`MAX_METADATA_BYTES` (primary metadata), JSON nested deeper than
:data:`MAX_JSON_DEPTH` is refused, and a retry hint is believed up to
:data:`MAX_RETRY_WAIT`.  The state file keeps ETags and the checked values
taken from the answers (a tag, a commit id), never the answers themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import STABLE, UNSTABLE, Config, Poll
from ..layout import Layout
from ..publish import repodata
from ..publish.channels import channel_dir
from ..refs import COMMIT, RefError, parse_ref, rpm_version_of_tag
from ..run import UserError, atomic_write, log

if TYPE_CHECKING:
    import requests

GITHUB_OUTPUT_ENV = "GITHUB_OUTPUT"
FLAVOURS_ENV = "MRPM_FLAVOURS"
"""For `doit matrix`: a JSON list of flavours to build (default: all)."""
CHANNEL_ENV = "MRPM_CHANNEL"
"""For `doit matrix`: the channel a CI workflow builds for; its ref must fit
(stable: a release tag, unstable: a commit)."""

GITHUB_URL = re.compile(
    r"^(?:https://github\.com/|ssh://git@github\.com/|git@github\.com:)"
    r"(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<name>[A-Za-z0-9._-]{1,100}?)(?:\.git)?/?\Z"
)
REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}\Z")
API_VERSION = "2022-11-28"
USER_AGENT = "mistralrs-rpm-poll"
MAX_METADATA_BYTES = 256 * 1024 * 1024
"""Refuse to decompress more primary metadata than this (a hostile server)."""
MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""The most an API answer or a repomd.xml may weigh (GitHub's latest
release, notes and a few hundred assets included, is well below 1 MiB)."""
MAX_JSON_DEPTH = 32
"""GitHub's answers nest 4 deep; Python's json recurses once per level."""
MAX_RETRY_WAIT = 6 * 3600
"""Seconds of a retry hint (Retry-After, X-RateLimit-Reset) believed: GitHub's
limits last an hour; more is a broken or hostile answer, or a clock off by hours."""
MAX_STORED_CHARS = 200
"""The longest ETag or value the state file keeps."""


# --- settings --------------------------------------------------------------


PollSettings = Poll


def settings_of(cfg: Config) -> PollSettings:
    return cfg.poll


def state_file(layout: Layout) -> Path:
    """ETags, stored answers and the builds started; under the cache, which
    CI keeps between polls."""
    return layout.poll_state


def decision_file(layout: Layout) -> Path:
    return layout.poll_decision


def github_repository(cfg: Config, settings: PollSettings) -> str:
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
            return super().increment(method, url, response, error, _pool, _stacktrace)

        def sleep(self, response=None) -> None:
            sleep(self.get_backoff_time())
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


def _storable(text: str) -> bool:
    return isinstance(text, str) and 0 < len(text) <= MAX_STORED_CHARS and text.isascii() and text.isprintable()


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
    shown = hint if len(hint) <= 48 else f"{hint[:40]}... ({len(hint)} characters)"
    return (now + timedelta(seconds=MAX_RETRY_WAIT),
            f"; GitHub's {shown!r} is clamped to {MAX_RETRY_WAIT // 3600} h")


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


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_NESTING = re.compile(r"[\[\]{}]")


def parse_json(body: bytes) -> Any:
    """JSON from the network: UTF-8 (as RFC 8259 requires between systems),
    nested at most MAX_JSON_DEPTH deep, counted before the parser (which
    recurses once per level) sees it; else ValueError (TooDeep)."""
    text = body.decode("utf-8")
    depth = 0
    for bracket in _JSON_NESTING.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)


def _message(body: bytes) -> str:
    try:
        data = parse_json(body)
    except ValueError:
        return ""
    msg = data.get("message") if isinstance(data, dict) else None
    return msg[:200] if isinstance(msg, str) else ""


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:60]) if len(text) > 60 or not text.isprintable() else repr(text)


def latest_release(http: Http, api: str, repository: str) -> tuple[str | None, str]:
    """(tag, problem): the validated tag of the latest release, or None and
    why not (no release yet, or a refused answer)."""
    url = f"{api}/repos/{repository}/releases/latest"
    answer = http.get(url, {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION},
                      conditional=_release_tag)
    if answer.remembered:
        return answer.remembered, ""
    try:
        _check_api_answer(answer, url, f"{repository}: latest release")
    except NotFound:
        return None, "upstream has no release yet"
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
        return None, f"refusing the latest release {_shown(tag)}: marked as draft or prerelease"
    try:
        ref = parse_ref(tag) if isinstance(tag, str) else None
    except RefError:
        ref = None
    if ref is None or not ref.is_tag:
        return None, f"refusing upstream's latest release tag {_shown(tag)}: expected vX.Y.Z or vX.Y.Z-rcN"
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
    answer = http.get(url, {"Accept": "application/vnd.github.sha", "X-GitHub-Api-Version": API_VERSION},
                      conditional=_commit)
    if answer.remembered:
        return answer.remembered, ""
    try:
        _check_api_answer(answer, url, f"{repository}: head of {branch}")
    except NotFound:
        raise UserError(f"upstream.branch = {branch!r}: GitHub has no such branch in {repository}") from None
    text = answer.body.decode("ascii", errors="replace").strip()
    if text.startswith("{"):  # a proxy that dropped our Accept header
        try:
            text = parse_json(answer.body).get("sha", "")
        except TooDeep as e:
            return None, f"refusing the head of {branch}: the answer is {e}"
        except (ValueError, AttributeError):
            pass
    if not isinstance(text, str) or not COMMIT.match(text):
        return None, f"refusing the head of {branch}: {_shown(text)} is not a 40-hex commit id"
    http.remember(url, answer, text)
    return text, ""


def ask_upstream(http: Http, settings: PollSettings, repository: str, branch: str) -> Upstream:
    api = settings.api_url.rstrip("/")
    if not re.match(r"^https?://[^\s]+\Z", api):
        raise UserError(f"poll.api_url = {settings.api_url!r}: expected an http(s) URL")
    try:
        release, release_problem = latest_release(http, api, repository)
        head, head_problem = head_commit(http, api, repository, branch)
    except NotFound as e:
        raise UserError(f"{e}: GitHub answers 404; check upstream.url or poll.repository") from None
    return Upstream(release, release_problem, head, head_problem)


# --- published repositories ------------------------------------------------


@dataclass(frozen=True)
class Repository:
    url: str
    state: str
    """'published', 'missing' (no repomd.xml yet) or 'unreachable'."""
    versions: dict[str, frozenset[str]] = field(default_factory=dict)
    """package name -> versions (without release) published."""
    problem: str = ""


def channel_url(cfg: Config, channel: str) -> str:
    return f"{cfg.publish.base_url.rstrip('/')}/{channel_dir(cfg, cfg.channel(channel))}/"


def read_repository(http: Http, url: str) -> Repository:
    """The packages of a published rpm-md repository, over HTTP(S), read
    with the publish's own metadata reader (:mod:`buildlib.publish.repodata`)."""
    try:
        answer = http.get(url + "repodata/repomd.xml", auth=False)
        if answer.status == 404:
            return Repository(url, "missing")
        if answer.status != 200:
            return Repository(url, "unreachable", problem=f"repomd.xml: HTTP {answer.status}")
        with tempfile.TemporaryDirectory(prefix="mrpm-poll-") as tmp:
            repomd = Path(tmp) / "repomd.xml"
            repomd.write_bytes(answer.body)
            primary_at = repodata.primary_location(repomd)
            href = primary_at.href
            primary = http.get(url + href, auth=False, limit=MAX_METADATA_BYTES)
            if primary.status != 200:
                return Repository(url, "unreachable", problem=f"{href}: HTTP {primary.status}")
            if primary_at.checksum_type in hashlib.algorithms_available and primary_at.checksum:
                got = hashlib.new(primary_at.checksum_type, primary.body).hexdigest()
                if got != primary_at.checksum:
                    return Repository(url, "unreachable",
                                      problem=f"{href}: checksum differs from repomd.xml (a half-updated mirror?)")
            primary_file = Path(tmp) / href.rsplit("/", 1)[-1]
            primary_file.write_bytes(primary.body)
            versions = repodata.versions_of(repodata.read_primary(primary_file))
    except Unreachable as e:
        return Repository(url, "unreachable", problem=str(e))
    except repodata.MetadataError as e:  # createrepo_c's parse errors end in a line break
        return Repository(url, "unreachable", problem=" ".join(str(e).split()))
    return Repository(url, "published", versions)


# --- the decision ----------------------------------------------------------


def package_name(flavour: str) -> str:
    return f"mistralrs-{flavour}"


def _decide_channel(flavours: list[str], repo: Repository, has: Callable[[set[str] | frozenset[str]], bool],
                    ref: str | None, problem: str) -> dict:
    result: dict[str, Any] = {"ref": ref, "repository": repo.url if repo else None,
                              "repository_state": repo.state if repo else None,
                              "missing": [], "present": [], "build": False, "reason": problem}
    if ref is None:
        return result
    if repo.state == "unreachable":
        result["reason"] = f"repository unreachable, nothing decided: {repo.problem}"
        return result
    for f in flavours:
        published = repo.versions.get(package_name(f), frozenset())
        (result["present"] if has(published) else result["missing"]).append(f)
    result["build"] = bool(result["missing"])
    result["reason"] = ("repository does not exist yet" if repo.state == "missing"
                        else "missing for some flavours" if result["missing"] else "published for every flavour")
    return result


def decide(cfg: Config, upstream: Upstream, stable: Repository | None, unstable: Repository | None) -> dict:
    flavours = [f.name for f in cfg.flavours]
    release: dict[str, Any]
    if upstream.release:
        version = rpm_version_of_tag(upstream.release)
        release = _decide_channel(flavours, stable, lambda vs: version in vs, upstream.release, "")
        release["rpm_version"] = version
    else:
        release = _decide_channel(flavours, stable, lambda vs: False, None, upstream.release_problem)
    if upstream.head:
        suffix = f".g{upstream.head[:7]}"
        prerelease = _decide_channel(flavours, unstable, lambda vs: any(v.endswith(suffix) for v in vs),
                                     upstream.head, "")
        prerelease["sha7"] = upstream.head[:7]
    else:
        prerelease = _decide_channel(flavours, unstable, lambda vs: False, None, upstream.head_problem)
    return {"status": "decided", "release": release, "prerelease": prerelease}


def undecided(status: str, reason: str) -> dict:
    empty = {"ref": None, "missing": [], "present": [], "build": False, "reason": reason}
    return {"status": status, "release": dict(empty), "prerelease": dict(empty)}


def poll_upstream(cfg: Config, layout: Layout, settings: PollSettings | None = None, *,
                  sleep: Callable[[float], None] = time.sleep) -> dict:
    """Ask GitHub and the published repositories; write and return the decision."""
    settings = settings or settings_of(cfg)
    repository = github_repository(cfg, settings)
    token = (os.environ.get(settings.token_env) or None) if settings.token_env else None
    etags, started = _load_state(state_file(layout))
    http = Http(settings, token, etags, sleep)
    try:
        upstream = ask_upstream(http, settings, repository, cfg.upstream.branch)
    except RateLimited as e:
        decision = undecided("rate-limited", str(e))
    except Unreachable as e:
        decision = undecided("unreachable", f"GitHub API unreachable: {e}; nothing triggered, the next poll asks again")
    else:
        stable = read_repository(http, channel_url(cfg, STABLE)) if upstream.release else None
        unstable = read_repository(http, channel_url(cfg, UNSTABLE)) if upstream.head else None
        decision = decide(cfg, upstream, stable, unstable)
        hold_back_repeats(decision, started, settings.retrigger_after)
    finally:
        http.close()
        # ETags with the checked values taken from the answers, never the answers
        atomic_write(state_file(layout), json.dumps({"etags": etags, "started": started}, indent=1, sort_keys=True) + "\n")
    decision.update({
        "upstream": repository,
        "branch": cfg.upstream.branch,
        "checked_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "unchanged_answers": http.reused,
    })
    atomic_write(decision_file(layout), json.dumps(decision, indent=2) + "\n")
    write_outputs(outputs_of(decision))
    log(summary(decision))
    return decision


def _load_state(path: Path) -> tuple[dict, dict]:
    """(ETag and checked value by URL, builds started by key); a damaged file
    starts afresh, and an entry of another shape (an older poll kept whole
    answers) is dropped.  Each value is checked again where it is used."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    etags, started = data.get("etags"), data.get("started")
    etags = {k: {"etag": v["etag"], "value": v["value"]} for k, v in etags.items()
             if isinstance(v, dict) and _storable(v.get("etag")) and _storable(v.get("value"))
             } if isinstance(etags, dict) else {}
    now = time.time()
    started = {k: v for k, v in started.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and 0 <= v <= now + 86400} if isinstance(started, dict) else {}
    return etags, started


def hold_back_repeats(decision: dict, started: dict, retrigger_after: float, now: float | None = None) -> None:
    """Record the builds this decision starts; hold back one started for
    the same packages less than retrigger_after seconds ago (it is still
    running, or it failed and would fail again)."""
    now = time.time() if now is None else now
    for key, channel in (("release", STABLE), ("prerelease", UNSTABLE)):
        part = decision[key]
        if not part["build"]:
            continue
        build_key = f"{channel} {part['ref']} {','.join(part['missing'])}"
        if build_key in started and now - started[build_key] < retrigger_after:
            at = datetime.fromtimestamp(started[build_key], timezone.utc)
            again = datetime.fromtimestamp(started[build_key] + retrigger_after, timezone.utc)
            part["build"] = False
            part["reason"] = (f"the same build was started at {at:%Y-%m-%d %H:%M} UTC; not again before"
                              f" {again:%Y-%m-%d %H:%M} UTC (poll.retrigger_after)")
        else:
            started[build_key] = now
    for build_key in [k for k, t in started.items() if now - t > max(retrigger_after, 86400) * 7]:
        del started[build_key]


def outputs_of(decision: dict) -> dict[str, str]:
    """The workflow outputs.  Every value is a validated ref, a JSON list of
    configured flavour names or a fixed word: nothing from the network
    reaches the file unchecked, so no answer can add a line of its own."""
    rel, pre = decision["release"], decision["prerelease"]
    return {
        "poll_status": decision["status"],
        "release_ref": (rel["ref"] or "") if rel["build"] else "",
        "release_flavours": json.dumps(rel["missing"] if rel["build"] else [], separators=(",", ":")),
        "build_release": "true" if rel["build"] else "false",
        "prerelease_ref": (pre["ref"] or "") if pre["build"] else "",
        "prerelease_flavours": json.dumps(pre["missing"] if pre["build"] else [], separators=(",", ":")),
        "build_prerelease": "true" if pre["build"] else "false",
    }


def write_outputs(values: dict[str, str]) -> None:
    path = os.environ.get(GITHUB_OUTPUT_ENV)
    if not path:
        return
    lines = []
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            raise UserError(f"output {key}: refusing a value with a line break")
        lines.append(f"{key}={value}\n")
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(lines)


def summary(decision: dict) -> str:
    """For people: one line when nothing could be decided, else one per channel."""
    if decision["status"] != "decided":
        return f"==> poll: {decision.get('upstream', 'upstream')}: {decision['release']['reason']}"
    lines = [f"==> poll: {decision.get('upstream', 'upstream')}"]
    for label, key in (("stable  ", "release"), ("unstable", "prerelease")):
        part = decision[key]
        ref = part["ref"]
        shown = (ref[:12] if ref and len(ref) == 40 else ref) or "-"
        if part["build"]:
            action = f"build {', '.join(part['missing'])}"
            if part["present"]:
                action += f" (present: {', '.join(part['present'])})"
        elif ref and part["missing"]:
            action = f"held back: {part['reason']}"
        elif ref and part.get("repository_state") != "unreachable":
            action = "nothing to do: published for every flavour"
        else:
            action = f"nothing decided: {part['reason']}"
        lines.append(f"    {label} {shown}: {action}")
    return "\n".join(lines)


# --- the flavour matrix ----------------------------------------------------


def flavour_matrix(cfg: Config, selection: str | None = None) -> list[str]:
    """The flavours a CI build fans out over: all configured ones, or the
    JSON list given (the poll's *_flavours output), checked against config."""
    configured = [f.name for f in cfg.flavours]
    if selection is None or not selection.strip():
        return configured
    try:
        wanted = json.loads(selection)
    except ValueError:
        wanted = None
    if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
        raise UserError(f"{FLAVOURS_ENV} = {_shown(selection)}: expected a JSON list of flavour names")
    unknown = [w for w in wanted if w not in configured]
    if unknown:
        raise UserError(f"{FLAVOURS_ENV}: unknown flavour {_shown(unknown[0])}; configured: {', '.join(configured)}")
    if not wanted:
        raise UserError(f"{FLAVOURS_ENV} is an empty list: nothing to build")
    return [f for f in configured if f in wanted]


def check_ref_fits_channel(cfg: Config, channel: str | None) -> None:
    """A release workflow given a commit (or the reverse) stops here, before
    any runner starts a build for the wrong channel."""
    if not channel:
        return
    cfg.channel(channel)
    ref = cfg.upstream.ref
    if channel == STABLE and not ref.is_tag:
        raise UserError(f"ref {ref.text}: the stable channel takes release tags vX.Y.Z[-rcN]; use build-prerelease for commits")
    if channel == UNSTABLE and not ref.is_commit:
        raise UserError(f"ref {ref.text}: the unstable channel takes 40-hex commit ids; use build-release for tags")


def write_matrix(cfg: Config) -> None:
    check_ref_fits_channel(cfg, os.environ.get(CHANNEL_ENV))
    flavours = flavour_matrix(cfg, os.environ.get(FLAVOURS_ENV))
    text = json.dumps(flavours, separators=(",", ":"))
    write_outputs({"flavours": text})
    log(f"==> matrix: {text}")
