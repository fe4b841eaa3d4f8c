"""Shared CLI helpers: settings, runtime, JSON output and clean error exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from orzbob.config import Settings, load_settings
from orzbob.kit.errors import ConfigError, OrzbobError
from orzbob.runtime import Runtime

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
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
