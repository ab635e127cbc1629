"""The one command-line interface: ``propensity``.

Only this package prints (one module per group of commands; `common` holds what they share). Every command resolves the workspace (``--workspace``, else
``$PROPENSITY_WORKSPACE``, else ``./propensity-workspace``), calls a job, and renders its result.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from propensity.pipelines.cli.common import app, err

# Importing a command module registers its commands on `app`; `--help` lists them in this order:
# the first steps, the data, scores, training, and scores out to other tools.
for _module in ("starting", "data", "engine", "scoring", "training", "monitoring", "activation"):
    import_module(f"propensity.pipelines.cli.{_module}")

__all__ = ["app", "main"]


def _workspace_option_first(args: list[str]) -> list[str]:
    """``-w DIR`` / ``--workspace DIR`` anywhere before ``--`` moved to the front, where the root
    command reads it: ``propensity score -w ws ...`` means ``propensity -w ws score ...`` (no
    subcommand has a ``-w`` of its own)."""
    moved, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in ("-w", "--workspace") and i + 1 < len(args):
            moved += args[i:i + 2]
            i += 2
            continue
        (moved if arg.startswith("--workspace=") else rest).append(arg)
        i += 1
    return moved + rest


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 bad input or usage)."""
    import os

    # LightGBM's OpenMP threads spin while waiting by default; on a busy 2-core machine that made a
    # 50k-row fit take 19.6 s instead of 2.5 s (benchmarks/training_bench.py). It must be set
    # before the OpenMP runtime loads, i.e. before lightgbm is imported; a user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Bad input (DataValidationError, RulesConfigError, WorkspaceError, NotEnoughPositives,
    # LeakageError, config errors) is a ValueError with a message that says what to do; the
    # classes are not imported up front so that --help and --version stay fast.
    known = (FileNotFoundError, ValueError)
    command = typer.main.get_command(app)
    args = _workspace_option_first(list(argv if argv is not None else sys.argv[1:]))
    try:
        # standalone mode: typer (which vendors its own click) prints usage errors itself, with exit
        # code 2, and ends with SystemExit; our own known errors still propagate to the line below
        command.main(args=args, prog_name="propensity", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except known as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except Exception as exc:
        from propensity.features.store import damaged_store_error
        from propensity.pipelines.warehouse import unsupported_by_engine

        if (damaged := damaged_store_error(exc) or unsupported_by_engine(exc)) is None:
            raise
        err.print(f"[red]error:[/] {damaged}")
        return 2
    return 0


