"""The README's layout map matches the tree: every path it names exists, and every top-level
folder of the repository and every package and module of the service is on it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    after = text.split("\n## Layout\n", 1)[1]
    return after.split("```\n", 2)[1].splitlines()


def named_paths() -> list[str]:
    """The paths the map names, resolved against their parent entries."""
    out: list[str] = []
    parents: dict[int, str] = {}
    for line in layout_block():
        indent = len(line) - len(line.lstrip(" "))
        token = line.split()[0] if line.strip() else ""
        if indent > 4 or not re.fullmatch(r"[\w.\-/]+", token):
            continue  # a description carried over to the next line
        base = parents.get(indent - 2, "") if indent else ""
        path = base + token
        out.append(path)
        parents[indent] = path
    return out


def test_every_path_on_the_map_exists() -> None:
    paths = named_paths()
    assert len(paths) > 25
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_every_top_level_folder_and_service_module_is_on_the_map() -> None:
    block = "\n".join(layout_block())
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {f.split("/")[0] + "/" for f in tracked if "/" in f} - {".ci/"}
    assert sorted(t for t in top if t not in block) == []
    service = ROOT / "src" / "orzbob"
    names = {
        p.name + ("/" if p.is_dir() else "")
        for p in service.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.name != "__init__.py")
    }
    assert sorted(n for n in names if n not in block) == []
