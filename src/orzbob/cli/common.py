"""Shared CLI helpers of the commands that use the database: settings, runtime and clean error
exits. Terminal output lives in `orzbob.cli.output` (re-exported here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from orzbob.cli.output import console, err_console, escape_controls, fail, line, print_json, safe
from orzbob.config import Settings, load_settings
from orzbob.kit.errors import ConfigError, OrzbobError
from orzbob.runtime import Runtime

T = TypeVar("T")
# The database URL of this command, for error messages (set by `settings_or_exit`).
_current_url: dict[str, str] = {}


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


def run_db(fn: Callable[[Runtime], T]) -> T:
    runtime = runtime_or_exit()
    try:
        with cli_errors():
            return fn(runtime)
    finally:
        runtime.engine.dispose()
    raise AssertionError("unreachable")


__all__ = [
    "cli_errors",
    "console",
    "err_console",
    "escape_controls",
    "fail",
    "line",
    "print_json",
    "run_db",
    "runtime_or_exit",
    "safe",
    "settings_or_exit",
]
