"""Why a training split cannot be made, in numbers, with fixes tried on the same data first.

Pure: the :class:`~propensity.pipelines.training.cutoffs.CutoffReport` of a failed plan (and the
spine and outcomes it came from) in, a message out. Every horizon or split offered as a fix is
planned again on the same rows before it is offered: messages that advised "a longer
horizon_days" where a longer horizon purges more, or blamed "the data's end" when every contact had
simply converted already, sent users the wrong way.
"""

from __future__ import annotations

import math

import pandas as pd

from propensity.pipelines.training.config import SplitSection, TrainConfig
from propensity.pipelines.training.splits import SPLITS, count_split_cutoffs

__all__ = [
    "NotEnoughPositives",
    "SplitError",
    "explain_empty_split",
    "explain_few_positives",
    "explain_nothing_labelled",
    "recurring_hint",
    "removed_lines",
]

# verifying a fix re-plans the whole spine; a handful is enough to find one that works
_MAX_TRIES = 6


class SplitError(ValueError):
    """No honest train / valid / test split; the message shows the arithmetic and a fix that works."""


class NotEnoughPositives(SplitError):
    """Too few conversions in the training split to learn anything honest."""


def _d(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def _span(dates) -> str:
    dates = sorted(dates)
    if not dates:
        return "none"
    if len(dates) <= 3:
        return ", ".join(_d(d) for d in dates)
    return f"{_d(dates[0])} .. {_d(dates[-1])}"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def removed_lines(report) -> list[str]:
    """One line per rule that removed cut-offs or rows: how many, which, and what it cost."""
    horizon = f"{report.horizon_days:g}-day"
    lines = []
    by_rule: dict[str, list] = {}
    for fate in report.dropped:
        by_rule.setdefault(fate.dropped_by, []).append(fate)
    if "no_contacts" in by_rule:
        fates = by_rule["no_contacts"]
        lines.append(f"- {_plural(len(fates), 'grid cut-off')} ({_span(f.as_of for f in fates)}): no contact known yet")
    if "window_past_data_end" in by_rule:
        fates = by_rule["window_past_data_end"]
        rows = sum(f.spine_rows for f in fates)
        keep = min(f.keep_with_data_end for f in fates)
        lines.append(
            f"- {_plural(len(fates), 'cut-off')} ({_span(f.as_of for f in fates)}, {rows:,} rows): their {horizon} label "
            f"windows close after {_d(report.data_end.value)}; a data_end of {keep:%Y-%m-%d %H:%M} or later would keep "
            f"{_d(min(f.as_of for f in fates))}"
        )
    if "all_converted" in by_rule:
        fates = by_rule["all_converted"]
        rows = sum(f.spine_rows for f in fates)
        lines.append(f"- {_plural(len(fates), 'cut-off')} ({_span(f.as_of for f in fates)}, {rows:,} rows): every contact "
                     "known then had already converted (recurring: false counts a first conversion only)")
    partly = sum(f.already_converted for f in report.cutoffs if f.dropped_by != "all_converted")
    if partly:
        lines.append(f"- {partly:,} rows: the contact had already converted before that cut-off (recurring: false)")
    if "between_splits" in by_rule:
        fates = by_rule["between_splits"]
        lines.append(
            f"- {_plural(len(fates), 'cut-off')} ({_span(f.as_of for f in fates)}, {sum(f.lost_rows for f in fates):,} rows, "
            f"{sum(f.lost_positives for f in fates):,} positives) between splits: their {horizon} windows would close "
            "after the next split's first cut-off"
        )
    if "purged" in by_rule:
        fates = by_rule["purged"]
        lines.append(
            f"- {_plural(len(fates), 'cut-off')} ({_span(f.as_of for f in fates)}, {sum(f.lost_rows for f in fates):,} rows, "
            f"{sum(f.lost_positives for f in fates):,} positives) purged: the same contacts are in a later split whose "
            f"window their {horizon} windows overlap"
        )
    return lines


def recurring_hint(report, *, always: bool = False) -> str | None:
    """The ``recurring: true`` advice when most contacts converted before their first cut-off.

    With ``always``, the count is given (without the advice) even for a minority.
    """
    if report.recurring or not report.converted_before_first:
        return None
    share = report.converted_share
    text = (f"{report.converted_before_first:,} of {report.contacts:,} contacts ({share:.0%}) had an outcome before "
            "their first cut-off; with recurring: false a contact counts only until its first conversion, so "
            "they are left out of every cut-off")
    if share >= 0.5:
        return text + (". If these outcomes repeat (purchases, renewals), set recurring: true: any outcome in the "
                       "window is then a positive and no contact is left out for its history")
    return text if always else None


def _labelled_cutoffs(report) -> list[pd.Timestamp]:
    return [pd.Timestamp(f.as_of) for f in report.cutoffs
            if f.dropped_by not in ("no_contacts", "window_past_data_end", "all_converted")]


def _candidate_cutoffs(report) -> list[pd.Timestamp]:
    # cut-offs with contacts not yet converted; a shorter horizon may label the ones past data_end
    return [pd.Timestamp(f.as_of) for f in report.cutoffs if f.dropped_by not in ("no_contacts", "all_converted")]


def cutoff_split(cutoffs, horizon_days: float, data_end, split: SplitSection) -> dict[str, list] | None:
    """The split of cut-off dates alone for ``horizon_days``, or None when a split is empty.

    Conservative about purging: it assumes every contact appears again in the later splits, so a
    cut-off is kept only when its windows close by the next split's start (what ``purge_overlaps``
    keeps for repeat contacts). Used only to pick horizons worth trying.
    """
    horizon = pd.Timedelta(days=horizon_days)
    cuts = sorted(c for c in cutoffs if c + horizon <= pd.Timestamp(data_end))
    if not cuts:
        return None
    if split.valid_fraction is not None:
        if split.test_from is not None:
            test_from = pd.Timestamp(split.test_from)
        else:
            test_from = cuts[-min(split.test_cutoffs, len(cuts))]
        test = [c for c in cuts if c >= test_from]
        before = [c for c in cuts if c < test_from and c + horizon <= test_from]
        groups = {"train": before, "valid": before, "test": test}
    elif split.test_from is not None:
        test_from, valid_from = pd.Timestamp(split.test_from), pd.Timestamp(split.valid_from)
        groups = {"train": [c for c in cuts if c < valid_from and c + horizon <= valid_from],
                  "valid": [c for c in cuts if valid_from <= c < test_from and c + horizon <= test_from],
                  "test": [c for c in cuts if c >= test_from]}
    else:
        mapping = count_split_cutoffs(pd.Series([c + horizon for c in cuts], index=cuts),
                                      valid_cutoffs=split.valid_cutoffs, test_cutoffs=split.test_cutoffs)
        groups = {name: [c for c, s in mapping.items() if s == name] for name in SPLITS}
    return groups if all(groups.values()) else None


def _try(spine, outcomes, config: TrainConfig, data_end, min_positives: int | None, **update) -> dict | None:
    """Plan again with ``update`` applied to the config; the outcome in numbers, or None if it fails."""
    from propensity.pipelines.training.cutoffs import plan_rows

    candidate = config.model_copy(update=update)
    try:
        planned = plan_rows(spine, outcomes, candidate, data_end, min_positives=min_positives, explain=False)
    except SplitError:
        return None
    report = planned.report
    train = planned.rows[planned.rows["split"] == "train"]
    return {"train_cutoffs": len(report.used("train")), "train_positives": int(train["label"].sum()),
            "valid_cutoffs": len(report.used("valid")), "test": report.used("test")}


def _outcome(result: dict) -> str:
    return (f"train {_plural(result['train_cutoffs'], 'cut-off')} with {result['train_positives']:,} positives, "
            f"valid {result['valid_cutoffs']}, test {_span(result['test'])}")


def _horizon_fixes(report, spine, outcomes, config, min_positives, *, below: float, more_train_than: int = 0,
                   split: SplitSection | None = None) -> tuple[int, dict] | None:
    """The longest whole-day horizon under ``below`` that plans (and reaches ``min_positives``)."""
    split = split or config.split
    candidates = _candidate_cutoffs(report)
    tries = 0
    for days in range(math.ceil(below) - 1, 0, -1):
        groups = cutoff_split(candidates, days, report.data_end.value, split)
        if groups is None or len(groups["train"]) <= more_train_than:
            continue
        result = _try(spine, outcomes, config, report.data_end, min_positives, horizon_days=float(days), split=split)
        if result is not None:
            return days, result
        tries += 1
        if tries >= _MAX_TRIES:
            return None
    return None


def _split_arithmetic(report, config: TrainConfig) -> list[str]:
    """How much history this horizon and split need before the test cut-off, against what there is."""
    horizon = pd.Timedelta(days=report.horizon_days)
    h = f"{report.horizon_days:g}"
    cuts = _labelled_cutoffs(report)
    split = config.split
    if not cuts:
        return []
    lines = [f"- {_plural(len(cuts), 'cut-off')} can be labelled ({_span(cuts)}): their {h}-day windows close by "
             f"data_end {_d(report.data_end.value)}"]
    if split.valid_fraction is None and split.test_from is None:
        test = cuts[-split.test_cutoffs:]
        lines.append(f"- test: the latest {_plural(split.test_cutoffs, 'cut-off')}, {_span(test)}")
        valid_by = test[0] - horizon
        valid = [c for c in cuts[:-split.test_cutoffs] if c <= valid_by][-split.valid_cutoffs:]
        lines.append(f"- valid: {_plural(split.valid_cutoffs, 'cut-off')} whose window closes by the test cut-off, so on "
                     f"or before {_d(test[0])} - {h} days = {_d(valid_by)}: found {_span(valid)}")
        step = pd.Timedelta(days=config.grid.step_days) if config.grid is not None else (
            pd.Series(cuts).diff().median() if len(cuts) > 1 else pd.Timedelta(0))
        first_valid = valid[0] if valid else valid_by - (split.valid_cutoffs - 1) * step
        train_by = first_valid - horizon
        train = [c for c in cuts if c <= train_by]
        lines.append(f"- train: cut-offs whose windows close by the first valid cut-off, so on or before "
                     f"{_d(first_valid)} - {h} days = {_d(train_by)}: found {_span(train)}")
        minimum = f"2 x {h} days" + (f" + {split.valid_cutoffs - 1} x the step" if split.valid_cutoffs > 1 else "")
        lines.append(f"- so horizon_days {h} with this split needs a training cut-off {(test[0] - train_by).days} days "
                     f"before the test cut-off (at least {minimum}); the labelled cut-offs start "
                     f"{(test[0] - cuts[0]).days} days before it")
    elif split.valid_fraction is not None:
        test_from = pd.Timestamp(split.test_from) if split.test_from else cuts[-min(split.test_cutoffs, len(cuts))]
        before = [c for c in cuts if c < test_from]
        lines.append(f"- test: cut-offs from {_d(test_from)}; train and valid ({split.valid_fraction:.0%} of the "
                     f"contacts): the {_plural(len(before), 'cut-off')} before it ({_span(before)})")
        lines.append(f"- a contact seen again at the test cut-off keeps an earlier cut-off only when its {h}-day window "
                     f"closes by {_d(test_from)}, i.e. the cut-off is on or before {_d(test_from - horizon)}")
    else:
        test_from, valid_from = pd.Timestamp(split.test_from), pd.Timestamp(split.valid_from)
        lines.append(f"- test from {_d(test_from)}; valid from {_d(valid_from)} with windows closing by then "
                     f"(on or before {_d(test_from - horizon)}); train before {_d(valid_from)} with windows closing by "
                     f"it (on or before {_d(valid_from - horizon)}) for contacts seen again later")
    return lines


def _no_training_cutoff_at_all(report) -> str | None:
    """The words for a horizon that leaves no honest training cut-off under any split."""
    lenient = SplitSection(valid_fraction=0.5)
    if cutoff_split(_candidate_cutoffs(report), report.horizon_days, report.data_end.value, lenient) is not None:
        return None
    cuts = _candidate_cutoffs(report)
    h = f"{report.horizon_days:g}"
    span = (pd.Timestamp(report.data_end.value) - min(cuts)).days if cuts else 0
    return (f"with {h}-day labels no cut-off can be an honest training cut-off under any split: a training window "
            f"must close by the test cut-off and the test window by data_end, so {h} days of labels need 2 x {h} = "
            f"{2 * report.horizon_days:g} days from the first cut-off to data_end; this spine has {span} "
            f"({_d(min(cuts)) if cuts else '-'} .. {_d(report.data_end.value)})")


def explain_nothing_labelled(report) -> str:
    """No spine row survived labelling: which rule removed them, and what to change."""
    h = f"{report.horizon_days:g}"
    lines = [f"no spine row can be labelled honestly (horizon_days {h}, recurring: {str(report.recurring).lower()}, "
             f"{report.data_end.describe()}):", *removed_lines(report)]
    rules = {f.dropped_by for f in report.dropped}
    hint = recurring_hint(report, always=True)
    if "all_converted" in rules or report.converted_share >= 0.5:
        lines.append(f"the cause: {hint}" if hint else "the cause: contacts had already converted")
    if "window_past_data_end" in rules:
        cuts = [pd.Timestamp(f.as_of) for f in report.cutoffs if f.dropped_by != "no_contacts"]
        latest = pd.Timestamp(report.data_end.value) - pd.Timedelta(days=report.horizon_days)
        longest = (pd.Timestamp(report.data_end.value) - min(cuts)).days if cuts else 0
        lines.append(f"a {h}-day window closes by data_end only for a cut-off on or before {_d(latest)}: end the grid "
                     f"by then, or use horizon_days {longest} or less, or set data_end if the data really runs later")
    return "\n".join(lines)


def explain_empty_split(report, empty: list[str], spine, outcomes, config: TrainConfig,
                        min_positives: int | None = None) -> str:
    """A split came out empty: the arithmetic, what each rule removed, and fixes that plan."""
    h = f"{report.horizon_days:g}"
    split = config.split
    if report.split_mode == "valid_fraction":
        mode = f"valid_fraction {split.valid_fraction:g}"
    elif report.split_mode == "dates":
        mode = f"valid_from {_d(split.valid_from)}, test_from {_d(split.test_from)}"
    else:
        mode = f"valid_cutoffs {split.valid_cutoffs}, test_cutoffs {split.test_cutoffs}"
    lines = [f"no honest time split: the {' and '.join(empty)} split would be empty with horizon_days {h} and "
             f"split ({mode}); {report.data_end.describe()}:", *_split_arithmetic(report, config),
             "what each rule removed:", *removed_lines(report)]
    never = _no_training_cutoff_at_all(report)
    if never:
        lines.append(never)
    fixes = []
    found = _horizon_fixes(report, spine, outcomes, config, min_positives, below=report.horizon_days)
    if found:
        days, result = found
        fixes.append(f"horizon_days: {days} (the longest whole-day horizon that leaves honest train, valid and test "
                     f"cut-offs here): {_outcome(result)}")
    if report.split_mode != "valid_fraction":
        fraction = SplitSection(valid_fraction=0.2, test_cutoffs=config.split.test_cutoffs)
        result = _try(spine, outcomes, config, report.data_end, min_positives, split=fraction)
        if result is not None:
            fixes.append(f"split: {{valid_fraction: 0.2}} (valid becomes a share of the contacts, so train needs only "
                         f"{h} days before the test cut-off): {_outcome(result)}")
        elif not found or found[0] < report.horizon_days - 1:
            longer = _horizon_fixes(report, spine, outcomes, config, min_positives, below=report.horizon_days,
                                    split=fraction)
            if longer and (not found or longer[0] > found[0]):
                fixes.append(f"split: {{valid_fraction: 0.2}} with horizon_days: {longer[0]}: {_outcome(longer[1])}")
    if report.split_mode == "count" and config.grid is not None and report.data_end.start is not None:
        cuts = _labelled_cutoffs(report)
        if cuts:
            need = cuts[-config.split.test_cutoffs] - 2 * pd.Timedelta(days=report.horizon_days)
            if need >= pd.Timestamp(report.data_end.start):
                fixes.append(f"grid.first on or before {_d(need)} (the events start {_d(report.data_end.start)}, so "
                             "contacts have history there; not tried: it needs a new spine)")
    hint = recurring_hint(report)
    if hint:
        fixes.append(hint)
    lines.append("fixes that work on this data:" if fixes else
                 "no shorter horizon or other split gives an honest split on this data: it needs more history")
    lines.extend(f"- {fix}" for fix in fixes)
    return "\n".join(lines)


def explain_few_positives(report, min_positives: int, spine, outcomes, config: TrainConfig) -> str:
    """Too few training positives: what the rules removed, and the fixes that reach ``min_positives``."""
    train = [f for f in report.cutoffs if f.split is not None and "train" in f.split.split("+")]
    rows = sum(f.rows for f in train)
    positives = sum(f.positives for f in train)
    h = f"{report.horizon_days:g}"
    # one line: the first sentence is what a log shows (and what callers match on)
    lines = [f"only {positives:,} positive(s) in the training split ({rows:,} rows at "
             f"{_plural(len(train), 'cut-off')}, {_span(f.as_of for f in train)}); at least {min_positives} are needed. "
             "Add cut-offs (an earlier grid.first or a smaller step_days), more outcomes, or lower min_positives "
             f"knowingly. {report.data_end.describe()}.", "what each rule removed:", *removed_lines(report)]
    split_loss = [f for f in report.dropped if f.dropped_by in ("between_splits", "purged")]
    lost = sum(f.lost_positives for f in split_loss)
    if lost:
        lines.append(f"the split rules removed {lost:,} labelled positives at {_plural(len(split_loss), 'cut-off')} whose "
                     f"{h}-day windows run into a later split: a longer horizon_days widens those windows and removes more")
    fixes = []
    current = len(_labelled_train(report))
    found = _horizon_fixes(report, spine, outcomes, config, min_positives, below=report.horizon_days,
                           more_train_than=current)
    if found:
        fixes.append(f"horizon_days: {found[0]} (the longest shorter horizon that reaches {min_positives} training "
                     f"positives): {_outcome(found[1])}")
    if report.split_mode == "count":
        result = _try(spine, outcomes, config, report.data_end, min_positives,
                      split=SplitSection(valid_fraction=0.2, test_cutoffs=config.split.test_cutoffs))
        if result is not None:
            fixes.append(f"split: {{valid_fraction: 0.2}} (no cut-offs lost to a valid window): {_outcome(result)}")
    if not lost:
        for factor in (1.5, 2.0):
            days = math.floor(report.horizon_days * factor)
            result = _try(spine, outcomes, config, report.data_end, min_positives, horizon_days=float(days))
            if result is not None:
                fixes.append(f"horizon_days: {days} (more positives per row): {_outcome(result)}")
                break
    hint = recurring_hint(report)
    if hint:
        fixes.append(hint)
    if fixes:
        lines.append("fixes that work on this data:")
        lines.extend(f"- {fix}" for fix in fixes)
    else:
        lines.append("no other horizon_days or split tried here reaches it: it needs more outcomes or cut-offs")
    return "\n".join(lines)


def _labelled_train(report) -> list:
    return report.used("train")
