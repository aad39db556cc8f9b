"""What the front ends show of a config field: its value type, its choices and its default, as text.

The CLI's generated options and the dashboard's launch form both read the config model through these, so
they never disagree.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic.fields import FieldInfo


def option_type(annotation: Any) -> Any:
    """``Path | None`` -> Path; ``Literal[...]`` -> str (pydantic validates and names the choices)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return str
    if args and typing.get_origin(annotation) is not Literal:
        return option_type(args[0])
    return annotation


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    return "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)


def choices(field: FieldInfo) -> list[str]:
    annotation = field.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is Literal:
            return [str(c) for c in typing.get_args(candidate)]
    return []


def aliases(field: FieldInfo) -> list[str]:
    """Older names the option is still accepted under (``aliases`` in the field's json_schema_extra)."""
    return list((field.json_schema_extra or {}).get("aliases", []))
