"""Poll upstream and the published repositories; decide what CI builds.

Two questions, each answered per channel and per flavour:

* stable: is upstream's latest release (GitHub ``releases/latest``) in the
  stable repository for every flavour, at the tag's RPM version?
* unstable: is there a snapshot of the head commit of the configured branch
  (GitHub ``commits/<branch>``) in the unstable repository, i.e. a package
  whose version ends with ``git<sha7>`` (or the earlier ``.g<sha7>``)?

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

Every answer is bounded before it is believed, in time, size and depth
(:mod:`.http`, :mod:`.github`), so a broken or hostile server can make a
poll decide nothing, never hang it.  The state file keeps ETags with the
checked values taken from the answers (a tag, a commit id), never the
answers themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import STABLE, UNSTABLE, Config, Poll, package_name
from ..layout import Layout
from ..publish import repodata
from ..publish.channels import channel_dir, channel_for_version
from ..refs import COMMIT, rpm_version_of_tag
from ..run import UserError, atomic_write, log
from .github import Upstream, ask_upstream, github_repository
from .dispatch import WORKFLOWS, dispatch, gitea_from_env
from .http import MAX_METADATA_BYTES, Http, RateLimited, Unreachable, UpstreamUnreachable, checked_etags


GITHUB_OUTPUT_ENV = "GITHUB_OUTPUT"



# --- settings --------------------------------------------------------------


PollSettings = Poll


def settings_of(cfg: Config) -> PollSettings:
    return cfg.poll


def state_file(layout: Layout) -> Path:
    """ETags with the checked values taken from their answers, and the
    builds started; under the cache, which CI keeps between polls."""
    return layout.poll_state


def decision_file(layout: Layout) -> Path:
    return layout.poll_decision


# --- published repositories ------------------------------------------------


@dataclass(frozen=True)
class Repository:
    url: str
    state: str
    """'published', 'missing' (no repomd.xml yet) or 'unreachable'."""
    versions: dict[str, frozenset[str]] = field(default_factory=dict)
    """package name -> versions (without release) published."""
    problem: str = ""
    packages: dict[str, repodata.Published] = field(default_factory=dict)
    """every package listed, by file name"""


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
            packages = repodata.read_primary(primary_file)
    except Unreachable as e:
        return Repository(url, "unreachable", problem=str(e))
    except repodata.MetadataError as e:
        return Repository(url, "unreachable", problem=str(e))
    return Repository(url, "published", repodata.versions_of(packages), packages=packages)


# --- the decision ----------------------------------------------------------


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
        where = unstable if channel_for_version(version) == UNSTABLE else stable  # an rc: unstable
        release = _decide_channel(flavours, where, lambda vs: version in vs, upstream.release, "")
        release["rpm_version"] = version
    else:
        release = _decide_channel(flavours, stable, lambda vs: False, None, upstream.release_problem)
    if upstream.head:
        # this form, and the .g<sha7> of packages published before it
        suffixes = (f"git{upstream.head[:7]}", f".g{upstream.head[:7]}")
        prerelease = _decide_channel(flavours, unstable, lambda vs: any(v.endswith(suffixes) for v in vs),
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
    """Ask GitHub and the published repositories; start the builds missing
    (:mod:`.dispatch`, in CI); write and return the decision."""
    settings = settings or settings_of(cfg)
    repository = github_repository(cfg, settings)
    token = (os.environ.get(settings.token_env) or None) if settings.token_env else None
    gitea = gitea_from_env(settings)
    state = _load_state(state_file(layout))
    http = Http(settings, token, state["etags"], sleep)
    unreachable = None
    try:
        upstream = ask_upstream(http, settings, repository, cfg.upstream.branch)
    except RateLimited as e:
        decision = undecided("rate-limited", str(e))
    except Unreachable as e:
        unreachable = f"GitHub API unreachable: {e}; nothing started, the next poll asks again"
        decision = undecided("unreachable", unreachable)
    else:
        stable = read_repository(http, channel_url(cfg, STABLE)) if upstream.release else None
        unstable = read_repository(http, channel_url(cfg, UNSTABLE)) if upstream.head else None
        decision = decide(cfg, upstream, stable, unstable)
        now = time.time()
        hold_back_repeats(decision, state["started"], settings.retrigger_after, now)
        previous_snapshot = state["last_snapshot"]
        hold_back_snapshots(decision, state, unstable, settings, now)
        if gitea:
            start_builds(decision, state, gitea, settings, previous_snapshot)
    finally:
        http.close()
        # ETags with the checked values taken from the answers, never the answers
        atomic_write(state_file(layout), json.dumps(state, indent=1, sort_keys=True) + "\n")
    decision.update({
        "upstream": repository,
        "branch": cfg.upstream.branch,
        "checked_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "unchanged_answers": http.reused,
    })
    atomic_write(decision_file(layout), json.dumps(decision, indent=2) + "\n")
    write_outputs(outputs_of(decision))
    if unreachable:
        raise UpstreamUnreachable(f"poll: {repository}: {unreachable}")
    log(summary(decision))
    return decision


def _number(v: Any, now: float) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= now + 86400


def _load_state(path: Path) -> dict:
    """{"etags": ETag and checked value by URL, "started": builds started by
    key, "snapshots": snapshot builds in flight by flavour, "last_snapshot":
    when the poll last started one}; a damaged file starts afresh, and an
    entry of another shape is dropped (:func:`.http.checked_etags`)."""
    state: dict[str, Any] = {"etags": {}, "started": {}, "snapshots": {}, "last_snapshot": None}
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return state
    if not isinstance(data, dict):
        return state
    now = time.time()
    started = data.get("started")
    state["started"] = {k: v for k, v in started.items() if _number(v, now)} if isinstance(started, dict) else {}
    state["etags"] = checked_etags(data.get("etags"))
    snapshots = data.get("snapshots")
    if isinstance(snapshots, dict):
        state["snapshots"] = {
            f: {"ref": r["ref"], "since": r["since"], "before": [v for v in r["before"] if isinstance(v, str)]}
            for f, r in snapshots.items()
            if isinstance(r, dict) and isinstance(r.get("ref"), str) and COMMIT.match(r["ref"])
            and _number(r.get("since"), now) and isinstance(r.get("before"), list)}
    if _number(data.get("last_snapshot"), now):
        state["last_snapshot"] = data["last_snapshot"]
    return state


def _utc(t: float) -> str:
    return f"{datetime.fromtimestamp(t, timezone.utc):%Y-%m-%d %H:%M} UTC"


def hold_back_repeats(decision: dict, started: dict, retrigger_after: float, now: float | None = None) -> None:
    """Record the release build this decision starts; hold back one started
    for the same packages less than retrigger_after seconds ago (it is still
    running, or it failed and would fail again).  Snapshots: see
    :func:`hold_back_snapshots`."""
    now = time.time() if now is None else now
    part = decision["release"]
    if part["build"]:
        build_key = f"{STABLE} {part['ref']} {','.join(part['missing'])}"
        if build_key in started and now - started[build_key] < retrigger_after:
            part["build"] = False
            part["reason"] = (f"the same build was started at {_utc(started[build_key])}; not again before"
                              f" {_utc(started[build_key] + retrigger_after)} (poll.retrigger_after)")
        else:
            started[build_key] = now
    for build_key in [k for k, t in started.items() if now - t > max(retrigger_after, 86400) * 7]:
        del started[build_key]


def hold_back_snapshots(decision: dict, state: dict, unstable: Repository | None, settings: PollSettings,
                        now: float) -> None:
    """At most one snapshot build per flavour in flight, and one started per
    poll.snapshot_interval at most.

    A snapshot build is in flight from the poll starting it until the
    unstable repository holds a snapshot of that flavour it did not hold
    then (the build may have built a newer head than the one it was started
    for: build-prerelease builds the branch's head as it is when it starts),
    or until poll.retrigger_after has passed (it failed, or was lost).  A
    running build is never cancelled for a newer head: it publishes, and a
    later poll builds the newest."""
    snapshots = state["snapshots"]
    for flavour, record in list(snapshots.items()):
        published = unstable.versions.get(package_name(flavour)) if unstable and unstable.state == "published" else None
        if now - record["since"] >= settings.retrigger_after or (published and set(published) - set(record["before"])):
            del snapshots[flavour]
    part = decision["prerelease"]
    if not part["build"]:
        return
    in_flight = [f for f in part["missing"] if f in snapshots]
    if in_flight:
        record = snapshots[in_flight[0]]
        part["build"] = False
        part["reason"] = (f"snapshot of {record['ref'][:12]} in flight since {_utc(record['since'])}"
                          f" ({', '.join(in_flight)}; until published, or poll.retrigger_after)")
        return
    last = state.get("last_snapshot")
    if last is not None and now - last < settings.snapshot_interval:
        part["build"] = False
        part["reason"] = f"next snapshot after {_utc(last + settings.snapshot_interval)} (poll.snapshot_interval)"
        return
    for flavour in part["missing"]:
        before = unstable.versions.get(package_name(flavour), frozenset()) if unstable else frozenset()
        snapshots[flavour] = {"ref": part["ref"], "since": now, "before": sorted(before)}
    state["last_snapshot"] = now


def start_builds(decision: dict, state: dict, gitea, settings: PollSettings, previous_snapshot: float | None) -> None:
    """Dispatch the build workflow of each channel the decision builds.  A
    dispatch Gitea refuses takes back what the poll recorded as started and
    ends the poll with one line."""
    for key, channel in (("release", STABLE), ("prerelease", UNSTABLE)):
        part = decision[key]
        if not part["build"]:
            continue
        inputs = {"ref": part["ref"], "flavours": json.dumps(part["missing"], separators=(",", ":"))}
        if channel == UNSTABLE:
            inputs["newest"] = "true"
        try:
            dispatch(gitea, WORKFLOWS[channel], inputs, settings.timeout)
        except UserError:
            if channel == STABLE:
                state["started"].pop(f"{STABLE} {part['ref']} {','.join(part['missing'])}", None)
            else:
                for f in part["missing"]:
                    state["snapshots"].pop(f, None)
                state["last_snapshot"] = previous_snapshot
            raise
        part["started"] = WORKFLOWS[channel]


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


