"""The flavour lists in the CI workflows, written from config.toml.

The workflows in ``.gitea/workflows/`` are plain YAML that people read and
edit; only the parts that list flavours are generated, between marker
comments, so that they cannot drift from ``[flavours.*]``:

* ``# >>> doit workflows: flavours`` -- a build job's static matrix,
  ``flavour: ["ampere", ...]`` in config order.  Static on purpose: Gitea up
  to at least 1.26 expands a matrix built with ``fromJSON(needs...)`` into a
  single job (go-gitea/gitea#25179); a written list works on every version.
* ``# >>> doit workflows: downloads CHANNEL EXPRESSION`` -- in a publish job,
  one ``actions/download-artifact@v3`` step per flavour for the artifact
  ``rpm-CHANNEL-FLAVOUR``, each run only when the flavour is in the JSON list
  EXPRESSION (a context path such as ``needs.poll.outputs.release_flavours``),
  with ``continue-on-error``: a flavour whose build failed uploaded nothing,
  and the publish job publishes the flavours that built (a step cannot ask
  how one job of a matrix ended).  One artifact name per build job: Gitea
  has discarded a second upload under a name already used in the run
  (go-gitea/gitea#28549).

* ``# >>> doit workflows: gates CHANNEL EXPRESSION`` -- after the publish
  job, one gate job per flavour with ``gate = "required"`` on a runner
  labelled ``gpu-sm<compute_cap>`` (``doit gate:<flavour>``), and the
  promote job after them (``doit promote``); see :func:`_gates`.

Each block ends at ``# <<< doit workflows``.  ``doit workflows`` rewrites the
blocks; :func:`drifted` says which files differ from what config gives (the
tests fail on any).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..config import Config
from ..layout import WORKFLOW_DIR
from ..run import UserError, atomic_write, log

BEGIN = re.compile(r"^(?P<indent> *)# >>> doit workflows: (?P<args>.*?)\s*\Z")
END = re.compile(r"^ *# <<< doit workflows\s*\Z")
TARGET_CHANNEL_ENV = "MRPM_TARGET_CHANNEL"
"""The channel a release workflow's jobs publish, gate and promote into (the matrix job's output)."""
CONTEXT_PATH = re.compile(r"^[a-z]+(\.[A-Za-z_][A-Za-z0-9_-]*)+\Z")


def artifact_name(channel: str, flavour: str) -> str:
    """The artifact a build job uploads its RPM under (one per job and run)."""
    return f"rpm-{channel}-{flavour}"


def wanted(expression: str, flavour: str) -> str:
    """The `if:` that runs a step only for a flavour in the JSON list expression."""
    return f"contains(fromJSON({expression}), '{flavour}')"


def _block(cfg: Config, args: list[str], indent: str, where: str) -> list[str]:
    flavours = [f.name for f in cfg.flavours]
    if args == ["flavours"]:
        return [f"{indent}flavour: {json.dumps(flavours)}"]
    if len(args) == 3 and args[0] == "downloads":
        channel, expression = args[1], args[2]
        try:
            cfg.channel(channel)
        except UserError as e:  # an unknown channel
            raise UserError(f"{where}: {e}") from None
        if not CONTEXT_PATH.match(expression):
            raise UserError(f"{where}: {expression!r} is not a context path such as needs.poll.outputs.release_flavours")
        lines = []
        for f in flavours:
            name = artifact_name(channel, f)
            lines += [f"{indent}- name: collect {name}",
                      f"{indent}  if: {wanted(expression, f)}",
                      f"{indent}  continue-on-error: true",
                      f"{indent}  uses: actions/download-artifact@v3",
                      f"{indent}  with:",
                      f"{indent}    name: {name}",
                      f"{indent}    path: dist"]
        return lines
    if len(args) == 3 and args[0] == "gates":
        return _gates(cfg, args[1], args[2], indent, where)
    raise UserError(f"{where}: unknown block {' '.join(args)!r}; expected 'flavours', 'downloads CHANNEL EXPRESSION'"
                    " or 'gates CHANNEL EXPRESSION'")


def _gates(cfg: Config, channel: str, expression: str, indent: str, where: str) -> list[str]:
    """One gate job per flavour with gate = "required", on a runner labelled
    for its GPU generation (gpu-sm<cap>), after the publish job; then the
    promote job after them all.  Each gate job's own `if` (not its needs'
    result) decides it runs, and promote runs unless the run was cancelled:
    a failed gate holds back only its own flavour, which promote refuses."""
    from ..config import Gate
    from ..gate.gpu import runner_label

    channel_env: list[str] = []
    if CONTEXT_PATH.match(channel):
        # the channel the matrix job chose (a release tag's: stable, or for an rc unstable); data reaches
        # the command through the environment, never inside the script
        channel_env = [f"{indent}        {TARGET_CHANNEL_ENV}: ${{{{ {channel} }}}}"]
        channel, shown_channel = f'"${TARGET_CHANNEL_ENV}"', "its channel"
    else:
        try:
            cfg.channel(channel)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        shown_channel = channel
    if not CONTEXT_PATH.match(expression):
        raise UserError(f"{where}: {expression!r} is not a context path such as needs.matrix.outputs.flavours")
    lines, gates = [], []
    for f in cfg.flavours:
        if f.gate == Gate.OFF:
            continue
        job = f"gate-{f.name}"
        gates.append(job)
        lines += [f"{indent}{job}:",
                  f"{indent}  name: gate {f.name} on a {runner_label(f.compute_cap)} runner",
                  f"{indent}  needs: [matrix, publish]",
                  f"{indent}  if: ${{{{ !cancelled() && {wanted(expression, f.name)} }}}}",
                  f"{indent}  runs-on: {runner_label(f.compute_cap)}",
                  f"{indent}  steps:",
                  f"{indent}    - uses: actions/checkout@v4",
                  f"{indent}    - name: bootstrap",
                  f"{indent}      run: scripts/bootstrap --role publish",
                  f"{indent}    - name: install from staging with dnf and smoke on the GPU",
                  f"{indent}      run: .venv/bin/doit gate:{f.name} --channel {channel}",
                  f"{indent}      env:",
                  f"{indent}        MRPM_SSH_KEY: ${{{{ secrets.MRPM_SSH_KEY }}}}",
                  *channel_env,
                  ""]
    lines += [f"{indent}promote:",
              f"{indent}  name: promote to {shown_channel}",
              f"{indent}  needs: [{', '.join(['matrix', 'publish', *gates])}]",
              f"{indent}  if: ${{{{ !cancelled() && {expression} != '' }}}}",
              f"{indent}  runs-on: mistralrs-publish",
              f"{indent}  steps:",
              f"{indent}    - uses: actions/checkout@v4",
              f"{indent}    - name: bootstrap",
              f"{indent}      run: scripts/bootstrap --role publish",
              f"{indent}    - name: promote what passed its gate (and gate = \"off\" flavours, untested)",
              f"{indent}      run: .venv/bin/doit promote --channel {channel}",
              f"{indent}      env:",
              f"{indent}        MRPM_SIGNING_KEY: ${{{{ secrets.MRPM_SIGNING_KEY }}}}",
              f"{indent}        MRPM_SIGNING_PASSPHRASE: ${{{{ secrets.MRPM_SIGNING_PASSPHRASE }}}}",
              f"{indent}        MRPM_SSH_KEY: ${{{{ secrets.MRPM_SSH_KEY }}}}",
              *channel_env]
    return lines


def render(cfg: Config, text: str, name: str = "workflow") -> str:
    """text with every marked block rewritten from cfg."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        m = BEGIN.match(line)
        if not m:
            continue
        where = f"{name} line {i}"
        end = next((j for j in range(i, len(lines)) if END.match(lines[j]) or BEGIN.match(lines[j])), None)
        if end is None or not END.match(lines[end]):
            raise UserError(f"{where}: no '# <<< doit workflows' closing the block")
        out += _block(cfg, m.group("args").split(), m.group("indent"), where)
        i = end
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def workflow_files(directory: Path = WORKFLOW_DIR) -> list[Path]:
    return sorted(directory.glob("*.yml"))


def drifted(cfg: Config, directory: Path = WORKFLOW_DIR) -> list[Path]:
    """The workflow files whose flavour blocks differ from cfg's flavours."""
    return [p for p in workflow_files(directory) if render(cfg, p.read_text(), p.name) != p.read_text()]


def write_workflows(cfg: Config, directory: Path = WORKFLOW_DIR) -> list[Path]:
    """Rewrite the blocks of every workflow in directory; the files changed."""
    changed = []
    for path in workflow_files(directory):
        text = path.read_text()
        new = render(cfg, text, path.name)
        if new != text:
            atomic_write(path, new)
            changed.append(path)
    names = ", ".join(p.name for p in changed) or "nothing changed"
    log(f"==> workflows: flavours {', '.join(f.name for f in cfg.flavours)}: {names}")
    return changed
