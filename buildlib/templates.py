"""The one way to render a template file under rpm/: jinja2 with
StrictUndefined (a missing value is an error, never an empty string) and the
file's trailing newline kept.  jinja2 is imported on first use, so that
`doit` itself starts fast.

Specs (spec=True) are where a value could turn into code: rpm expands
``%(...)``, ``%{lua:...}`` and every other macro while it parses a spec, and a
line break in a value could add a tag, a section or a scriptlet.  So every
``{{ value }}`` in a spec template passes :func:`spec_value`: one line of
printable text with ``%`` written ``%%``; several lines (a %description)
only as :class:`SpecLines`, none of which may start a section.  The
configuration's own checks (buildlib/config.py) come first; this is the
second, independent layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .run import UserError


class SpecLines(tuple):
    """Lines of text for a spec section such as %description."""


def spec_value(value: Any) -> str:
    """A value as it may appear in a spec: see the module's docstring."""
    if isinstance(value, SpecLines):
        lines = [spec_value(line) for line in value]
        for line in lines:
            if line.lstrip().startswith("%"):
                # rpm expands %% to % before it looks for a section name
                raise UserError(f"refusing the line {line!r} for a spec: a line there must not start with '%'")
        return "\n".join(lines)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"refusing {value!r} for a spec: expected text or a number")
    text = str(value)
    if not text.isprintable():
        raise UserError(f"refusing {text!r} for a spec: a line break or control character could add a tag or a scriptlet")
    return text.replace("%", "%%")


def render(template: Path, *, html: bool = False, trim: bool = False, spec: bool = False, **values: Any) -> str:
    """template rendered with values; html escapes them, spec makes them safe
    for a spec (spec_value), trim drops the newline after a block tag and the
    indentation before it."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=html,
                             trim_blocks=trim, lstrip_blocks=trim, finalize=spec_value if spec else None)
    try:
        return env.from_string(template.read_text()).render(**values)
    except jinja2.TemplateError as e:
        line = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise UserError(f"{template}{line}: {e.message or e}") from None
