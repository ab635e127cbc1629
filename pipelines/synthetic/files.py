"""The world written as files `propensity ingest` reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from propensity.pipelines.synthetic.truth import true_probability
from propensity.pipelines.synthetic.world import World


def write_world(
    world: World,
    out_dir: Path,
    fmt: Literal["csv", "parquet"] = "parquet",
    truth_as_of: Sequence[dt.date] = (),
    horizon_days: int = 30,
) -> dict[str, Path]:
    """Write a world's tables (and the truth at the given cut-offs) as files.

    Parameters
    ----------
    world : World
        The world to write.
    out_dir : pathlib.Path
        Directory to write into (created if missing).
    fmt : {"csv", "parquet"}
        File format.
    truth_as_of : sequence of date
        Cut-offs for ``truth.<fmt>`` (``contact_id, as_of, horizon_days, true_probability``);
        no truth file when empty.
    horizon_days : int
        Horizon of the truth.

    Returns
    -------
    dict of str to pathlib.Path
        ``events``, ``contacts``, ``outcomes`` (and ``truth``) paths.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {"events": world.events, "contacts": world.contacts, "outcomes": world.outcomes}
    if truth_as_of:
        truth = pd.concat(
            [true_probability(world, a, horizon_days) for a in truth_as_of], ignore_index=True
        )
        truth.insert(2, "horizon_days", np.int64(horizon_days))
        frames["truth"] = truth
    paths = {}
    for name, frame in frames.items():
        path = out_dir / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        paths[name] = path
    return paths
