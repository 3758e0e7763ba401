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
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:60]) if len(text) > 60 or not text.isprintable() else repr(text)


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
        return None, f"refusing the latest release {_shown(tag)}: marked as draft or prerelease"
    try:
        ref = parse_ref(tag) if isinstance(tag, str) else None
    except RefError:
        ref = None
    if ref is None or not ref.is_tag:
        return None, f"refusing upstream's latest release tag {_shown(tag)}: expected vX.Y.Z or vX.Y.Z-rcN"
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
        return None, f"refusing the head of {branch}: {_shown(text)} is not a 40-hex commit id"
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
            primary = http.get(url + href, auth=False)
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
    except repodata.MetadataError as e:
        return Repository(url, "unreachable", problem=str(e))
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
    """(ETags by URL, builds started by key); a damaged file starts afresh."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    etags, started = data.get("etags"), data.get("started")
    etags = {k: v for k, v in etags.items() if isinstance(v, dict) and isinstance(v.get("etag"), str)
             and isinstance(v.get("body"), str)} if isinstance(etags, dict) else {}
    started = {k: v for k, v in started.items() if isinstance(v, (int, float))} if isinstance(started, dict) else {}
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
