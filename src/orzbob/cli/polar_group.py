"""`orz polar …`: product sync and the local server (cli/ops.py) plus `orz polar reconcile`."""

from __future__ import annotations

from orzbob.cli import reconcile
from orzbob.cli.ops import polar_app

polar_app.command("reconcile")(reconcile.reconcile)

__all__ = ["polar_app"]
