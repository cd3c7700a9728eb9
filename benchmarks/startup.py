#!/usr/bin/env python3
"""How long a one-shot ``nbrules evaluate`` process takes, end to end.

    python benchmarks/startup.py [--runs 15] [--patient examples/ms-infant.json]

Each round starts, in turn, five fresh processes of this interpreter and times them
with the wall clock (from start to exit, output read):

  * ``python -c pass`` — the interpreter alone;
  * ``python -c "import nbrules"`` — importing the package;
  * ``nbrules evaluate PATIENT`` with the on-disk cache off (``NBRULES_CACHE=off``):
    load, validate, check, verify and run the cases of every rule file, then evaluate;
  * the same with a *cold* cache (emptied before the run: the same work, plus writing
    the entry);
  * the same with a *warm* cache (the entry written by an earlier run).

With ``--before REV`` (a git revision, e.g. ``main``) a sixth process runs
``nbrules evaluate`` from that revision of the code (``git archive`` into the
temporary directory, imported ahead of the installed package), for a before/after
figure from the same run: with a warm cache of its own when that revision has the
on-disk cache (its entries differ from this tree's), else as that revision runs.

It prints the median of each in milliseconds, wall clock and CPU time (user + system,
which waiting for a busy CPU does not inflate), and, from this one run, the ratios
between them, then whether the goal of issue 15 is met (warm ≤ 200 ms wall).  The standard
output of the three evaluations is checked to be byte-identical first.

Bytecode is written to a temporary ``PYTHONPYCACHEPREFIX``, as an installed package
has it (and the tree stays clean), even when ``PYTHONDONTWRITEBYTECODE`` is set; the
cache lives in a temporary directory.  Nothing is kept.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = 200.0
IMPORT = "python -c 'import nbrules'"
_CLI = "import sys; from nbrules.cli import main; sys.exit(main())"


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall seconds from start to exit of one process, its CPU seconds (user + system),
    and its standard output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])}... exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu, done.stdout


def _checkout(rev: str, tmp: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment importing ``nbrules`` from revision ``rev`` of this repository."""
    tree = tmp / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    (tmp / "before-path").mkdir()
    (tmp / "before-path" / "nbrules").symlink_to(tree / "engine", target_is_directory=True)
    return dict(env, PYTHONPATH=str(tmp / "before-path"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    ap.add_argument("--patient", default=str(ROOT / "examples" / "ms-infant.json"))
    ap.add_argument("--before", metavar="REV", help="also time evaluate from this git revision of the code")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nbrules-startup-") as tmp:
        cache = Path(tmp) / "cache"
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pyc")
        env["NBRULES_CACHE_DIR"] = str(cache)
        env.pop("NBRULES_CACHE", None)
        off = dict(env, NBRULES_CACHE="off")
        py = sys.executable
        evaluate = [py, "-c", _CLI, "evaluate", args.patient]
        kinds = {
            "python -c pass": ([py, "-c", "pass"], env, False),
            IMPORT: ([py, "-c", "import nbrules"], env, False),
            "evaluate, cache off": (evaluate, off, False),
            "evaluate, cold cache": (evaluate, env, True),
            "evaluate, warm cache": (evaluate, env, False),
        }
        if args.before:
            before = dict(env, NBRULES_CACHE_DIR=str(Path(tmp) / "before-cache"))  # kept warm: not emptied
            kinds[f"evaluate at {args.before}"] = (evaluate, _checkout(args.before, Path(tmp), before), False)
        # warm-up: bytecode written, the warm entry present; the three outputs must agree
        outputs = set()
        for name, (cmd, e, cold) in kinds.items():
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            _, _, out = _run(cmd, e)
            if name.startswith("evaluate"):
                outputs.add(out)
        _, _, out = _run(evaluate, env)  # the warm entry, again after the cold run
        outputs.add(out)
        if len(outputs) != 1:
            raise SystemExit("the outputs with the cache off, cold and warm differ")
        if args.before:
            same = _run(evaluate, kinds[f"evaluate at {args.before}"][1])[2] in outputs
            print(f"output at {args.before}: {'identical' if same else 'DIFFERENT'} to this tree's")
        wall: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.runs):
            for name, (cmd, e, cold) in kinds.items():
                if cold:
                    shutil.rmtree(cache, ignore_errors=True)
                w, c, _ = _run(cmd, e)
                wall[name].append(w)
                cpu[name].append(c)
            _run(evaluate, env)  # leave a warm entry for the next round
    med = {k: statistics.median(v) * 1000 for k, v in wall.items()}
    mcpu = {k: statistics.median(v) * 1000 for k, v in cpu.items()}
    print(f"one-shot processes, median of {args.runs} rounds ({Path(args.patient).name}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f})")
    print(f"  {'':<28} {'wall':>8}    {'CPU':>8}")
    for name in kinds:
        print(f"  {name:<28} {med[name]:8.1f} ms {mcpu[name]:8.1f} ms")
    warm, warm_cpu = med["evaluate, warm cache"], mcpu["evaluate, warm cache"]
    print("ratios (same run, wall):")
    print(f"  cache off / warm cache     {med['evaluate, cache off'] / warm:6.2f}x")
    print(f"  cold cache / warm cache    {med['evaluate, cold cache'] / warm:6.2f}x")
    if args.before:
        print(f"  {'at ' + args.before + ' / warm cache':<26} {med[f'evaluate at {args.before}'] / warm:6.2f}x")
    print(f"  warm cache / import        {warm / med[IMPORT]:6.2f}x")
    print(f"  warm cache / python alone  {warm / med['python -c pass']:6.2f}x")
    verdict = "met" if warm <= GOAL_MS else "NOT met"
    print(f"goal: warm one-shot evaluate <= {GOAL_MS:.0f} ms: {verdict} ({warm:.0f} ms wall, {warm_cpu:.0f} ms CPU; "
          f"wall time counts waiting for the CPU on a loaded machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
