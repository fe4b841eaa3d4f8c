"""Strict JSON for untrusted bodies: what parses here can be stored on both databases.

Python's `json` accepts `NaN` and `Infinity` (not JSON, and PostgreSQL's JSON types refuse
them), recurses once per nesting level (a deep enough document raises RecursionError), and
keeps NUL characters that PostgreSQL text cannot hold. Each of those is a ValueError here.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(body: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `body`, or raise ValueError saying why it cannot be accepted."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"the JSON is nested more than {max_depth} levels deep") from None
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 text") from None
    problem = find_problem(value, max_depth=max_depth)
    if problem:
        raise ValueError(problem)
    return value


def find_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """What makes an already parsed document unstorable (too deep, a NUL), or None."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: the point is to survive documents nested thousands deep
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > max_depth:
            return f"the JSON is nested more than {max_depth} levels deep"
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return "a NUL character (\\u0000) is not allowed in text"
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and "\x00" in item:
            return "a NUL character (\\u0000) is not allowed in text"
    return None
