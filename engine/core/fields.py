"""Custom field types of a profile database, and the conversion of imported values.

Declared in config::

    [databases.customers.fields]
    age = "int"
    score = "float"
    birthday = "date"            # ISO 8601 date (or datetime, kept as given)
    vip = "bool"                 # true/false, yes/no, 1/0
    plan = { type = "enum", values = ["free", "gold"] }
    interests = "tags"           # "a, b; c" -> ["a", "b", "c"]
    address = "object"           # a JSON object
    orders = "array"             # a JSON array of objects

A value of the wrong type rejects its row (or API item), naming the field. Fields not
declared are kept as given (text from a file). Typed values are stored as JSON numbers,
booleans, lists and objects, so templates render them and segments compare them as such.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

__all__ = ["FieldSpec", "FieldType", "convert_fields", "convert_value"]

FieldType = Literal["int", "float", "string", "date", "bool", "enum", "tags", "object", "array"]
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
_decode = msgspec.json.decode


class FieldSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One custom field's type (``values``: the allowed values of an ``enum``)."""

    type: FieldType
    values: list[str] | None = None


def convert_value(spec: FieldSpec, value: Any) -> Any:
    """``value`` (text from a file, or JSON from the API) as the field's type; ValueError
    says why it is not one."""
    t = spec.type
    if t == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected text")
        return str(value)
    if t == "int":
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        text = str(value).strip()
        if text.lstrip("+-").isdigit() and text.isascii() and len(text) < 20:
            return int(text)
        raise ValueError(f"expected a whole number, not {value!r}")
    if t == "float":
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            number = float(str(value).strip().replace(",", ".")) if isinstance(value, str) \
                else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, not {value!r}")
        return number
    if t == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, not {value!r}")
    if t == "date":
        if not isinstance(value, str):
            raise ValueError("expected an ISO 8601 date")
        day = value.strip()
        try:
            if len(day) == 10:
                return dt.date.fromisoformat(day).isoformat()
            return dt.datetime.fromisoformat(day.replace("Z", "+00:00")).isoformat()
        except ValueError:
            raise ValueError(f"expected an ISO 8601 date, not {value!r}") from None
    if t == "enum":
        assert spec.values is not None
        text = str(value).strip()
        if text not in spec.values:
            raise ValueError(f"expected one of {', '.join(spec.values)}, not {value!r}")
        return text
    if t == "tags":
        if isinstance(value, list):
            items = [str(v).strip() for v in value]
        elif isinstance(value, str):
            items = [v.strip() for v in value.replace(";", ",").split(",")]
        else:
            raise ValueError("expected tags: a list, or text separated by commas")
        return list(dict.fromkeys(i for i in items if i))
    parsed = value
    if isinstance(value, str):
        try:
            parsed = _decode(value)
        except msgspec.DecodeError:
            raise ValueError(f"expected JSON, not {value[:40]!r}") from None
    if t == "object":
        if not isinstance(parsed, dict):
            raise ValueError("expected a JSON object")
        return parsed
    if not isinstance(parsed, list) or not all(isinstance(i, dict) for i in parsed):
        raise ValueError("expected a JSON array of objects")
    return parsed


def convert_fields(specs: Mapping[str, FieldSpec], fields: dict[str, Any]) -> dict[str, Any]:
    """Convert the declared fields of ``fields`` in place; ValueError names the field."""
    for name, spec in specs.items():
        if name in fields:
            try:
                fields[name] = convert_value(spec, fields[name])
            except ValueError as err:
                raise ValueError(f"field {name}: {err}") from None
    return fields
