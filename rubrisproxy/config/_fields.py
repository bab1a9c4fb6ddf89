"""A configuration table read from its field specifications: which keys it takes, how each value is parsed, and
which attribute of the model it sets. A key left out keeps the model's default (the model is the one home of
defaults)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError

#: A value's parser: given the key it is at (for messages) and the value as TOML gave it, the value to keep.
Parser = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a table: its TOML name, the parser of its value (``None``: read by hand, by the function that
    reads the table, for it depends on other keys or tables), and the model attribute it sets (the name with
    ``_`` for ``-`` unless given). ``required`` is the problem reported when the key is absent; else an absent key
    keeps the model's default."""

    key: str
    parse: Parser | None
    attribute: str = ""
    required: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    """The keys a TOML table takes, and the model (a frozen dataclass) it describes. ``check`` enforces rules
    across keys on the object built, given the table's key for its messages."""

    model: Callable[..., Any]
    fields: tuple[Field, ...]
    check: Callable[[str, Any], None] | None = None

    def read(self, key: str, value: object) -> dict[str, Any]:
        """The values of the keys present in ``value`` (the table at ``key``), by attribute, each parsed; fields
        read by hand are left out. An unknown key, a missing required one or a bad value raises ConfigError."""
        table = as_table(key, value)
        reject_unknown(key, table, {f.key for f in self.fields})
        values = {}
        for field in self.fields:
            if field.key in table:
                if field.parse is not None:
                    values[field.attribute or field.key.replace("-", "_")] = field.parse(
                        _join(key, field.key), table[field.key])
            elif field.required:
                raise ConfigError(_join(key, field.key), field.required)
        return values

    def build(self, key: str, value: object) -> Any:
        """The model built from ``value`` (the table at ``key``), its cross-key rules checked."""
        built = self.model(**self.read(key, value))
        if self.check is not None:
            self.check(key, built)
        return built


def section(table: Table) -> Parser:
    """A parser of a sub-table described by ``table``."""
    return table.build


def as_table(key: str, value: object) -> dict[str, Any]:
    """``value`` if it is a TOML table."""
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {type(value).__name__}")
    return value


def reject_unknown(key: str, table: Mapping[str, Any], known: set[str]) -> None:
    """Refuse a key of ``table`` not in ``known``, listing those it takes."""
    for name in table:
        if name not in known:
            raise ConfigError(_join(key, name), f"unknown key; expected one of {', '.join(sorted(known))}")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
