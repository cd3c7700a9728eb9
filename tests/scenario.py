"""Runs a Markdown document's editing scenario: its file edits and console commands.

* ``<!-- edit: PATH -->`` followed by a ```yaml block with ``# before`` and ``# after``
  sections replaces the one occurrence of *before* with *after* in PATH;
* a ```console block holds ``$ command`` lines, each followed by the output it prints.

Commands run in a fresh directory holding copies of ``rules/`` and ``examples/``;
``nbrules`` runs as ``python -m nbrules.cli``.  Timings are normalised before comparing.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EDIT = re.compile(r"<!-- edit: (?P<path>\S+) -->\n```yaml\n# before\n(?P<before>.*?)# after\n(?P<after>.*?)```\n", re.S)
CONSOLE = re.compile(r"```console\n(?P<body>.*?)```\n", re.S)


def normalise(text: str) -> str:
    text = re.sub(r"\b\d+ ms\b", "N ms", text)
    return re.sub(r"\bin \d+(\.\d+)? s\b", "in N s", text)


def _run(command: str, cwd: Path) -> str:
    argv = shlex.split(command)
    if argv[0] == "nbrules":
        argv = [sys.executable, "-m", "nbrules.cli", *argv[1:]]
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.stdout


def run_scenario(text: str, repo: Path, fill: bool = False) -> str:
    """Run the scenario in ``text``; return it with real outputs (``fill``) or raise on a mismatch."""
    work = Path(tempfile.mkdtemp(prefix="nbrules-scenario-"))
    try:
        shutil.copytree(repo / "rules", work / "rules")
        shutil.copytree(repo / "examples", work / "examples")
        pieces: list[str] = []
        pos = 0
        steps = sorted([(m.start(), "edit", m) for m in EDIT.finditer(text)] +
                       [(m.start(), "console", m) for m in CONSOLE.finditer(text)], key=lambda s: s[0])
        mismatches: list[str] = []
        for start, kind, m in steps:
            pieces.append(text[pos:start])
            pos = m.end()
            if kind == "edit":
                path = work / m["path"]
                content = path.read_text()
                assert content.count(m["before"]) == 1, f"{m['path']}: the 'before' text must occur once"
                path.write_text(content.replace(m["before"], m["after"]))
                pieces.append(m.group(0))
                continue
            lines = m["body"].splitlines()
            commands: list[tuple[str, list[str]]] = []
            for line in lines:
                if line.startswith("$ "):
                    commands.append((line[2:], []))
                elif commands:
                    commands[-1][1].append(line)
            block = ["```console"]
            for command, expected in commands:
                actual = _run(command, work).rstrip("\n")
                block.append(f"$ {command}")
                if actual:
                    block.append(actual)
                if not fill and normalise("\n".join(expected)).rstrip() != normalise(actual).rstrip():
                    mismatches.append(f"$ {command}\n--- documented\n" + "\n".join(expected) + "\n--- printed\n" + actual)
            block.append("```\n")
            pieces.append("\n".join(block))
        pieces.append(text[pos:])
        if mismatches:
            raise AssertionError("\n\n".join(mismatches))
        return "".join(pieces)
    finally:
        shutil.rmtree(work, ignore_errors=True)
