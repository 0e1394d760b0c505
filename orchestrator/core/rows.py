"""What makes a data row unusable, shared by the driver's preflight and the workers' loader (no torch).

columns: the input and the target must be non-empty strings. instruction: `instruction` and the target
must be non-empty strings, the input and `system` strings or null/absent (an empty input is normal).
messages: `messages` must be a non-empty list of {role, content} objects, role one of system/user/
assistant, content a string, with at least one assistant turn holding text.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from orchestrator.core.config_sections import DataConfig

MESSAGES_COLUMN = "messages"
INSTRUCTION_COLUMN = "instruction"
SYSTEM_COLUMN = "system"
ROLES = ("system", "user", "assistant")
SHOWN = 5  # first bad rows named in a message


def required_columns(d: DataConfig) -> List[str]:
    """The columns a data file must have for data.format."""
    if d.format == "messages":
        return [MESSAGES_COLUMN]
    if d.format == "instruction":
        return [INSTRUCTION_COLUMN, d.target_column]
    return [d.input_column, d.target_column]


def _text_problem(name: str, value: Any, optional: bool = False) -> Optional[str]:
    if value is None:
        return None if optional else f"{name} is null"
    if not isinstance(value, str):
        return f"{name} is a {type(value).__name__}, not a string"
    if not optional and not value.strip():
        return f"{name} is empty"
    return None


def row_problem(d: DataConfig, row: Mapping[str, Any]) -> Optional[str]:
    """Why this row cannot be trained on, or None when it can."""
    if d.format == "messages":
        return messages_problem(row.get(MESSAGES_COLUMN))
    if d.format == "instruction":
        return (
            _text_problem(INSTRUCTION_COLUMN, row.get(INSTRUCTION_COLUMN))
            or _text_problem(d.input_column, row.get(d.input_column), optional=True)
            or _text_problem(SYSTEM_COLUMN, row.get(SYSTEM_COLUMN), optional=True)
            or _text_problem(d.target_column, row.get(d.target_column))
        )
    return _text_problem(d.input_column, row.get(d.input_column)) or _text_problem(
        d.target_column, row.get(d.target_column)
    )


def messages_problem(messages: Any) -> Optional[str]:
    if not isinstance(messages, list) or not messages:
        return f"{MESSAGES_COLUMN} is not a non-empty list"
    for i, m in enumerate(messages, 1):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            return f"message {i} is not a {{role, content}} object with role system, user or assistant"
        if not isinstance(m.get("content"), str):
            return f"message {i} has no string content"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no assistant turn with text"
    return None


def describe_bad_rows(key: str, source: str, bad: List[Tuple[str, str]]) -> str:
    """The error for a split with bad rows: count, first rows and why, and the two fixes."""
    first = ", ".join(f"{where} ({why})" for where, why in bad[:SHOWN])
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return (
        f"`{key}`: {len(bad)} bad row(s) in {source}: {first}{more}. Clean the file, or set "
        f"data.on_bad_rows: skip to drop such rows when the data is loaded."
    )
