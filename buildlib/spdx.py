"""SPDX license expressions: checked, normalized and combined with the
license-expression library, against the SPDX license list it ships.

config.py checks the licenses declared in config.toml with it, the bundle
stage every crate's license, the spec renderer the License tag."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from importlib.util import find_spec
from pathlib import Path

from .run import UserError


@functools.cache
def _licensing():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


# A list of license ids joined by AND/OR: config.toml's usual form.
_SIMPLE = re.compile(r"[A-Za-z0-9.+-]+(?: (?:AND|OR) [A-Za-z0-9.+-]+)*")


@functools.cache
def _plain_ids() -> frozenset[str]:
    """The license list's ids (not exceptions, not deprecated) as the library
    ships them, read without building its parser: config.toml is checked on
    every `doit` run, and importing license_expression and building its
    licensing costs more than the rest of the config load together.  Empty
    when the list is not where expected (every check then takes the library)."""
    try:
        spec = find_spec("license_expression")
        base = Path(next(iter(spec.submodule_search_locations)))  # type: ignore[union-attr]
        index = json.loads((base / "data" / "scancode-licensedb-index.json").read_text())
        return frozenset(entry["spdx_license_key"] for entry in index
                         if entry.get("spdx_license_key") and not entry.get("is_exception")
                         and not entry.get("is_deprecated"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, StopIteration):
        return frozenset()


@functools.lru_cache(maxsize=4096)  # most crates share a handful of expressions
def spdx_problem(text: str) -> str:
    """Why text is not a valid SPDX expression of known licenses, or ''."""
    if not text.strip():
        return "empty; expected an SPDX expression"
    if _SIMPLE.fullmatch(text) and all(part in _plain_ids() for part in text.split(" ")[::2]):
        return ""  # what the library would say, without loading it
    try:
        info = _licensing().validate(text, strict=True)
    except Exception:  # license-expression fails inside validate on some syntax errors (its own bug)
        return f"not an SPDX expression: {syntax_problem(text) or 'the license-expression library cannot parse it'}"
    if info.invalid_symbols and any(e.startswith("Unknown license key") for e in info.errors):
        return f"unknown license {', '.join(map(str, info.invalid_symbols))} (not on the SPDX license list)"
    if info.errors:
        return f"not an SPDX expression: {syntax_problem(text) or info.errors[0]}"
    return ""


_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9.+:-]")
_OPERATORS = ("AND", "OR", "WITH")


def syntax_problem(text: str) -> str:
    """What is wrong with text's form, in words ('' where the form is fine
    and only the library can tell, e.g. an unknown id or a license after
    WITH): a stray character, an unbalanced parenthesis, an operator with
    nothing on one side, two licenses with no operator between them.  The
    library's own messages for these are its internals (an AttributeError
    from inside the parser, for one)."""
    for i, char in enumerate(text):
        if not (_ID_CHARACTERS.match(char) or char in "() "):
            return f"stray character {char!r} at position {i + 1}"
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return f"unbalanced parenthesis: ')' at position {i + 1} closes nothing"
    if depth:
        return f"unbalanced parenthesis: {depth} '(' never closed"
    want_operand = True  # at the start, after an operator and after "("
    previous = ""
    for m in _TOKEN.finditer(text):
        token, where = m.group(), m.start() + 1
        operator = token.upper() in _OPERATORS
        if want_operand:
            if operator:
                return (f"{token!r} at position {where} has no license before it" if previous in ("", "(")
                        else f"{token!r} at position {where} follows {previous!r} without a license between them")
            if token == ")":
                return (f"empty parentheses before position {where}" if previous == "("
                        else f"{previous!r} has no license after it (')' at position {where})")
            want_operand = token == "("
        else:
            if not operator and token != ")":
                return f"{token!r} at position {where} follows {previous!r} without AND, OR or WITH between them"
            want_operand = operator
        previous = token
    if want_operand:
        return f"{previous!r} at the end has no license after it" if previous else "empty expression"
    return ""


@functools.lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """A valid SPDX expression, rendered with the license list's spelling."""
    return str(_licensing().validate(text, strict=True).normalized_expression)


def cargo_legacy(text: str) -> str:
    """Cargo once allowed "MIT/Apache-2.0"; cargo2rpm reads "/" as OR."""
    return text.replace(" / ", "/").replace("/", " OR ")


def _canonical(expr) -> str:
    """A rendering that ignores operand order, for telling equal terms apart."""
    operator = _operator(expr)
    if not operator:
        return expr.render()
    parts = sorted(_canonical(a) for a in expr.args)
    return "(" + f" {operator} ".join(parts) + ")"


def combine(expressions: Iterable[str]) -> str:
    """One SPDX expression that is the AND of all given ones.

    Terms are split at top-level AND, deduplicated regardless of operand order
    ("MIT OR Apache-2.0" equals "Apache-2.0 OR MIT"; the first seen in sorted
    order is kept as written) and sorted.  OR choices are kept: no term is
    dropped because another implies it.
    """
    licensing = _licensing()
    terms: dict[str, str] = {}
    for text in sorted(set(expressions)):
        parsed = licensing.parse(text, strict=True)
        parts = parsed.args if _operator(parsed) == "AND" else (parsed,)
        for part in parts:
            rendered = part.render()
            if _operator(part) == "OR":
                rendered = f"({rendered})"
            terms.setdefault(_canonical(part), rendered)
    if not terms:
        raise UserError("no licenses to combine: the dependency graph is empty")
    order = sorted(terms, key=lambda k: (k.replace("(", "").replace(")", "").casefold(), k))
    combined = " AND ".join(terms[key] for key in order)
    problem = spdx_problem(combined)
    if problem:  # cannot happen for valid parts; a guard against a library change
        raise UserError(f"combined license {combined!r}: {problem}")
    return combined


def _operator(expr) -> str:
    """"AND" or "OR" for a compound expression, "" for a license (with or
    without an exception)."""
    from license_expression import LicenseWithExceptionSymbol

    if isinstance(expr, LicenseWithExceptionSymbol) or not getattr(expr, "args", None):
        return ""
    return expr.operator.strip()
