"""README.md and docs/ stay true to the code: the Tasks table names every
task that `doit list --all` shows, the Configuration table every key that
config.py reads (and config.toml writes out or comments each of them), the
Layout every module of buildlib/; every page is reachable from the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest

from buildlib import config as configmod
from buildlib.config import readme as readme_table
from pipeline import CONFIG, PROJECT

README = PROJECT / "README.md"
DOCS = sorted((PROJECT / "docs").glob("*.md"))


def section(title: str) -> str:
    """The text from the heading `title` (in the README or a page of docs/)
    to the next heading of the same or a higher level."""
    for page in [README, *DOCS]:
        text = page.read_text()
        m = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
        if m:
            break
    assert m, f"neither README nor docs/ has a heading {title!r}"
    end = re.compile(rf"^#{{1,{len(m.group(1))}}} ", re.M).search(text, m.end())
    return text[m.end(): end.start() if end else len(text)]


def table_rows(text: str) -> dict[str, str]:
    """First cell -> second cell of a markdown table's body rows."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) >= 2 and not set(cells[0]) <= {"-", " "}:
            rows[cells[0]] = cells[1]
    return rows


def doit_tasks() -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MRPM_CONFIG", "MRPM_REF", "MRPM_CACHE")}
    proc = subprocess.run([sys.executable, "-m", "doit", "list", "--all", "-f", str(PROJECT / "dodo.py")],
                          cwd=PROJECT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def test_tasks_table_names_every_task():
    named = {name for cell in table_rows(section("Tasks")) for name in re.findall(r"`([^`]+)`", cell)}
    flavours = {f.name for f in configmod.load(CONFIG).flavours}
    tasks = doit_tasks()
    assert "setup:firewall" in tasks and "build:ampere" in tasks
    missing = []
    for task in tasks:
        base, _, sub = task.partition(":")
        expected = {f"{base}:<flavour>"} if sub in flavours else {task} if sub else {task, f"{task}:<flavour>"}
        if not expected & named:
            missing.append(task)
    assert missing == [], f"README's Tasks table lacks {missing}"


def keys_read(monkeypatch=None) -> dict[str, set[str]]:
    """README's table label -> the keys declared there ("" -> the top-level
    tables): config.py reads exactly what it declares."""
    return readme_table.keys_by_table()


DOIT_COMMANDS = {"list", "info", "help", "clean", "forget", "ignore", "strace", "dumpdb", "run", "auto",
                 "tabcompletion", "reset-dep"}


def test_every_doit_command_the_readme_names_exists():
    """Each `doit <task>` the README (or a message of the code) tells someone
    to run names a task of `doit list --all` (`doit package` did not)."""
    tasks = set(doit_tasks())
    flavours = {f.name for f in configmod.load(CONFIG).flavours}
    texts = {str(p.relative_to(PROJECT)): p.read_text() for p in [README, *DOCS]}
    texts.update({str(p.relative_to(PROJECT)): p.read_text() for p in (PROJECT / "buildlib").rglob("*.py")})
    wrong = []
    for where, text in texts.items():
        # as a command: in backticks or at the start of a line (code blocks), maybe after VAR=value
        for m in re.finditer(r"(?:`|^[ \t]*(?:\$ )?)(?:[A-Z_]+=\S+ )*(?:\.venv/bin/)?doit((?: -[-a-z]+(?:[ =][0-9]+)?)*)"
                             r" ([a-z][a-z0-9_-]*(?::[a-z<>][a-z0-9<>_-]*)?)", text, re.M):
            name = m.group(2)
            base, _, sub = name.partition(":")
            if base in DOIT_COMMANDS or base in {"and", "or", "the", "is", "as", "run", "runs", "itself", "then",
                                                  "from", "with", "task", "tasks", "on", "in", "a", "to"}:
                continue
            known = name in tasks or (sub in ("<flavour>", *flavours) and any(t.startswith(base + ":") for t in tasks))
            if not known:
                wrong.append(f"{where}: doit {name}")
    assert wrong == [], wrong


def test_configuration_table_covers_every_key(monkeypatch):
    seen = keys_read(monkeypatch)
    assert "key_fingerprint" in seen["[publish]"] and "release_package_version" in seen["[host]"]
    rows = {re.sub(r"`", "", label): keys for label, keys in table_rows(section("Configuration")).items()}
    missing = []
    for table in sorted(seen[""]):
        if not {f"[{table}]", f"[[{table}]]", f"[{table}.<name>]"} & rows.keys():
            missing.append(f"[{table}]")
    for label, keys in seen.items():
        if not label:
            continue
        cell = rows.get(label, "")
        missing += [f"{label} {key}" for key in sorted(keys)
                    if not re.search(rf"`(\[[a-z_]+\.)?{re.escape(key)}\]?`", cell)]
    assert missing == [], f"README's Configuration table lacks {missing}"


def test_configuration_table_is_rendered_from_the_declarations():
    """The README's rows are what `python -m buildlib.config.readme` prints:
    a setting added, renamed or given another default changes both."""
    body = [line for line in section("Configuration").splitlines() if line.startswith("| `[")]
    assert body == readme_table.rows()


def test_every_declared_key_is_read(monkeypatch):
    """The declarations are what config.py reads: a key the README names is
    one parse accepts (config.toml with every table present loads)."""
    for name in ("MRPM_REF", "MRPM_CACHE", "MRPM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    data = tomllib.loads(CONFIG.read_text())
    data.setdefault("crate_license", [{"name": "some-crate", "version": "1.2.3", "license": "MIT"}])
    configmod.parse(data, CONFIG)
    assert {"upstream", "host", "paths", "crate_license"} <= keys_read()[""]


def test_config_toml_shows_every_key(monkeypatch):
    """config.toml documents the format: each key config.py reads is set
    there, or shown in a comment."""
    text = CONFIG.read_text()
    missing = []
    for label, keys in keys_read(monkeypatch).items():
        for key in sorted(keys if label else ()):
            # a key line (perhaps commented), a key of an inline table, or a table header
            if not re.search(rf"(^(# ?)?|[{{,] *){re.escape(key)} *=|^\[[a-z_.]*\b{re.escape(key)}\]$", text, re.M):
                missing.append(f"{label} {key}")
    assert missing == [], f"config.toml neither sets nor comments {missing}"


@pytest.mark.parametrize("stale", ["upstream.package", "binary_names", "package.license"])
def test_no_stale_keys(stale):
    """Keys config.py refuses (it names their replacement) are not taught."""
    assert stale not in CONFIG.read_text()
    assert f"`{stale}`" not in README.read_text()


def layout_groups() -> dict[str, str]:
    """The Layout block: entry (``buildlib/``, ``pipeline/``, ...) -> its description."""
    block = re.search(r"```\n(.*?)```", section("Layout"), re.S).group(1)
    groups: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        head, text = line[:21].strip(), line[21:]
        if head:
            name = head
        groups[name] = groups.get(name, "") + " " + text
    return groups


def test_layout_names_every_module():
    groups = layout_groups()
    buildlib = PROJECT / "buildlib"
    missing = []
    for path in sorted(buildlib.rglob("*.py")):
        if path.stem.startswith("__"):
            continue
        entry = "buildlib/" if path.parent == buildlib else f"{path.parent.name}/"
        if not re.search(rf"(?<![\w/.]){re.escape(path.stem)}\b", groups.get(entry, "")):
            missing.append(str(path.relative_to(PROJECT)))
    assert "pipeline/" in groups and "tasks/" in groups
    assert missing == [], f"README's Layout lacks {missing}"


def test_every_page_of_docs_is_linked_from_the_readme_and_links_resolve():
    readme = README.read_text()
    assert DOCS, "docs/ holds the guides by reader"
    for page in DOCS:
        assert f"](docs/{page.name})" in readme, page.name
    for page in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to {target}"
