"""Time splits: train on older cut-offs, validate on a later one, test on the latest.

Leakage between splits happens when the same contact's label window in an earlier split
overlaps its window in a later split: the same conversion would be a training label and a test
label at once. We never drop individual contacts to fix that (the contacts that survive would be
exactly the ones that converted early: a biased sample); we drop whole cut-offs instead.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

__all__ = ["SPLITS", "assign_splits", "count_split_cutoffs", "purge_overlaps"]

SPLITS = ("train", "valid", "test")


def assign_splits(
    labelled: pd.DataFrame,
    *,
    valid_from: datetime | None = None,
    test_from: datetime | None = None,
    valid_cutoffs: int = 1,
    test_cutoffs: int = 1,
    valid_fraction: float | None = None,
) -> pd.Series:
    """The split of each row by its ``as_of``.

    With ``valid_fraction`` (for cross-sectional data such as one cut-off per cohort), valid is
    instead a stable, hashed fraction of the *contacts* before the test period, so train keeps
    every earlier cut-off; test is still chosen by time.

    With dates: ``as_of >= test_from`` is test, ``valid_from <= as_of < test_from`` valid, the rest
    train. Without: the latest ``test_cutoffs`` distinct cut-offs are test; valid is the latest
    ``valid_cutoffs`` cut-offs whose label windows (``label_end``) close by the first test cut-off;
    train is every cut-off whose windows close by the first valid cut-off. Cut-offs in the gaps
    (their windows would run into the next split) are left out: their split is NaN.
    """
    as_of = pd.to_datetime(labelled["as_of"])
    if (valid_from is None) != (test_from is None) and valid_fraction is None:
        raise ValueError("give both valid_from and test_from, or neither")
    if valid_fraction is not None:
        if not 0 < valid_fraction < 1:
            raise ValueError("valid_fraction must lie strictly between 0 and 1")
        if test_from is None:
            test_from = sorted(as_of.unique())[-test_cutoffs]
        bucket = pd.util.hash_pandas_object(labelled["contact_id"], index=False).to_numpy() % 10_000
        in_valid = bucket < valid_fraction * 10_000
        split = np.where(as_of >= pd.Timestamp(test_from), "test", np.where(in_valid, "valid", "train"))
        return _categorical(split, labelled.index)
    if test_from is not None:
        if not valid_from < test_from:
            raise ValueError("valid_from must come before test_from")
        split = np.where(as_of >= pd.Timestamp(test_from), "test",
                         np.where(as_of >= pd.Timestamp(valid_from), "valid", "train"))
        return _categorical(split, labelled.index)

    ends = pd.to_datetime(labelled["label_end"]).groupby(as_of).max()
    cuts = list(ends.index)
    if len(cuts) < test_cutoffs + 1:
        raise ValueError(f"a time split needs at least {test_cutoffs + 2} distinct cut-offs; the spine has {len(cuts)}")
    mapping = count_split_cutoffs(ends, valid_cutoffs=valid_cutoffs, test_cutoffs=test_cutoffs)
    if set(mapping.values()) != set(SPLITS):
        raise ValueError(
            f"a time split needs at least {valid_cutoffs + test_cutoffs + 1} distinct cut-offs whose "
            f"label windows do not run into the next split; the spine has {len(cuts)} cut-offs "
            f"({cuts[0]:%Y-%m-%d} .. {cuts[-1]:%Y-%m-%d}): widen the grid or shorten the horizon"
        )
    return _categorical(as_of.map(mapping).to_numpy(dtype=object), labelled.index)


def count_split_cutoffs(ends: pd.Series, *, valid_cutoffs: int = 1, test_cutoffs: int = 1) -> dict:
    """The count-based split of cut-offs: ``{cut-off: split}``, cut-offs in the gaps left out.

    ``ends`` maps each cut-off (sorted index) to the end of its label windows. The latest
    ``test_cutoffs`` are test; valid is the latest ``valid_cutoffs`` whose windows close by the first
    test cut-off; train every cut-off whose windows close by the first valid one. Valid or train may
    come out empty (``assign_splits`` refuses that; diagnosis uses it to try other horizons).
    """
    cuts = list(ends.index)
    test = cuts[-test_cutoffs:]
    valid = [c for c in cuts[:-test_cutoffs] if ends[c] <= test[0]][-valid_cutoffs:]
    train = [c for c in cuts if valid and ends[c] <= valid[0]]
    return {**{c: "train" for c in train}, **{c: "valid" for c in valid}, **{c: "test" for c in test}}


def _categorical(values, index) -> pd.Series:
    return pd.Series(pd.Categorical(values, categories=list(SPLITS), ordered=True), index=index, name="split")


def purge_overlaps(labelled: pd.DataFrame, split: pd.Series) -> pd.Series:
    """False for every row of a cut-off that shares a contact with a later split whose window
    it overlaps, and for rows without a split.

    ``labelled`` needs ``contact_id, as_of, label_end``. Windows ``[as_of, label_end)`` overlap when
    each starts before the other ends. Whole cut-offs go, never single contacts (see the module
    docstring for why).
    """
    frame = labelled[["contact_id", "as_of", "label_end"]].assign(split=split.astype(object))
    keep = frame["split"].notna()
    for earlier, later in (("train", "valid"), ("train", "test"), ("valid", "test")):
        late = frame[frame["split"] == later].groupby("contact_id")["as_of"].min().rename("later_start")
        early = frame[(frame["split"] == earlier) & keep].join(late, on="contact_id")
        overlapping = early["later_start"].notna() & (early["label_end"] > early["later_start"])
        bad_cutoffs = early.loc[overlapping, "as_of"].unique()
        keep &= ~((frame["split"] == earlier) & frame["as_of"].isin(bad_cutoffs))
    return keep
