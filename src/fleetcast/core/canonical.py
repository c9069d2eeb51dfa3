"""Canonical JSON: the exact bytes that are signed and verified.

Keys sorted, no insignificant whitespace, UTF-8, no floats (they have no single
canonical text form), so that signer and verifier always hash the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from fleetcast.exceptions import ValidationError


def _reject_floats(value: Any, path: str = "$") -> None:
    if isinstance(value, float):
        raise ValidationError(f"floats are not allowed in signed data (at {path})")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"object keys must be strings (at {path})")
            _reject_floats(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_floats(item, f"{path}[{index}]")


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON encoding of ``value``.

    Raises:
        ValidationError: ``value`` holds floats or non-string keys.
    """
    try:
        _reject_floats(value)
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except RecursionError as e:
        raise ValidationError("signed data is nested too deeply") from e


def parse_json_object(data: bytes, *, what: str) -> dict[str, Any]:
    """Parse ``data`` as a JSON object.

    Raises:
        ValidationError: ``data`` is not UTF-8 JSON or not an object.
    """
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValidationError(f"{what} is not valid JSON: {e}") from e
    except RecursionError as e:
        # A few kilobytes of "[[[[..." exhaust the parser's stack: hostile, not JSON we use.
        raise ValidationError(f"{what} is nested too deeply") from e
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object")
    return value
