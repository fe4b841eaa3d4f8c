"""Shared CLI helpers: settings, runtime, JSON output and clean error exits."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from orzbob.config import Settings, load_settings
from orzbob.kit.errors import ConfigError, OrzbobError
from orzbob.runtime import Runtime

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")
# The database URL of this command, for error messages (set by `settings_or_exit`).
_current_url: dict[str, str] = {}


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


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
        _current_url["url"] = settings.database_url
        return settings
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        fail(f"invalid configuration: {problems}")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected errors into one clear line and a non-zero exit, never a traceback."""
    try:
        yield
    except OrzbobError as exc:
        fail(exc.detail)
    except ConfigError as exc:
        fail(str(exc))
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        fail(
            f"DATABASE_URL {_where(_current_url.get('url', ''))!r} cannot be used "
            f"({_first_line(exc)}); use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    except sa_exc.DBAPIError as exc:
        fail(_database_error(exc))
    except OSError as exc:  # e.g. the database's directory cannot be made
        what = f"cannot use {exc.filename}" if exc.filename else "operating system error"
        fail(f"{what}: {exc.strerror or exc}")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _where(url: object) -> str:
    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "the configured database"


def _database_error(exc: sa_exc.DBAPIError) -> str:
    """One line naming the database (never its password) and what the driver said."""
    url = _current_url.get("url", "")
    where, reason = _where(url), _first_line(exc)
    if url.startswith("sqlite") and "unable to open database file" in reason:
        reason += " (does its directory exist?)"
    if isinstance(exc, sa_exc.OperationalError):
        return f"cannot use the database at {where}: {reason}"
    return f"database error at {where}: {reason}"


def runtime_or_exit() -> Runtime:
    settings = settings_or_exit()
    with cli_errors():
        return Runtime.create(settings)
    raise AssertionError("unreachable")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def run_db(fn: Callable[[Runtime], T]) -> T:
    runtime = runtime_or_exit()
    try:
        with cli_errors():
            return fn(runtime)
    finally:
        runtime.engine.dispose()
    raise AssertionError("unreachable")
