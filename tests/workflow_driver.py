"""Runs a Gitea/GitHub Actions workflow's jobs on this machine, without Gitea.

A small stand-in for act_runner, enough for the build workflows and strict
about everything else: a key, an action or an expression it does not know
stops the run with a clear error instead of being skipped, so a workflow
that grows beyond what this driver understands fails its test.

It follows Gitea 1.24, the oldest version the workflows are written for
(README, "CI"), where that differs from GitHub:

* a matrix given by an expression (``fromJSON(needs.x.outputs.y)``) is one
  job, whose matrix value is the whole evaluated value (go-gitea/gitea#25179;
  dynamic matrices only came later, #36564);
* ``timeout-minutes`` is ignored (honoured from 1.27): a job is stopped at
  the runner's own ``runner.timeout`` (act_runner's default: 3 hours);
* ``concurrency`` is ignored (honoured from 1.26);
* a job calling a reusable workflow (``uses:``) is refused: up to 1.26 the
  called workflow runs inside the calling job on one runner and its jobs'
  ``runs-on`` are ignored (#34986), which is never what a build wants;
* a job without a ``runs-on`` this runner serves is refused (without one,
  Gitea hands the job to any runner, #32348).

What it does, as a runner would:

* jobs in the order of their ``needs`` (one runner: one job at a time);
  a failed job skips the jobs that need it;
* ``strategy.matrix``: the product of its lists (after ``fromJSON``), one
  job per combination, each on a fresh runner;
* every job starts in a new empty workspace (a fresh runner), which is
  removed when the job ends: nothing but artifacts and job outputs passes
  from one job to the next;
* ``actions/checkout``: copies this checkout's files (tracked and untracked,
  not ignored: the tree as it is, uncommitted work included) into the
  workspace, then the files the test substitutes (its config.toml), and
  links ``.venv`` to this checkout's, standing in for the virtualenv that
  ``scripts/bootstrap`` would otherwise install from the network;
* ``actions/upload-artifact@v3`` / ``download-artifact@v3``: files copied
  into and out of an artifact store directory, with v3's path rules (the
  part of a path before its first wildcard is the root; several jobs may
  add to one artifact; ``if-no-files-found``);
* ``env`` at workflow, job and step level, over the runner's environment
  (its ``MRPM_*`` and ``GITHUB_*`` variables dropped), with the runner's own
  ``CI``, ``GITHUB_ACTIONS``, ``GITHUB_WORKSPACE``, ``GITHUB_OUTPUT``,
  ``GITHUB_ENV``, ``GITHUB_PATH``, ``GITHUB_STEP_SUMMARY``, ``RUNNER_TEMP``;
* ``${{ }}`` expressions: context look-ups (``inputs``, ``secrets``,
  ``matrix``, ``needs.<job>.outputs``, ``steps.<id>.outputs``, ``env``,
  ``github``), literals, ``==``, ``!=``, ``!``, ``&&``, ``||``, parentheses
  and ``fromJSON``, ``toJSON``, ``contains``; a secret or output not set is "";
* ``if:`` on jobs and steps, with the implied ``success()``: a job runs when
  every job it needs succeeded and its condition holds, else it is skipped
  (a skipped job counts as not succeeded for the jobs that need it); a step
  whose condition is false is skipped and the job goes on;
* status functions in a job's ``if:`` (``success()``: every job it needs
  succeeded; ``failure()``: one of them failed; ``cancelled()``: the run
  was cancelled; ``always()``), which replace the implied ``success()``: as
  Gitea does since 1.22 (go-gitea/gitea#29464), a job with an ``if:`` is
  handed to the runner whatever its needs concluded, and the runner decides;
  ``needs.<job>.result`` (success, failure, skipped, cancelled; a matrix
  job's is failure when one of its jobs failed).  In a step's ``if:`` they
  are refused;
* a step's ``continue-on-error: true``: its failure is recorded (its
  outcome) and the job goes on as if it had succeeded;
* ``scripts/bootstrap --role ROLE...``: the roles are checked against those
  the script takes and recorded (``JobRun.roles``), and the script runs as
  the test machine was bootstrapped, with no role (``test``: every role's
  packages but nodejs, which only act_runner itself needs), so that a test
  never installs system packages;
* ``run:`` steps with bash as Actions runs them on Linux
  (``bash --noprofile --norc -eo pipefail <script file>``), in the
  workspace, within the runner's timeout; ``$GITHUB_OUTPUT``'s
  ``key=value`` and ``key<<DELIM`` lines become the step's outputs;
* secrets are masked in the logs kept here, and any secret that shows up in
  a step's output is reported (``Run.leaks``).

Not done (not used by the workflows it runs): ``services``, ``container``, ``defaults``, other actions; ``permissions``
has no meaning on one runner without a server and is read but not enforced.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

PROJECT = Path(__file__).resolve().parent.parent

JOB_KEYS = {"name", "needs", "if", "runs-on", "timeout-minutes", "outputs", "strategy", "steps", "concurrency",
            "env", "permissions"}
STEP_KEYS = {"name", "id", "if", "uses", "run", "with", "env", "working-directory", "continue-on-error"}
RUNNER_TIMEOUT_S = 3 * 3600
"""act_runner's default runner.timeout: what stops a job on Gitea before 1.27."""
STRATEGY_KEYS = {"matrix", "fail-fast", "max-parallel"}
ACTIONS = re.compile(r"^actions/(?P<name>checkout|upload-artifact|download-artifact)@(?P<version>v\d+)\Z")
ARTIFACT_VERSION = "v3"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)"
                   r"|(?P<op>==|!=|&&|\|\||[!(),])|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*))")
STATUS_FUNCTIONS = {"success", "failure", "always", "cancelled"}
STATUS = "__status__"
"""The contexts key under which a job's if: finds what its status functions answer."""
BOOTSTRAP = re.compile(r"^scripts/bootstrap((?:\s+--role\s+\S+)*)\s*\Z")
DROPPED_ENV = re.compile(r"^(MRPM_|GITHUB_|RUNNER_)")


class WorkflowError(Exception):
    """The workflow uses something this driver does not do, or is malformed."""


@dataclass
class StepRun:
    job: str
    name: str
    kind: str  # "run" or the action
    command: str
    returncode: int
    seconds: float
    log: str  # stdout and stderr together, secrets masked
    outputs: dict[str, str] = field(default_factory=dict)
    skipped: bool = False
    continued: bool = False
    """It failed, and continue-on-error let the job go on."""


@dataclass
class JobRun:
    id: str
    name: str
    matrix: dict[str, Any]
    workspace: Path
    conclusion: str = "pending"  # success, failure, skipped
    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    roles: tuple[str, ...] = ()
    """What its scripts/bootstrap step asked for."""

    @property
    def failed_step(self) -> StepRun | None:
        return next((s for s in self.steps if s.returncode != 0 and not s.continued), None)


@dataclass
class Run:
    workflow: str
    jobs: dict[str, list[JobRun]] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    artifacts: Path | None = None

    @property
    def ok(self) -> bool:
        return all(j.conclusion in ("success", "skipped") for runs in self.jobs.values() for j in runs)

    def transcript(self, tail: int = 6000) -> str:
        lines = []
        for runs in self.jobs.values():
            for job in runs:
                lines.append(f"== job {job.name} [{job.conclusion}]")
                for step in job.steps:
                    state = "skipped" if step.skipped else f"{step.returncode} ({step.seconds:.1f} s)"
                    lines.append(f"-- {step.name}: {step.command} -> {state}")
                    if step.returncode != 0:
                        lines.append(step.log[-tail:])
        return "\n".join(lines)

    def check(self) -> None:
        """Raise AssertionError with the failing step's output unless every job succeeded."""
        if not self.ok:
            raise AssertionError(f"workflow {self.workflow} failed:\n{self.transcript()}")


def project_flavours(project: Path) -> list[dict]:
    import tomllib

    config = project / "config.toml"
    return list(tomllib.loads(config.read_text()).get("flavours", {}).values()) if config.is_file() else []


def load_workflow(path: Path, config_text: str | None = None) -> dict:
    """The workflow as the runner reads it; with config_text (a test's own
    config.toml), as `doit workflows` renders it for that configuration, as
    a maintainer commits the two together (the gate jobs follow the
    flavours' `gate` settings)."""
    return YAML(typ="safe").load(workflow_text(path, config_text))


def workflow_text(path: Path, config_text: str | None = None) -> str:
    text = path.read_text()
    if config_text is None:
        return text
    import tomllib

    from buildlib.ci.workflows import render
    from buildlib.config import parse

    return render(parse(tomllib.loads(config_text), PROJECT / "config.toml"), text, path.name)


# --- expressions -------------------------------------------------------------


def evaluate(expr: str, contexts: dict[str, Any]) -> Any:
    """An Actions expression: literals, context look-ups, ==, !=, !, &&, ||,
    parentheses, fromJSON, toJSON and contains."""
    tokens = _tokens(expr)
    parser = _Parser(tokens, contexts, expr)
    value = parser.disjunction()
    if parser.pos != len(tokens):
        raise WorkflowError(f"expression {expr!r}: unexpected {tokens[parser.pos][1]!r}")
    return value


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos, text = [], 0, expr.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise WorkflowError(f"expression {expr!r}: this driver cannot read {text[pos:].strip()!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, float) and value != value)


def _number(value: Any) -> float:
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip() or 0)
        except ValueError:
            return float("nan")
    return float("nan")


def equal(a: Any, b: Any) -> bool:
    """Actions' loose equality: strings ignore case; other types meet as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return a is b
    return _number(a) == _number(b)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], contexts: dict[str, Any], expr: str):
        self.tokens, self.contexts, self.expr, self.pos = tokens, contexts, expr, 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, op: str) -> bool:
        if self._peek() == ("op", op):
            self.pos += 1
            return True
        return False

    def _expect(self, op: str) -> None:
        if not self._take(op):
            raise WorkflowError(f"expression {self.expr!r}: expected {op!r}")

    def disjunction(self) -> Any:
        value = self.conjunction()
        while self._take("||"):
            right = self.conjunction()
            value = value if truthy(value) else right
        return value

    def conjunction(self) -> Any:
        value = self.comparison()
        while self._take("&&"):
            right = self.comparison()
            value = right if truthy(value) else value
        return value

    def comparison(self) -> Any:
        value = self.unary()
        while True:
            if self._take("=="):
                value = equal(value, self.unary())
            elif self._take("!="):
                value = not equal(value, self.unary())
            else:
                return value

    def unary(self) -> Any:
        if self._take("!"):
            return not truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        token = self._peek()
        if token is None:
            raise WorkflowError(f"expression {self.expr!r}: ends too early")
        kind, text = token
        self.pos += 1
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return float(text) if "." in text else int(text)
        if token == ("op", "("):
            value = self.disjunction()
            self._expect(")")
            return value
        if kind == "name":
            if text in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[text]
            if self._take("("):
                args = []
                if not self._take(")"):
                    args.append(self.disjunction())
                    while self._take(","):
                        args.append(self.disjunction())
                    self._expect(")")
                return self._call(text, args)
            return lookup(text, self.contexts, self.expr)
        raise WorkflowError(f"expression {self.expr!r}: unexpected {text!r}")

    def _call(self, name: str, args: list[Any]) -> Any:
        fn = name.lower()
        if fn in STATUS_FUNCTIONS:
            status = self.contexts.get(STATUS)
            if status is None or args:
                raise WorkflowError(f"expression {self.expr!r}: status function {name}() is not emulated here"
                                    " (a job's if: only, without arguments)")
            return True if fn == "always" else status[fn]
        if fn == "fromjson" and len(args) == 1:
            if not isinstance(args[0], str):
                raise WorkflowError(f"fromJSON of a non-string in {self.expr!r}")
            try:
                return json.loads(args[0])
            except ValueError:
                raise WorkflowError(f"expression {self.expr!r}: fromJSON of {args[0]!r}: not JSON") from None
        if fn == "tojson" and len(args) == 1:
            return json.dumps(args[0])
        if fn == "contains" and len(args) == 2:
            search, item = args
            if isinstance(search, list):
                return any(equal(x, item) for x in search)
            return _text(item).casefold() in _text(search).casefold()
        raise WorkflowError(f"expression {self.expr!r}: function {name}() with {len(args)} argument(s) is not emulated")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def lookup(path: str, contexts: dict[str, Any], expr: str) -> Any:
    head, *rest = path.split(".")
    if head not in contexts:
        raise WorkflowError(f"expression {expr!r}: context {head!r} is not available here")
    value: Any = contexts[head]
    for i, part in enumerate(rest):
        if not isinstance(value, dict):
            raise WorkflowError(f"expression {expr!r}: {'.'.join([head, *rest[:i]])} is not an object")
        if part not in value:
            # unset secrets, outputs and env read as "" in Actions; an unknown
            # input or matrix key is a mistake in the workflow
            if head in ("secrets", "env") or (head in ("needs", "steps") and i == len(rest) - 1):
                return ""
            raise WorkflowError(f"expression {expr!r}: no {part!r} in {'.'.join([head, *rest[:i]])}")
        value = value[part]
    return value


def substitute(value: Any, contexts: dict[str, Any]) -> Any:
    """Expand ${{ }} in a string; a string that is one whole expression keeps its type."""
    if isinstance(value, dict):
        return {k: substitute(v, contexts) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, contexts) for v in value]
    if not isinstance(value, str):
        return value
    whole = EXPRESSION.fullmatch(value.strip())
    if whole:
        return evaluate(whole.group(1), contexts)

    return EXPRESSION.sub(lambda m: _text(evaluate(m.group(1), contexts)), value)


def as_env(values: dict | None, contexts: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in (values or {}).items():
        value = substitute(value, contexts)
        out[str(key)] = "true" if value is True else "false" if value is False else str(value)
    return out


def uses_status_function(text: Any) -> bool:
    if isinstance(text, bool):
        return False
    text = str(text).strip()
    whole = EXPRESSION.fullmatch(text)
    tokens = _tokens(whole.group(1) if whole else text)
    return any(kind == "name" and value.lower() in STATUS_FUNCTIONS and tokens[i + 1:i + 2] == [("op", "(")]
               for i, (kind, value) in enumerate(tokens))


def job_runs(job: dict, needs: dict[str, dict], contexts: dict, cancelled: bool = False) -> bool:
    """Whether a job whose needs have ended runs: every need succeeded and
    its if: holds (the implied success()), or, where its if: calls a status
    function, whatever that if: says."""
    succeeded = all(n["result"] == "success" for n in needs.values())
    if "if" not in job:
        return succeeded and not cancelled
    status = {"success": succeeded and not cancelled, "cancelled": cancelled,
              "failure": any(n["result"] == "failure" for n in needs.values())}
    holds = truthy(_condition(job["if"], dict(contexts, **{STATUS: status})))
    return holds if uses_status_function(job["if"]) else holds and succeeded and not cancelled


# --- the driver ----------------------------------------------------------------


class Driver:
    """Runs one workflow file's jobs.

    root: a scratch directory (workspaces, the artifact store, temp files);
    checkout_overrides: relative path -> text, written over the checkout in
    every job (the test's config.toml); runner_labels: what this runner
    serves (a job for another label is an error).
    """

    def __init__(self, workflow: Path, root: Path, *, inputs: dict[str, str] | None = None,
                 secrets: dict[str, str] | None = None, checkout_overrides: dict[str, str] | None = None,
                 runner_labels: tuple[str, ...] = ("cuda-13.0",), project: Path = PROJECT,
                 event: str = "workflow_dispatch", keep_workspaces: bool = False,
                 runner_timeout: float = RUNNER_TIMEOUT_S, github: dict[str, str] | None = None):
        self.path = workflow
        self.overrides = dict(checkout_overrides or {})
        config_text = self.overrides.get("config.toml")
        self.workflow = load_workflow(workflow, config_text)
        if config_text is not None and workflow.is_relative_to(project):
            self.overrides[workflow.relative_to(project).as_posix()] = workflow_text(workflow, config_text)
        self.root = root
        self.project = project
        self.secrets = dict(secrets or {})
        self.labels = set(runner_labels)
        self.keep_workspaces = keep_workspaces
        self.runner_timeout = runner_timeout
        self.event = event
        self.github = dict(github or {})
        self.inputs = self._inputs(event, inputs or {})
        self.artifacts = root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.run = Run(workflow=workflow.name, artifacts=self.artifacts)
        self._counter = itertools.count(1)

    # -- inputs

    def _inputs(self, event: str, given: dict[str, str]) -> dict[str, Any]:
        on = self.workflow.get("on") or {}
        if event not in on:
            raise WorkflowError(f"{self.path.name} is not triggered by {event}")
        trigger = on[event]
        declared = (trigger.get("inputs") or {}) if isinstance(trigger, dict) else {}
        unknown = set(given) - set(declared)
        if unknown:
            raise WorkflowError(f"{self.path.name}: no input(s) {sorted(unknown)} for {event}")
        inputs = {}
        for name, spec in declared.items():
            if name in given:
                inputs[name] = given[name]
            elif spec.get("required"):
                raise WorkflowError(f"{self.path.name}: input {name!r} is required")
            else:
                inputs[name] = spec.get("default", "")
        return inputs

    # -- jobs

    def execute(self) -> Run:
        jobs = self.workflow.get("jobs") or {}
        order = self._order(jobs)
        results: dict[str, dict] = {}  # job id -> {"result", "outputs"} as the needs context shows it
        for job_id in order:
            job = jobs[job_id]
            needs = _as_list(job.get("needs"))
            contexts = self._contexts(needs_ctx={n: results[n] for n in needs})
            if not job_runs(job, {n: results[n] for n in needs}, contexts):
                self.run.jobs[job_id] = [JobRun(job_id, job.get("name", job_id), {}, self.root, "skipped")]
                results[job_id] = {"result": "skipped", "outputs": {}}
                continue
            runs = [self._run_job(job_id, job, combo, contexts) for combo in self._matrix(job, contexts)]
            self.run.jobs[job_id] = runs
            outputs: dict[str, str] = {}
            for r in runs:  # matrix jobs: the outputs of the last one that set them, as in Actions
                outputs.update({k: v for k, v in r.outputs.items() if v != ""})
            results[job_id] = {"result": "success" if all(r.conclusion == "success" for r in runs) else "failure",
                               "outputs": outputs}
        return self.run

    def _order(self, jobs: dict) -> list[str]:
        order: list[str] = []
        pending = list(jobs)
        while pending:
            ready = [j for j in pending if all(n in order for n in _as_list(jobs[j].get("needs")))]
            if not ready:
                raise WorkflowError(f"{self.path.name}: jobs {pending} need jobs that never run (a cycle or a typo)")
            order.append(ready[0])
            pending.remove(ready[0])
        for job_id, job in jobs.items():
            if "uses" in job:
                raise WorkflowError(f"job {job_id}: calls a reusable workflow; up to Gitea 1.26 it runs inside the"
                                    " calling job on one runner, its jobs' runs-on ignored (go-gitea/gitea#34986)")
            extra = set(job) - JOB_KEYS
            if extra:
                raise WorkflowError(f"job {job_id}: this driver does not do {sorted(extra)}")
            if job.get("runs-on") not in self.labels:
                raise WorkflowError(f"job {job_id}: runs-on {job.get('runs-on')!r}, but this runner serves {sorted(self.labels)}")
        return order

    def _contexts(self, needs_ctx: dict | None = None, **more: Any) -> dict[str, Any]:
        return {"inputs": self.inputs, "secrets": self.secrets, "needs": needs_ctx or {},
                "github": {"run_id": "1", "run_number": "1", "event_name": self.event,
                           "workflow": self.workflow.get("name", self.path.stem), **self.github},
                **more}

    def _matrix(self, job: dict, contexts: dict) -> list[dict[str, Any]]:
        strategy = job.get("strategy")
        if not strategy:
            return [{}]
        extra = set(strategy) - STRATEGY_KEYS
        if extra:
            raise WorkflowError(f"strategy: this driver does not do {sorted(extra)}")
        written = strategy.get("matrix") or {}
        if isinstance(written, str):
            # Gitea up to at least 1.26 (#25179): an expression gives one job
            return [{"": substitute(written, contexts)}]
        if not isinstance(written, dict) or {"include", "exclude"} & set(written):
            raise WorkflowError("strategy.matrix: lists by key only (no include/exclude here)")
        if any(isinstance(v, str) for v in written.values()):
            # The same for a key given by an expression: one job, whose
            # matrix value is the whole evaluated value.
            return [{k: substitute(v, contexts) for k, v in written.items()}]
        for key, values in written.items():
            if not isinstance(values, list) or not values:
                raise WorkflowError(f"strategy.matrix.{key}: expected a non-empty list, got {values!r}")
        keys = list(written)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(written[k] for k in keys))]

    def _run_job(self, job_id: str, job: dict, combo: dict, contexts: dict) -> JobRun:
        steps = self._job_steps(job_id, job, combo, contexts)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            return done.value

    def _job_steps(self, job_id: str, job: dict, combo: dict, contexts: dict):
        """One job, as a generator: it yields (the JobRun, the step) before
        each step that runs, so that a :class:`Gitea` can let virtual time
        pass, or close it (the job cancelled: the step never runs); it
        returns the JobRun."""
        contexts = dict(contexts, matrix=combo, steps={})
        name = substitute(job.get("name", job_id), contexts)
        workspace = self.root / "runners" / f"{next(self._counter):02d}-{job_id}" / "workspace"
        workspace.mkdir(parents=True)  # a fresh runner: an empty workspace
        temp = workspace.parent / "temp"
        temp.mkdir()
        jr = JobRun(job_id, name, combo, workspace)
        env = {k: v for k, v in os.environ.items() if not DROPPED_ENV.match(k)}
        env.update(CI="true", GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(workspace), RUNNER_TEMP=str(temp),
                   GITHUB_JOB=job_id)
        contexts["env"] = {}
        env.update(self._env_layer(self.workflow.get("env"), contexts))
        env.update(self._env_layer(job.get("env"), contexts))
        # timeout-minutes is ignored before Gitea 1.27: the runner's timeout stops the job
        deadline = time.monotonic() + self.runner_timeout
        try:
            for step in job.get("steps") or []:
                step_contexts = dict(contexts, env={**contexts["env"], **as_env(step.get("env"), contexts)})
                if "if" not in step or truthy(_condition(step["if"], step_contexts)):
                    yield jr, step
                result = self._run_step(jr, step, env, contexts, workspace, temp, deadline)
                jr.steps.append(result)
                if result.returncode != 0 and truthy(substitute(step.get("continue-on-error", False), contexts)):
                    result.continued = True
                elif result.returncode != 0:
                    jr.conclusion = "failure"
                    break
            else:
                jr.conclusion = "success"
            if jr.conclusion == "success":
                jr.outputs = {k: str(substitute(v, contexts)) for k, v in (job.get("outputs") or {}).items()}
        finally:
            if not self.keep_workspaces:
                shutil.rmtree(workspace.parent, ignore_errors=True)
        return jr

    def _env_layer(self, values: dict | None, contexts: dict) -> dict[str, str]:
        layer = as_env(values, contexts)
        contexts["env"] = {**contexts["env"], **layer}
        return layer

    # -- steps

    def _run_step(self, jr: JobRun, step: dict, job_env: dict, contexts: dict, workspace: Path, temp: Path,
                  deadline: float) -> StepRun:
        extra = set(step) - STEP_KEYS
        if extra:
            raise WorkflowError(f"job {jr.id}: step {step.get('name') or step.get('uses')}: this driver does not do {sorted(extra)}")
        if ("uses" in step) == ("run" in step):
            raise WorkflowError(f"job {jr.id}: a step has exactly one of uses: and run:")
        step_contexts = dict(contexts, env={**contexts["env"], **as_env(step.get("env"), contexts)})
        name = substitute(step.get("name") or step.get("uses") or step["run"].splitlines()[0], step_contexts)
        kind = step["uses"] if "uses" in step else "run"
        if "if" in step and not truthy(_condition(step["if"], step_contexts)):
            if "id" in step:
                contexts["steps"][step["id"]] = {"outputs": {}, "outcome": "skipped"}
            return StepRun(jr.id, name, kind, step.get("uses") or step["run"].strip(), 0, 0.0, "skipped",
                           skipped=True)
        env = dict(job_env, **as_env(step.get("env"), contexts))
        started = time.monotonic()
        if "uses" in step:
            kind = step["uses"]
            with_ = {k: substitute(v, step_contexts) for k, v in (step.get("with") or {}).items()}
            try:
                log = self._action(kind, with_, workspace, jr)
                rc = 0
            except ActionFailed as e:
                log, rc = str(e), 1
            return StepRun(jr.id, name, kind, kind, rc, time.monotonic() - started, log)
        script = substitute(step["run"], step_contexts)
        written = script
        bootstrap = BOOTSTRAP.match(script.strip())
        if bootstrap:
            jr.roles = self._bootstrap_roles(bootstrap.group(1))
            script = "scripts/bootstrap"
        outputs_file, env_file, path_file = temp / "output", temp / "env", temp / "path"
        for f in (outputs_file, env_file, path_file):
            f.write_text("")
        env.update(GITHUB_OUTPUT=str(outputs_file), GITHUB_ENV=str(env_file), GITHUB_PATH=str(path_file),
                   GITHUB_STEP_SUMMARY=str(temp / "summary.md"))
        script_file = temp / f"step-{len(jr.steps) + 1}.sh"
        script_file.write_text(script + "\n")
        cwd = workspace / step.get("working-directory", ".")
        limit = deadline - time.monotonic()
        rc, output = _bash(script_file, cwd, env, limit)
        outputs = parse_outputs(outputs_file.read_text())
        job_env.update(parse_outputs(env_file.read_text()))  # GITHUB_ENV: for the next steps
        added = [p for p in path_file.read_text().splitlines() if p.strip()]
        if added:
            job_env["PATH"] = os.pathsep.join([*reversed(added), job_env.get("PATH", "")])
        if "id" in step:
            contexts["steps"][step["id"]] = {"outputs": outputs, "outcome": "success" if rc == 0 else "failure"}
        return StepRun(jr.id, name, "run", written.strip(), rc, time.monotonic() - started, self._mask(output),
                       outputs)

    def _bootstrap_roles(self, args: str) -> tuple[str, ...]:
        """The roles a bootstrap step asks for, each one the script (the
        project's, which checkout copies) takes."""
        roles = tuple(args.split()[1::2])
        known = re.search(r"^\s*([a-z|]+)\) roles\+=", (self.project / "scripts" / "bootstrap").read_text(), re.M)
        if not known:
            raise WorkflowError("scripts/bootstrap: cannot find the roles it takes")
        unknown = [r for r in roles if r not in known.group(1).split("|")]
        if unknown:
            raise WorkflowError(f"scripts/bootstrap --role {unknown[0]}: the script takes {known.group(1)}")
        return roles

    def _mask(self, text: str) -> str:
        """Actions masks secrets in logs; record any that appeared."""
        for name, secret in self.secrets.items():
            for fragment in secret_fragments(secret):
                if fragment in text:
                    self.run.leaks.append(name)
                    text = text.replace(fragment, "***")
        return text

    # -- actions

    def _action(self, uses: str, with_: dict, workspace: Path, jr: JobRun) -> str:
        m = ACTIONS.match(uses)
        if not m:
            raise WorkflowError(f"job {jr.id}: action {uses!r} is not emulated by this driver")
        name, version = m.group("name"), m.group("version")
        if name == "checkout":
            if with_:
                raise WorkflowError(f"actions/checkout with {sorted(with_)}: not emulated")
            return self._checkout(workspace)
        if version != ARTIFACT_VERSION:
            raise WorkflowError(f"{uses}: only the {ARTIFACT_VERSION} artifact protocol is emulated")
        if name == "upload-artifact":
            return self._upload(with_, workspace)
        return self._download(with_, workspace)

    def _checkout(self, workspace: Path) -> str:
        listed = subprocess.run(["git", "-C", str(self.project), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], check=True, capture_output=True).stdout
        count = 0
        for rel in sorted(set(listed.decode().split("\0")) - {""}):
            src = self.project / rel
            if not os.path.lexists(src):  # deleted in the working tree, not yet in git
                continue
            dest = workspace / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest, follow_symlinks=False)
            count += 1
        for rel, text in self.overrides.items():
            (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
            (workspace / rel).write_text(text)
        venv = self.project / ".venv"
        if venv.exists():
            (workspace / ".venv").symlink_to(venv, target_is_directory=True)
        return f"checked out {count} files of {self.project.name} into {workspace}"

    def _upload(self, with_: dict, workspace: Path) -> str:
        known = {"name", "path", "if-no-files-found", "retention-days"}
        if set(with_) - known:
            raise WorkflowError(f"upload-artifact: {sorted(set(with_) - known)} not emulated")
        name = with_.get("name") or "artifact"
        patterns = [p.strip() for p in str(with_["path"]).splitlines() if p.strip()]
        files: list[tuple[Path, Path]] = []  # (source, root it is relative to)
        for pattern in patterns:
            if pattern.startswith("!"):
                raise WorkflowError("upload-artifact: exclusion patterns are not emulated")
            root = _search_root(workspace, pattern)
            for match in sorted(glob.glob(str(workspace / pattern), recursive=True)):
                path = Path(match)
                if path.is_dir():
                    files += [(p, root) for p in sorted(path.rglob("*")) if p.is_file()]
                elif path.is_file():
                    files.append((path, root))
        if not files:
            mode = with_.get("if-no-files-found", "warn")
            message = f"upload-artifact: no files found with the provided path: {', '.join(patterns)}"
            if mode == "error":
                raise ActionFailed(message)
            return message + (". No artifacts will be uploaded." if mode == "warn" else "")
        store = self.artifacts / name
        added = []
        for path, root in files:
            rel = path.relative_to(root)
            dest = store / rel
            if dest.exists() and dest.read_bytes() != path.read_bytes():
                raise ActionFailed(f"upload-artifact: {name}/{rel} was uploaded before with other content")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            added.append(str(rel))
        return f"uploaded {len(added)} file(s) to artifact {name!r}: {', '.join(added)}"

    def _download(self, with_: dict, workspace: Path) -> str:
        known = {"name", "path"}
        if set(with_) - known:
            raise WorkflowError(f"download-artifact: {sorted(set(with_) - known)} not emulated")
        dest = workspace / with_.get("path", ".")
        names = [with_["name"]] if with_.get("name") else sorted(p.name for p in self.artifacts.iterdir())
        copied = []
        for name in names:
            store = self.artifacts / name
            if not store.is_dir():
                raise ActionFailed(f"download-artifact: unable to find an artifact with the name: {name}")
            into = dest if with_.get("name") else dest / name  # v3: all artifacts go into <path>/<name>/
            for path in sorted(p for p in store.rglob("*") if p.is_file()):
                target = into / path.relative_to(store)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                copied.append(str(target.relative_to(workspace)))
        return f"downloaded {len(copied)} file(s): {', '.join(copied)}"


class ActionFailed(Exception):
    pass


def _condition(text: Any, contexts: dict) -> Any:
    """An if: condition, written bare or inside ${{ }}."""
    if isinstance(text, bool):
        return text
    text = str(text).strip()
    whole = EXPRESSION.fullmatch(text)
    return evaluate(whole.group(1) if whole else text, contexts)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _search_root(workspace: Path, pattern: str) -> Path:
    """upload-artifact v3: files are stored relative to the path before the
    first wildcard (for a plain file, its directory)."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return workspace.joinpath(*parts[:i])
    plain = workspace / pattern
    return plain if plain.is_dir() else plain.parent


def parse_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT / $GITHUB_ENV: ``key=value`` lines and ``key<<DELIM`` blocks."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        m = re.match(r"^([^=<]+)<<(.+)$", line)
        if m:
            key, delim, body = m.group(1), m.group(2), []
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise WorkflowError(f"output {key}: no closing {delim!r}")
            i += 1
            values[key] = "\n".join(body)
            continue
        if "=" not in line:
            raise WorkflowError(f"malformed output line {line!r}: expected key=value")
        key, value = line.split("=", 1)
        values[key] = value
    return values


def secret_fragments(secret: str) -> list[str]:
    """What would give a secret away in a log: the value itself when it is
    one line, else each of its lines long enough to be specific to it (the
    body lines of an armored key, not its BEGIN/END markers).  A short value
    matches innocent text too ("pp" in "_tmppath"): give distinctive ones."""
    secret = secret.strip()
    if not secret:
        return []
    lines = [line.strip() for line in secret.splitlines()]
    if len(lines) == 1:
        return lines
    return [line for line in lines if len(line) >= 16 and not line.startswith("-----")]


def _bash(script: Path, cwd: Path, env: dict[str, str], limit: float) -> tuple[int, str]:
    """bash as Actions runs a run: step on Linux; the process group is killed at the time limit."""
    argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(1.0, limit))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return 124, out.decode(errors="replace") + "\n(the runner's timeout ran out)"
    return proc.returncode, out.decode(errors="replace")


# --- a Gitea server on a virtual clock ------------------------------------------

TICK_S = 15 * 60
"""poll-upstream.yml's cron, */15."""


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@dataclass
class GiteaRun:
    """One run of a workflow on the simulated server."""
    number: int
    workflow: str  # file name under .gitea/workflows
    event: str
    ref: str
    created: float
    driver: Driver
    state: dict[str, str] = field(default_factory=dict)
    """job id -> waiting, running, success, failure, skipped, cancelled"""
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def run(self) -> Run:
        return self.driver.run

    @property
    def done(self) -> bool:
        return all(v not in ("waiting", "running") for v in self.state.values())

    @property
    def conclusion(self) -> str:
        if not self.done:
            return "running"
        states = set(self.state.values())
        return "cancelled" if "cancelled" in states else "failure" if "failure" in states else "success"


@dataclass
class _Active:
    run: GiteaRun
    job_id: str
    runner: str
    steps: Any  # the generators of the job's matrix combinations, one after another
    until: float  # when the current step ends
    jobs: list[JobRun] = field(default_factory=list)
    current: Any = None


class Gitea:
    """A Gitea server and its runners on a virtual clock, for the workflows
    of one repository (the files of ``project``'s .gitea/workflows).

    What it models, by Gitea version (the brief's table: go-gitea/gitea
    pull requests):

    * a cron tick of each scheduled workflow every ``TICK_S``; before 1.26
      (#32751 removed it) the tick first cancels every unfinished job of the
      earlier *scheduled* runs of that workflow (``CancelPreviousJobs`` in
      ``startTasks``);
    * :meth:`push`: before 1.26, a push run cancels the unfinished jobs of
      earlier push runs of the same workflow on the same ref;
    * :meth:`dispatch` (the REST API of :mod:`fake_gitea`, from 1.24): a
      run that nothing cancels;
    * runners by label, each one job at a time (``runner.capacity: 1``);
      a waiting job goes to the first free runner that serves its label,
      oldest run first;
    * time: each step that runs takes ``durations(job_id, step)`` virtual
      seconds (default 60); a step ends, and only then runs for real, at
      its virtual end; a job cancelled before that never runs the step.
      Nothing sleeps.

    Each run executes through a :class:`Driver` (its artifacts, contexts,
    steps), so a run here behaves as one run of ``Driver.execute``.
    """

    def __init__(self, gitea_version: str, root: Path, *, runners: dict[str, int] | None = None,
                 secrets: dict[str, str] | None = None, checkout_overrides: dict[str, str] | None = None,
                 project: Path = PROJECT, durations=None, repository: str = "ci/mistralrs-rpm",
                 branch: str = "main", api_url: str = "http://127.0.0.1:0/api/v1"):
        import threading

        self.version = version(gitea_version)
        self.root = root
        self.project = project
        # by default one runner per label the workflows use (README, runners)
        default = {"mistralrs-poll": 1, "mistralrs-publish": 1, "cuda-13.0": 1,
                   # the gate runners, one per GPU generation config.toml names (gpu-sm<cap>)
                   **{f"gpu-sm{f['compute_cap']}": 1 for f in project_flavours(project)}}
        self.runners = {f"{label}-{i}": label for label, count in (runners or default).items()
                        for i in range(count)}
        self.busy: dict[str, _Active] = {}
        self.secrets = dict(secrets or {})
        self.overrides = dict(checkout_overrides or {})
        self.durations = durations or (lambda job_id, step: 60.0)
        self.repository, self.branch, self.api_url = repository, branch, api_url
        self.now = 0.0
        self.next_tick = TICK_S
        self.runs: list[GiteaRun] = []
        self.log: list[str] = []
        self._lock = threading.RLock()

    # -- what starts runs

    @property
    def cancels_earlier_runs(self) -> bool:
        return self.version < (1, 26)

    @property
    def has_dispatch_api(self) -> bool:
        return self.version >= (1, 24)

    def workflow_path(self, name: str) -> Path:
        return self.project / ".gitea" / "workflows" / name

    def _start(self, workflow: str, event: str, ref: str, inputs: dict[str, str] | None = None) -> GiteaRun:
        with self._lock:
            number = len(self.runs) + 1
            driver = Driver(self.workflow_path(workflow), self.root / f"run-{number:03d}", inputs=inputs,
                            secrets=self.secrets, checkout_overrides=self.overrides,
                            runner_labels=tuple(sorted(set(self.runners.values()))), project=self.project,
                            event=event, github={"api_url": self.api_url, "repository": self.repository,
                                                 "ref": f"refs/heads/{ref}", "ref_name": ref,
                                                 "run_id": str(number), "run_number": str(number)})
            jobs = driver.workflow.get("jobs") or {}
            driver._order(jobs)  # refuses what the driver does not do, before anything runs
            run = GiteaRun(number, workflow, event, ref, self.now, driver, {j: "waiting" for j in jobs})
            self.runs.append(run)
            self.log.append(f"{self._clock()} run {number} {workflow} ({event})")
            return run

    def _cancel(self, runs: list[GiteaRun], why: str) -> None:
        for run in runs:
            for job_id, state in run.state.items():
                if state == "waiting":
                    run.state[job_id] = "cancelled"
                    run.results[job_id] = {"result": "cancelled", "outputs": {}}
                    run.run.jobs[job_id] = [JobRun(job_id, job_id, {}, self.root, "cancelled")]
                elif state == "running":
                    active = next(a for a in self.busy.values() if a.run is run and a.job_id == job_id)
                    self._stop(active, "cancelled")
                else:
                    continue
                self.log.append(f"{self._clock()} cancelled run {run.number} {run.workflow} job {job_id} ({why})")

    def tick(self) -> None:
        """A cron tick: each workflow with a schedule gets a new run."""
        for path in sorted((self.project / ".gitea" / "workflows").glob("*.yml")):
            if "schedule" not in (load_workflow(path).get("on") or {}):
                continue
            with self._lock:
                if self.cancels_earlier_runs:
                    self._cancel([r for r in self.runs if r.workflow == path.name and r.event == "schedule"
                                  and not r.done], "a newer scheduled run, Gitea < 1.26")
                self._start(path.name, "schedule", self.branch)

    def push(self, workflow: str, ref: str) -> GiteaRun:
        with self._lock:
            if self.cancels_earlier_runs:
                self._cancel([r for r in self.runs if r.workflow == workflow and r.event == "push" and r.ref == ref
                              and not r.done], "a newer push run on the same ref, Gitea < 1.26")
            return self._start(workflow, "push", ref)

    def dispatch(self, workflow: str, ref: str, inputs: dict[str, str]) -> GiteaRun:
        """workflow_dispatch: never cancelled by later runs."""
        return self._start(workflow, "workflow_dispatch", ref, inputs)

    # -- the runners

    def _clock(self) -> str:
        return f"[{int(self.now) // 3600:02d}:{int(self.now) % 3600 // 60:02d}]"

    def _assign(self) -> None:
        with self._lock:
            for runner, label in self.runners.items():
                if runner in self.busy:
                    continue
                for run in self.runs:
                    job_id = next((j for j in self._ready(run) if run.driver.workflow["jobs"][j].get("runs-on") == label),
                                  None)
                    if job_id is not None:
                        self._begin(run, job_id, runner)
                        break

    def _ready(self, run: GiteaRun) -> list[str]:
        """The waiting jobs of run whose needs are done; those that will not run are settled here."""
        jobs = run.driver.workflow["jobs"]
        ready = []
        for job_id, state in run.state.items():
            if state != "waiting":
                continue
            needs = _as_list(jobs[job_id].get("needs"))
            if any(run.state[n] in ("waiting", "running") for n in needs):
                continue
            contexts = run.driver._contexts(needs_ctx={n: run.results[n] for n in needs})
            if not job_runs(jobs[job_id], {n: run.results[n] for n in needs}, contexts):
                run.state[job_id] = "skipped"
                run.results[job_id] = {"result": "skipped", "outputs": {}}
                run.run.jobs[job_id] = [JobRun(job_id, jobs[job_id].get("name", job_id), {}, self.root, "skipped")]
                continue
            ready.append(job_id)
        return ready

    def _begin(self, run: GiteaRun, job_id: str, runner: str) -> None:
        job = run.driver.workflow["jobs"][job_id]
        needs = _as_list(job.get("needs"))
        contexts = run.driver._contexts(needs_ctx={n: run.results[n] for n in needs})
        combos = run.driver._matrix(job, contexts)
        steps = (run.driver._job_steps(job_id, job, combo, contexts) for combo in combos)
        run.state[job_id] = "running"
        active = _Active(run, job_id, runner, steps, self.now)
        self.busy[runner] = active
        self.log.append(f"{self._clock()} run {run.number} job {job_id} starts on {runner}")
        self._advance(active)

    def _advance(self, active: _Active) -> None:
        """Run the step that just ended (if any) and schedule the next."""
        while True:
            if active.current is None:
                active.current = next(active.steps, None)
                if active.current is None:
                    return self._finish(active)
            try:
                jr, step = next(active.current)
            except StopIteration as done:
                active.jobs.append(done.value)
                active.current = None
                continue
            active.until = self.now + float(self.durations(active.job_id, step))
            return

    def _finish(self, active: _Active) -> None:
        run = active.run
        result = "success" if all(j.conclusion == "success" for j in active.jobs) else "failure"
        outputs: dict[str, str] = {}
        for j in active.jobs:
            outputs.update({k: v for k, v in j.outputs.items() if v != ""})
        run.state[active.job_id] = result
        run.results[active.job_id] = {"result": result, "outputs": outputs}
        run.run.jobs[active.job_id] = active.jobs
        del self.busy[active.runner]
        self.log.append(f"{self._clock()} run {run.number} job {active.job_id}: {result}")

    def _stop(self, active: _Active, conclusion: str) -> None:
        if active.current is not None:
            active.current.close()  # the step in progress never ends; the workspace goes
        name = active.run.driver.workflow["jobs"][active.job_id].get("name", active.job_id)
        active.jobs.append(JobRun(active.job_id, name, {}, self.root, conclusion))
        active.run.state[active.job_id] = conclusion
        active.run.results[active.job_id] = {"result": conclusion, "outputs": {}}
        active.run.run.jobs[active.job_id] = active.jobs
        del self.busy[active.runner]

    # -- time

    def run_until(self, end: float) -> None:
        """Let virtual time pass up to end: cron ticks, steps ending, jobs
        starting.  A step that ends at a tick ends first."""
        while True:
            self._assign()
            step_end = min((a.until for a in self.busy.values()), default=float("inf"))
            upcoming = min(step_end, self.next_tick)
            if upcoming > end:
                self.now = end
                return
            self.now = upcoming
            if step_end <= self.next_tick:
                active = min(self.busy.values(), key=lambda a: a.until)
                self._advance(active)
            else:
                self.next_tick += TICK_S
                self.tick()

    def runs_of(self, workflow: str) -> list[GiteaRun]:
        return [r for r in self.runs if r.workflow == workflow]
