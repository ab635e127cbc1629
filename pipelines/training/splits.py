"""Time splits: train on older cut-offs, validate on a later one, test on the latest.

A snapshot whose label window overlaps a later split's label window for the same contact is
purged from the earlier split: otherwise the same conversion is a training label and a test
label at once, and the backtest flatters the model.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

__all__ = ["SPLITS", "assign_splits", "purge_overlaps"]

SPLITS = ("train", "valid", "test")


def assign_splits(
    labelled: pd.DataFrame,
    *,
    valid_from: datetime | None = None,
    test_from: datetime | None = None,
    valid_cutoffs: int = 1,
    test_cutoffs: int = 1,
) -> pd.Series:
    """The split of each row by its ``as_of``: by explicit dates, or by counting distinct cut-offs.

    With dates: ``as_of >= test_from`` is test, ``valid_from <= as_of < test_from`` is valid, the rest
    train. Without: the latest ``test_cutoffs`` distinct cut-offs are test, the ``valid_cutoffs``
    before them valid.
    """
    as_of = pd.to_datetime(labelled["as_of"])
    if (valid_from is None) != (test_from is None):
        raise ValueError("give both valid_from and test_from, or neither")
    if test_from is None:
        cuts = np.sort(as_of.unique())
        if len(cuts) < valid_cutoffs + test_cutoffs + 1:
            raise ValueError(
                f"a time split needs at least {valid_cutoffs + test_cutoffs + 1} distinct cut-offs "
                f"(train, valid, test); the spine has {len(cuts)}: add cut-offs to the grid"
            )
        test_from = pd.Timestamp(cuts[-test_cutoffs])
        valid_from = pd.Timestamp(cuts[-test_cutoffs - valid_cutoffs])
    if not valid_from < test_from:
        raise ValueError("valid_from must come before test_from")
    split = np.where(as_of >= pd.Timestamp(test_from), "test",
                     np.where(as_of >= pd.Timestamp(valid_from), "valid", "train"))
    return pd.Series(pd.Categorical(split, categories=list(SPLITS), ordered=True), index=labelled.index, name="split")


def purge_overlaps(labelled: pd.DataFrame, split: pd.Series) -> pd.Series:
    """False for rows whose label window overlaps a later split's window for the same contact.

    ``labelled`` needs ``contact_id, as_of, label_end``. Windows ``[as_of, label_end)`` overlap when
    each starts before the other ends.
    """
    keep = pd.Series(True, index=labelled.index)
    frame = labelled[["contact_id", "as_of", "label_end"]].assign(split=split.astype(str))
    for earlier, later in (("train", "valid"), ("train", "test"), ("valid", "test")):
        late = frame[frame["split"] == later].groupby("contact_id")["as_of"].min().rename("later_start")
        early = frame[frame["split"] == earlier].join(late, on="contact_id")
        overlapping = early["later_start"].notna() & (early["label_end"] > early["later_start"])
        keep.loc[early.index[overlapping.to_numpy()]] = False
    return keep
