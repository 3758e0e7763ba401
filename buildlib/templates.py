"""The one way to render a template file under rpm/: jinja2 with
StrictUndefined (a missing value is an error, never an empty string) and the
file's trailing newline kept.  jinja2 is imported on first use, so that
`doit` itself starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .run import UserError


def render(template: Path, *, html: bool = False, trim: bool = False, **values: Any) -> str:
    """template rendered with values; html escapes them, trim drops the
    newline after a block tag and the indentation before it."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=html,
                             trim_blocks=trim, lstrip_blocks=trim)
    try:
        return env.from_string(template.read_text()).render(**values)
    except jinja2.TemplateError as e:
        line = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise UserError(f"{template}{line}: {e.message or e}") from None
