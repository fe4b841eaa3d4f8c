"""The `orz` command.

Sub-commands are loaded when used: `orz cloud …` and `orz login` talk HTTP only and must not pay
for SQLAlchemy, the models and the API (`orz cloud --help` starts in well under 0.3 s; `make
bench` prints the figure).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from orzbob.cli.output import err_console, line, safe, typer_app

# name -> (module, attribute, is_group): a Typer app that is a group, or holds one command.
_COMMANDS: dict[str, tuple[str, str, bool]] = {
    "db": ("orzbob.cli.service", "db_app", True),
    "server": ("orzbob.cli.service", "server_app", False),
    "worker": ("orzbob.cli.service", "worker_app", False),
    "dev": ("orzbob.cli.service", "dev_app", True),
    "login": ("orzbob.cli.cloud", "login_app", False),
    "cloud": ("orzbob.cli.cloud", "app", True),
    "admin": ("orzbob.cli.admin", "app", True),
    "metering": ("orzbob.cli.ops", "metering_app", True),
    "polar": ("orzbob.cli.polar_group", "polar_app", True),
    "support": ("orzbob.cli.support", "support_app", True),
    "demo": ("orzbob.cli.demo", "demo_app", False),
    "alerts": ("orzbob.cli.alerts", "alerts_app", True),
}


class LazyGroup(TyperGroup):
    """A group whose sub-commands are imported on first use (for start-up time, not to dodge an
    import cycle: every module here imports only downwards)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            module, attribute, is_group = _COMMANDS[cmd_name]
            sub: typer.Typer = getattr(importlib.import_module(module), attribute)
            command = typer.main.get_group(sub) if is_group else typer.main.get_command(sub)
            command.name = cmd_name
            self.commands[cmd_name] = command
        return self.commands.get(cmd_name)


app = typer_app(
    cls=LazyGroup,
    help="Orzbob Cloud Billing: metering, plans, usage and support tooling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Orzbob Cloud Billing: metering, plans, usage and support tooling."""


def main() -> None:
    try:
        app()
    except Exception as exc:  # the last resort: one line, the traceback only on request
        if os.environ.get("ORZ_DEBUG"):
            raise
        err_console.print(
            line(
                ("error: ", "bold red"),
                safe(f"unexpected {exc.__class__.__name__}: {exc}"),
                " (this is a bug; ORZ_DEBUG=1 shows the traceback)",
            ),
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(1) from None


__all__ = ["app", "main"]
