"""Reading the commands a runbook shows: every `orz …` line in its ```sh blocks (and inside
`VAR=$(orz …)`), and every statement in its ```sql blocks."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
ASSIGNED = re.compile(r"^(\w+)=\$\((orz [^)]*)\)")
STOP = {"|", "||", "&&", ";"}


@dataclass(frozen=True)
class Command:
    args: list[str]
    assigns: str | None  # `ID=$(orz … --json | jq -r .id)` assigns the output's id
    source: str


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(text) if lang == language]


def logical_lines(block: str) -> list[str]:
    return block.replace("\\\n", " ").splitlines()


def orz_commands(path: Path) -> list[Command]:
    out = []
    for block in blocks(path.read_text(), "sh"):
        for raw in logical_lines(block):
            line = raw.strip()
            assigned = ASSIGNED.match(line)
            if assigned:
                var, line = assigned.group(1), assigned.group(2)
            elif line.startswith("orz "):
                var = None
            else:
                continue
            tokens = shlex.split(line, comments=True)
            args = []
            for token in tokens[1:]:
                if token in STOP or token.startswith((">", "2>")):
                    break
                args.append(token)
            out.append(Command(args, var, raw.strip()))
    return out


def sql_statements(path: Path) -> list[str]:
    statements = []
    for block in blocks(path.read_text(), "sql"):
        body = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
        statements.extend(s.strip() for s in body.split(";") if s.strip())
    return statements
