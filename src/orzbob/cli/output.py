"""Terminal output of the `orz` commands: consoles, safe text, clean failures and JSON.

Kept free of SQLAlchemy, the settings and the models: `orz cloud …` (HTTP only) imports this and
not `orzbob.cli.common`, so it starts fast.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def typer_app(**options: Any) -> typer.Typer:
    """A Typer app whose help and usage errors are Click's plain text. Typer's Rich help imports
    rich.markdown and rich.traceback, about 0.1 s: a third of the start-up budget of
    `orz cloud --help` (`make bench` prints the figure)."""
    return typer.Typer(rich_markup_mode=None, **options)


# Bidirectional overrides reorder what a terminal shows; they are escaped like control codes.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def escape_controls(value: object) -> str:
    """Text from the server or the database, made safe for a terminal: control characters
    (ESC sequences, carriage returns, bell…) and bidi overrides become visible escapes."""
    text = "" if value is None else str(value)
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) == "Cc" or c in _BIDI
        else c
        for c in text
    )


def safe(value: object, style: str = "") -> Text:
    """A Rich `Text` that is printed as is: never parsed as markup, controls escaped."""
    return Text(escape_controls(value), style=style)


def line(*parts: str | Text | tuple[str, str]) -> Text:
    """One printed line from pieces: plain strings and `(text, style)` pairs are our own
    wording; server or database values must come in as `safe(...)`."""
    return Text.assemble(*parts)


def fail(message: str | Text, code: int = 1) -> NoReturn:
    body = message if isinstance(message, Text) else safe(message)
    err_console.print(line(("error: ", "bold red"), body), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
