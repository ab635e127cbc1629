"""explain / score / score --model of an older commit and of the working tree, run alternately.

Not a test. On a shared machine one command's time moves by seconds between minutes; running the
old and the new code in turn (old, new, old, new, ...) on the same cached demo workspace as
``cli_bench.py`` gives the steadier comparison, chiefly of the CPU time (user + system of the
child). The old code is ``git archive REF`` unpacked as a ``propensity`` package and put first on
``PYTHONPATH`` (the same virtualenv, so the same libraries)::

    python benchmarks/cli_ab.py --old 86909e6 --rounds 4

JSON goes to ``benchmarks/results/cli_ab.json``; the load average is stored with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cli_bench import CACHE, a_contact, demo_workspace


def old_package(ref: str, into: Path) -> Path:
    target = into / "propensity"
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return into


def run(command: list[str], env: dict) -> tuple[float, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the commit to compare with (e.g. the branch's parent)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "cli_ab.json")
    args = parser.parse_args()
    ws = demo_workspace(args.contacts)
    contact, as_of = a_contact(ws)
    out_dir = CACHE / "bench-out"
    out_dir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "propensity.pipelines.cli"]
    commands = {
        "explain CONTACT": [*cli, "explain", contact],
        "score (rules)": [*cli, "score", "--as-of", as_of, "--out", str(out_dir / "ab-rules.parquet")],
        "score --model champion": [*cli, "score", "--model", "champion", "--as-of", as_of,
                                   "--out", str(out_dir / "ab-model.parquet")],
    }
    base = {**os.environ, "PROPENSITY_WORKSPACE": str(ws)}
    with tempfile.TemporaryDirectory(prefix="cli-ab-") as folder:
        envs = {"old": {**base, "PYTHONPATH": str(old_package(args.old, Path(folder)))}, "new": base}
        for env in envs.values():  # warm-up: the OS file cache, and the kept feature queries
            for command in commands.values():
                subprocess.run(command, check=True, capture_output=True, env=env)
        runs = {(version, name): [] for version in envs for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                for version, env in envs.items():
                    runs[(version, name)].append(run(command, env))
    rows = []
    print(f"old = {args.old}, new = the working tree; {args.rounds} rounds, alternating; 2 cores")
    print(f"{'command':<24} {'version':<7} {'wall s':>7} {'CPU s':>6} {'loads':<20}")
    for (version, name), measured in runs.items():
        wall = statistics.median(r[0] for r in measured)
        cpu = statistics.median(r[1] for r in measured)
        loads = [round(r[2], 1) for r in measured]
        print(f"{name:<24} {version:<7} {wall:>7.2f} {cpu:>6.2f} {min(loads)}-{max(loads)}")
        rows.append({"command": name, "version": version, "median_wall_s": wall, "median_cpu_s": cpu,
                     "runs": [{"wall_s": r[0], "cpu_s": r[1], "load": r[2]} for r in measured]})
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"old": args.old, "contacts": args.contacts, "contact": contact,
                                        "rounds": args.rounds, "cores": os.cpu_count(), "results": rows}, indent=2) + "\n")
    print(f"-> {args.results}")


if __name__ == "__main__":
    main()
