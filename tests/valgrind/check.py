#!/usr/bin/env python3
"""Run the evaluation path under valgrind; fail on any memory error inside durable-rules.

    python tests/valgrind/check.py            # nbrules' own path: must be clean (exit 0)
    python tests/valgrind/check.py --control  # the naive path: must be flagged (exit 1)

Python runs with PYTHONMALLOC=malloc so valgrind sees every allocation.  An error
counts when any frame of its stack is in durable_rules_engine (invalid read or
write, invalid or mismatched free, use of uninitialised memory).  Errors wholly
inside the interpreter are listed but do not fail the check.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = re.compile(r"^==\d+== (Invalid (read|write|free)|Mismatched free|Conditional jump|Use of uninitialised|"
                   r"Syscall param|Source and destination overlap|Argument '.*' of function)")
FRAME = re.compile(r"^==\d+==\s+(at|by) ")


def error_blocks(log: str) -> list[list[str]]:
    blocks, current = [], None
    for line in log.splitlines():
        if KINDS.match(line):
            current = [line]
            blocks.append(current)
        elif current is not None and FRAME.match(line):
            current.append(line)
        else:
            current = None
    return blocks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--control", action="store_true", help="run the naive durable-rules path instead")
    ap.add_argument("--rounds", type=int, default=2, help="engines built, used and closed in turn in the nbrules workload")
    args = ap.parse_args()
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    mode = "control" if args.control else "nbrules"
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "valgrind.log"
        cmd = [valgrind, "--tool=memcheck", "--error-limit=no", f"--log-file={log_path}",
               sys.executable, str(HERE / "workload.py"), mode, str(args.rounds)]
        env = dict(os.environ, PYTHONMALLOC="malloc")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        log = log_path.read_text(errors="replace")
    if proc.returncode != 0 or f"workload {mode} finished" not in proc.stdout:
        print(f"the workload did not finish (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", file=sys.stderr)
        print(log[-4000:], file=sys.stderr)
        return 1
    blocks = error_blocks(log)
    ours = [b for b in blocks if any("durable_rules_engine" in line for line in b)]
    summary = re.search(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts", log)
    print(f"valgrind memcheck, workload '{mode}': {len(blocks)} error reports, "
          f"{len(ours)} inside durable-rules ({summary.group(0) if summary else 'no summary'})")
    for b in ours[:5]:
        print("\n".join(b[:6]))
        print()
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
