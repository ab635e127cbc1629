"""Which cut-offs a training set uses, which it leaves out and by which rule: one typed record.

`propensity train`, `tune` and `compare` label, split and purge their rows through
:func:`plan_rows`, so they hold out the same test cut-off and say the same thing about the grid
cut-offs they drop. (A cut-off that vanished without a word once made `train` judge a model on
the previous cut-off and exit 0.) The errors raised here explain themselves: see
``pipelines/training/diagnosis.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import pandas as pd

from propensity.pipelines.training import diagnosis
from propensity.pipelines.training.config import SplitSection, TrainConfig
from propensity.pipelines.training.data_end import (
    DataEnd,
    default_data_end,
    resolve_data_end,
)
from propensity.pipelines.training.labels import (
    cutoff_grid,
    label_spine,
    qualifying_outcomes,
)
from propensity.pipelines.training.splits import (
    SPLITS,
    assign_splits,
    count_split_cutoffs,
    purge_overlaps,
)

__all__ = [
    "DROP_RULES",
    "CutoffFate",
    "CutoffReport",
    "DataEnd",
    "NotEnoughPositives",
    "SplitError",
    "PlannedRows",
    "default_data_end",
    "label_rows",
    "plan_rows",
    "resolve_data_end",
    "split_and_purge",
]

DROP_RULES: dict[str, str] = {
    "no_contacts": "no contact was known yet at this cut-off",
    "window_past_data_end": "its label window closes after data_end",
    "all_converted": "every contact known then had already converted (recurring: false leaves them out)",
    "between_splits": "its label window would run into the next split's first cut-off (the gap the time split leaves)",
    "purged": "its label windows overlap a later split's windows for the same contacts (purged)",
}
"""Rule code -> the words shown for a dropped cut-off."""

SplitError = diagnosis.SplitError
NotEnoughPositives = diagnosis.NotEnoughPositives


@dataclass(frozen=True)
class CutoffFate:
    """What happened to one cut-off.

    ``split`` is set when the cut-off is used (``"train+valid"`` when ``valid_fraction`` holds
    out a share of its contacts); ``dropped_by`` (a key of :data:`DROP_RULES`) when it
    is not. ``rows``/``positives`` are the rows kept; ``lost_rows``/``lost_positives`` the labelled
    rows a split rule dropped with the whole cut-off; ``already_converted`` the rows left out
    because the contact had converted before the cut-off (``recurring: false``).
    """

    as_of: datetime
    label_end: datetime
    spine_rows: int
    split: str | None = None
    rows: int = 0
    positives: int = 0
    dropped_by: str | None = None
    lost_rows: int = 0
    lost_positives: int = 0
    already_converted: int = 0
    keep_with_data_end: datetime | None = None

    @property
    def reason(self) -> str:
        return "" if self.dropped_by is None else DROP_RULES[self.dropped_by]


@dataclass(frozen=True)
class CutoffReport:
    """Every cut-off of a training set's spine and its fate, with the settings that decided them."""

    data_end: DataEnd
    horizon_days: float
    recurring: bool
    split_mode: str  # "count", "dates" or "valid_fraction"
    cutoffs: tuple[CutoffFate, ...]
    contacts: int = 0
    converted_before_first: int = 0
    notes: tuple[str, ...] = ()  # things the user should know although nothing failed

    def used(self, split: str) -> list[datetime]:
        """The cut-offs of ``split`` ("train", "valid", "test"), oldest first."""
        return [c.as_of for c in self.cutoffs if c.split is not None and split in c.split.split("+")]

    @property
    def dropped(self) -> tuple[CutoffFate, ...]:
        return tuple(c for c in self.cutoffs if c.dropped_by is not None)

    def removed(self) -> dict[str, dict[str, int]]:
        """Per rule: how many cut-offs, labelled rows and positives it removed (rows in partly kept
        cut-offs that had already converted count under ``already_converted``)."""
        out: dict[str, dict[str, int]] = {}
        for fate in self.dropped:
            entry = out.setdefault(fate.dropped_by, {"cutoffs": 0, "rows": 0, "positives": 0})
            entry["cutoffs"] += 1
            entry["rows"] += fate.lost_rows if fate.dropped_by in ("between_splits", "purged") else fate.spine_rows
            entry["positives"] += fate.lost_positives
        converted = sum(c.already_converted for c in self.cutoffs if c.dropped_by != "all_converted")
        if converted:
            out["already_converted"] = {"cutoffs": 0, "rows": converted, "positives": 0}
        return out

    @property
    def converted_share(self) -> float:
        """Share of spine contacts with a qualifying outcome before their first cut-off."""
        return self.converted_before_first / self.contacts if self.contacts else 0.0

    def to_dict(self) -> dict:
        """Plain JSON-able form (for run summaries and reports)."""
        return {
            "data_end": self.data_end.value.isoformat(), "data_end_source": self.data_end.source,
            "horizon_days": self.horizon_days, "split_mode": self.split_mode,
            **{name: [f"{c:%Y-%m-%d}" for c in self.used(name)] for name in SPLITS},
            "dropped": [{"as_of": f"{f.as_of:%Y-%m-%d}", "rule": f.dropped_by,
                         **({"keep_with_data_end": f.keep_with_data_end.isoformat()} if f.keep_with_data_end else {})}
                        for f in self.dropped],
        }


@dataclass
class PlannedRows:
    """The labelled rows kept, with their ``split``, and the report of how they were chosen."""

    rows: pd.DataFrame  # contact_id, as_of, label_end, label, split
    report: CutoffReport
    purged_rows: int  # labelled rows a split rule left out


def split_mode(split: SplitSection) -> str:
    if split.valid_fraction is not None:
        return "valid_fraction"
    return "dates" if split.test_from is not None else "count"


def split_and_purge(labelled: pd.DataFrame, split: SplitSection) -> tuple[pd.Series, pd.Series]:
    """``(split, keep)`` of labelled rows: the time split of ``split`` and the purge of overlaps."""
    assigned = assign_splits(
        labelled, valid_from=split.valid_from, test_from=split.test_from,
        valid_cutoffs=split.valid_cutoffs, test_cutoffs=split.test_cutoffs, valid_fraction=split.valid_fraction,
    )
    return assigned, purge_overlaps(labelled, assigned)


def label_rows(spine: pd.DataFrame, outcomes: pd.DataFrame, config: TrainConfig, data_end: DataEnd, *,
               explain: bool = True) -> pd.DataFrame:
    """``label_spine`` with the config's settings; an explained :class:`SplitError` when no row is left."""
    labelled = label_spine(spine, outcomes, config.horizon_days, data_end=data_end.value,
                           recurring=config.recurring, qualifying=config.qualifying_outcomes)
    if labelled.empty:
        if not explain:
            raise diagnosis.SplitError("no spine row can be labelled")
        raise diagnosis.SplitError(diagnosis.explain_nothing_labelled(
            _report(spine, outcomes, labelled, None, None, config, data_end)))
    return labelled


def plan_rows(
    spine: pd.DataFrame,
    outcomes: pd.DataFrame,
    config: TrainConfig,
    data_end: DataEnd,
    *,
    min_positives: int | None = None,
    explain: bool = True,
) -> PlannedRows:
    """Label the spine, split it in time and purge overlaps, recording each cut-off's fate.

    Parameters
    ----------
    spine : DataFrame
        ``contact_id, as_of`` (one row per snapshot, ``as_of`` as ``datetime64[us]``).
    outcomes : DataFrame
        ``contact_id, ts`` (+ ``outcome``).
    config : TrainConfig
        Horizon, ``recurring``, qualifying outcomes, split and grid.
    data_end : DataEnd
    min_positives : int, optional
        Raise :class:`~propensity.pipelines.training.diagnosis.NotEnoughPositives` when the training
        split holds fewer positives (training passes ``config.min_positives``; compare does not).
    explain : bool
        False: raise without a diagnosis (the diagnosis itself plans alternatives this way).

    Raises
    ------
    SplitError
        When no row can be labelled, or a split is left empty; the message shows which rule
        removed what and a fix that works on this data.
    """
    labelled = label_rows(spine, outcomes, config, data_end, explain=explain)
    try:
        assigned, keep = split_and_purge(labelled, config.split)
    except ValueError:
        if split_mode(config.split) != "count":
            raise  # a split config that contradicts itself, said in its own words
        # the count split found no valid or train cut-off: record what it could assign, then explain
        ends = labelled.groupby("as_of")["label_end"].max()
        mapping = count_split_cutoffs(ends, valid_cutoffs=config.split.valid_cutoffs,
                                      test_cutoffs=config.split.test_cutoffs)
        assigned = labelled["as_of"].map(mapping)
        keep = assigned.notna()
    report = _report(spine, outcomes, labelled, assigned, keep, config, data_end)
    empty = [name for name in SPLITS if not report.used(name)]
    if empty:
        raise diagnosis.SplitError(diagnosis.explain_empty_split(report, empty, spine, outcomes, config, min_positives)
                                   if explain else f"empty split: {empty}")
    rows = labelled.assign(split=assigned)[keep.to_numpy()].reset_index(drop=True)
    if min_positives is not None:
        positives = int(rows.loc[rows["split"] == "train", "label"].sum())
        if positives < min_positives:
            raise diagnosis.NotEnoughPositives(
                diagnosis.explain_few_positives(report, min_positives, spine, outcomes, config)
                if explain else f"only {positives} positive(s) in the training split")
    hint = diagnosis.recurring_hint(report) if explain else None
    if hint:
        report = replace(report, notes=(*report.notes, hint))
    return PlannedRows(rows=rows, report=report, purged_rows=int((~keep).sum()))


def _report(spine, outcomes, labelled, assigned, keep, config: TrainConfig, data_end: DataEnd) -> CutoffReport:
    horizon = pd.Timedelta(days=config.horizon_days)
    spine_counts = spine.groupby("as_of").size()
    labelled_counts = labelled.groupby("as_of").size()
    if assigned is not None:
        frame = labelled.assign(split=assigned.astype(object).to_numpy(), keep=keep.to_numpy())
    else:
        frame = labelled.assign(split=None, keep=False)
    grid = []
    if config.grid is not None:
        grid = [pd.Timestamp(c) for c in cutoff_grid(config.grid.first, config.grid.last, config.grid.step_days)]
    # one pass per statistic, not one filter per cut-off: a spine can hold millions of rows
    by_cut = frame.groupby("as_of")
    labelled_positives = by_cut["label"].sum()
    has_split = frame["split"].notna().groupby(frame["as_of"]).any()
    kept = frame[frame["keep"]]
    kept_stats = kept.groupby("as_of").agg(rows=("label", "size"), positives=("label", "sum"))
    kept_splits = kept.groupby("as_of")["split"].agg(lambda s: "+".join(n for n in SPLITS if n in set(s)))
    fates = []
    for as_of in sorted(set(grid) | set(pd.to_datetime(spine_counts.index))):
        as_of = pd.Timestamp(as_of)
        label_end = as_of + horizon
        spine_rows = int(spine_counts.get(as_of, 0))
        base = {"as_of": as_of.to_pydatetime(), "label_end": label_end.to_pydatetime(), "spine_rows": spine_rows}
        if spine_rows == 0:
            fates.append(CutoffFate(**base, dropped_by="no_contacts"))
            continue
        if label_end > pd.Timestamp(data_end.value):
            fates.append(CutoffFate(**base, dropped_by="window_past_data_end",
                                    keep_with_data_end=label_end.to_pydatetime()))
            continue
        labelled_rows = int(labelled_counts.get(as_of, 0))
        converted = spine_rows - labelled_rows
        if labelled_rows == 0:
            fates.append(CutoffFate(**base, dropped_by="all_converted", already_converted=converted))
        elif as_of in kept_stats.index:
            fates.append(CutoffFate(**base, split=kept_splits[as_of], rows=int(kept_stats.at[as_of, "rows"]),
                                    positives=int(kept_stats.at[as_of, "positives"]), already_converted=converted))
        else:
            rule = "purged" if bool(has_split.get(as_of, False)) else "between_splits"
            fates.append(CutoffFate(**base, dropped_by=rule, lost_rows=labelled_rows,
                                    lost_positives=int(labelled_positives.get(as_of, 0)),
                                    already_converted=converted))
    contacts, before = _converted_before_first(spine, outcomes, config)
    return CutoffReport(data_end=data_end, horizon_days=config.horizon_days, recurring=config.recurring,
                        split_mode=split_mode(config.split), cutoffs=tuple(fates), contacts=contacts,
                        converted_before_first=before)


def _converted_before_first(spine: pd.DataFrame, outcomes: pd.DataFrame, config: TrainConfig) -> tuple[int, int]:
    """How many spine contacts there are, and how many had a qualifying outcome before their first cut-off."""
    first_cut = spine.groupby("contact_id")["as_of"].min()
    hits = qualifying_outcomes(outcomes, config.qualifying_outcomes)
    first_hit = hits.groupby("contact_id")["ts"].min()
    joined = first_cut.to_frame("first_cut").join(first_hit.rename("first_hit"), how="left")
    return len(joined), int((joined["first_hit"] < joined["first_cut"]).sum())
