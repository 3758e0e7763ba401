"""One declaration per value: the schema that config.toml's settings and the
pipeline's JSON records share.

A value is a dataclass field whose metadata holds a :class:`Spec` (made with
:func:`setting`): its key, its default, the form it must have (a pattern, a
check, a conversion) and its help text.  :func:`read` builds a dataclass from
a table with every check in one place, :func:`dump` writes one back, and the
README's configuration table is rendered from the same declarations
(:mod:`.readme`).  Errors name the key, the value found and the form
expected; only their wording differs between a configuration file
(:class:`Table`) and a record (:class:`RecordTable`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import re
import types
import typing
from dataclasses import MISSING, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..run import Exit, UserError


class ConfigError(UserError):
    exit_code = Exit.CONFIG


@dataclass(frozen=True)
class Spec:
    """How one field is read, checked, written and documented."""

    form: str = ""
    """What is expected, as error messages say it ("a cargo feature name")."""
    pattern: re.Pattern | None = None
    """For a string, or each string of a list."""
    check: Callable[[Any], str] | None = None
    """value -> "" if fine, else the problem ("expected 1 or more")."""
    convert: Callable[[Any, str], Any] | None = None
    """(value read, key) -> the field's value; raises the table's error itself."""
    dump: Callable[[Any], Any] | None = None
    """The field's value -> its JSON (records)."""
    read: Callable[["Table", dataclasses.Field], Any] | None = None
    """(table, field) -> the field's value, for a value of a shape of its own."""
    raw_type: Any = None
    """The type the file holds, where convert makes another of it."""
    env: str = ""
    """An environment variable that, when set and not empty, replaces the key."""
    help: str = ""
    """The README's words for the key; "" leaves the key out of the README."""
    shown_default: str | None = None
    """The default as the README shows it, where not the field's own."""


def setting(default: Any = MISSING, *, compare: bool = True, **spec: Any) -> Any:
    """A dataclass field declared with its :class:`Spec`."""
    kwargs: dict[str, Any] = {"metadata": {"spec": Spec(**spec)}, "compare": compare}
    if isinstance(default, (list, dict)):
        raise TypeError("a mutable default: give a tuple")
    if default is not MISSING:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def spec_of(f: dataclasses.Field) -> Spec | None:
    return f.metadata.get("spec")


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def show(value: Any) -> str:
    """A value as TOML would write it, on one line whatever it holds."""
    if isinstance(value, str):
        shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value[:200])
        return '"' + shown.replace('"', '\\"') + '"' + ("..." if len(value) > 200 else "")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value).replace("True", "true").replace("False", "false")


def optional(pattern: re.Pattern) -> re.Pattern:
    """pattern, or the empty string."""
    return re.compile(rf"^\Z|{pattern.pattern}")


class Table:
    """One table of config.toml being read; remembers which keys were read
    so that an unknown key is named (with the nearest known one)."""

    error: type[UserError] = ConfigError

    def __init__(self, data: Any, where: str, base: Path | None = None):
        if not isinstance(data, dict):
            raise self.error(f"{where}: expected a table, found {show(data)}")
        self.data, self.where, self.base = data, where, base
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    # --- the wording of errors
    def missing(self, name: str, form: str) -> UserError:
        return self.error(f"{self.key(name)} is missing; expected {form}")

    def wrong(self, key: str, value: Any, form: str) -> UserError:
        return self.error(f"{key} = {self.shown(value)}: expected {form}")

    def problem(self, key: str, value: Any, problem: str) -> UserError:
        return self.error(f"{key} = {self.shown(value)}: {problem}")

    def bad_item(self, key: str, value: Any, item: Any, form: str) -> UserError:
        return self.error(f"{key} = {self.shown(value)}: item {self.shown(item)} is not {form}")

    def shown(self, value: Any) -> str:
        return show(value)

    def one_line(self, value: str, key: str) -> None:
        """Every string of the configuration is one line of printable
        characters: a line break could add a line to a spec, a known_hosts
        file or a .repo file, or end a command's argument."""
        if not value.isprintable():
            raise self.error(f"{key} = {show(value)}: contains a line break or control character;"
                             " expected one line of text")

    # --- reading
    def raw(self, name: str, default: Any = MISSING, form: str = "a value", env: str = "") -> tuple[Any, str]:
        """(value, the key it came from): env when set, else the table's key."""
        self.known.append(name)
        if env and os.environ.get(env):
            return os.environ[env], env
        if name not in self.data:
            if default is MISSING:
                raise self.missing(name, form)
            return default, ""
        return self.data[name], self.key(name)

    def get(self, name: str, kind: Any, default: Any = MISSING, spec: Spec = Spec()) -> Any:
        """The value of ``name``, of type ``kind``, checked against spec."""
        kind = spec.raw_type or kind
        value, key = self.raw(name, default, _missing_form(kind, spec.form), spec.env)
        if not key:  # the default
            return value
        value = self.typed(key, value, kind, spec)
        if value is None:  # a null where the type allows it
            return None
        if spec.check and (problem := spec.check(value)):
            raise self.problem(key, value, problem)
        return spec.convert(value, key) if spec.convert else value

    def typed(self, key: str, value: Any, kind: Any, spec: Spec) -> Any:
        form = spec.form or _type_form(kind)
        args = typing.get_args(kind)
        if typing.get_origin(kind) in (types.UnionType, typing.Union):
            if value is None and type(None) in args:
                return None
            return self.typed(key, value, next(a for a in args if a is not type(None)), spec)
        if typing.get_origin(kind) is tuple:
            return self.items(key, value, args[0], spec)
        if kind is str or isinstance(kind, type) and issubclass(kind, enum.Enum):
            return self.typed_str(key, value, kind, spec, form)
        if kind is float:
            return self.typed_float(key, value, form)
        if kind is datetime:
            if not isinstance(value, str):
                raise self.wrong_type(key, value, form)
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise self.wrong(key, value, "an ISO 8601 time") from None
        if kind is Path:
            return Path(self.typed(key, value, str, spec))
        if dataclasses.is_dataclass(kind):
            return read(kind, type(self)(value, key, self.base))
        base = typing.get_origin(kind) or kind
        if not isinstance(value, base) or isinstance(value, bool) and base is not bool:
            raise self.wrong_type(key, value, form)
        return value

    def typed_str(self, key: str, value: Any, kind: Any, spec: Spec, form: str) -> Any:
        """A one-line string matching spec.pattern, or a member of the enum kind."""
        if not isinstance(value, str):
            raise self.wrong_type(key, value, form)
        self.one_line(value, key)
        if spec.pattern is not None and not spec.pattern.match(value) or not _in_enum(kind, value):
            raise self.wrong(key, value, form)
        return kind(value) if kind is not str else value

    def typed_float(self, key: str, value: Any, form: str) -> float:
        """A finite int or float (not a bool), as a float."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.wrong_type(key, value, form)
        if not math.isfinite(value):
            raise self.wrong(key, value, f"a finite {form.removeprefix('a ')}")
        return float(value)

    def wrong_type(self, key: str, value: Any, form: str) -> UserError:
        return self.wrong(key, value, form)

    def items(self, key: str, value: Any, kind: Any, spec: Spec) -> tuple:
        item_form = spec.form or _type_form(kind)
        if not isinstance(value, list):
            raise self.wrong_type(key, value, _list_form(kind, spec.form))
        out = []
        for item in value:
            if isinstance(item, str):
                self.one_line(item, key)
            try:
                out.append(self.typed(key, item, kind, dataclasses.replace(spec, form=item_form)))
            except UserError:
                if dataclasses.is_dataclass(kind):
                    raise
                raise self.bad_item(key, value, item, item_form) from None
        return tuple(out)

    def table(self, name: str, default: Any = MISSING) -> "Table":
        value, key = self.raw(name, default, "a table")
        return type(self)(value, key or self.key(name), self.base)

    def finish(self) -> None:
        for name in self.data:
            if name not in self.known:
                near = difflib.get_close_matches(name, self.known, n=1, cutoff=0.5)
                hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(self.known)}"
                raise self.error(f"unknown key {self.key(name)}{hint}")


class RecordTable(Table):
    """A JSON record being read: errors name the file and the field, and a
    key this version does not know is left alone (an older reader)."""

    error = UserError

    def key(self, name: str) -> str:
        return f"{self.where}: field {name!r}"

    def missing(self, name: str, form: str) -> UserError:
        return self.error(f"{self.key(name)} is missing")

    def shown(self, value: Any) -> str:
        return repr(value)

    def wrong_type(self, key: str, value: Any, form: str) -> UserError:
        return self.error(f"{key} = {value!r} has the wrong type")

    def one_line(self, value: str, key: str) -> None:
        pass  # each field's pattern says what it may hold

    def finish(self) -> None:
        pass


def _in_enum(kind: Any, value: str) -> bool:
    return not (isinstance(kind, type) and issubclass(kind, enum.Enum)) or value in kind._value2member_map_


def _type_form(kind: Any) -> str:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return " or ".join(f'"{m.value}"' for m in kind)
    return {int: "an integer", float: "a number of seconds", bool: "true or false", str: "a string",
            datetime: "an ISO 8601 time"}.get(kind, "a table" if dataclasses.is_dataclass(kind) else "a value")


def _list_form(kind: Any, form: str) -> str:
    if kind is str:
        return f"a list of strings ({form})" if form else "a list of strings"
    return "a list"


def _missing_form(kind: Any, form: str) -> str:
    if typing.get_origin(kind) is tuple:
        return _list_form(typing.get_args(kind)[0], form)
    return form or _type_form(kind)


def read(cls: type, table: Table, **given: Any) -> Any:
    """An instance of the dataclass cls from table: each field with a Spec
    read and checked as declared (a field without one comes from given)."""
    kinds = hints(cls)
    values = dict(given)
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if f.name in values or spec is None or not f.init:
            continue
        if spec.read:
            table.known.append(f.name)
            values[f.name] = spec.read(table, f)
            continue
        default = f.default if f.default is not MISSING else MISSING
        values[f.name] = table.get(f.name, kinds[f.name], default, spec)
    table.finish()
    return cls(**values)


def dump(obj: Any) -> dict:
    """A dataclass as JSON: each field with a Spec, in declaration order; a
    None default left out where the field is declared ``compare=False``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        spec = spec_of(f)
        if spec is None:
            continue
        value = getattr(obj, f.name)
        if value is None and not f.compare:
            continue
        out[f.name] = spec.dump(value) if spec.dump else _json(value)
    return out


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_stamp(value)
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return dump(value)
    return value


def utc_stamp(when: datetime | None = None) -> str:
    """2026-11-25T17:00:00Z: how every record writes a time."""
    return (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
