"""A starter project from the user's own data: what ``propensity init`` writes.

Three steps, the middle one pure:

1. :func:`profile_data` reads the ingested tables (one SQL pass each): the time span, every event
   type with its volume, reach and first/last sighting, how often a contact comes back (cadence),
   the outcome types and how often a contact has more than one.
2. :func:`plan_project` turns that profile and the wanted horizon into choices: a cut-off grid
   whose every label window closes by the data's end, a split that leaves honest training cut-offs
   (time split, else a hashed contact fraction for valid, else a shorter horizon, said so), windows
   and half-lives scaled to the cadence and the horizon, one-time or recurring outcomes.
3. :func:`render_files` writes those choices as commented YAML (``rules.yaml``, ``features.yaml``,
   ``train.yaml``) that the usual loaders validate, so a starter file is never one the commands
   would refuse; each choice carries its reason in a comment.

The starter rules give every event type the same points on purpose: weights are what ``train``
learns and ``tune`` proposes from outcomes, and weighting them here from the outcomes would let the
rules see the test period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import ibis
import pandas as pd

__all__ = [
    "DataProfile",
    "EventTypeProfile",
    "OutcomeProfile",
    "StarterPlan",
    "plan_project",
    "profile_data",
    "render_files",
    "StarterExistsError",
    "STARTER_FILES",
    "check_writable",
    "split_preview",
    "write_files",
]

# A contact needs some history before its first cut-off; a quarter of the span, within these bounds.
MIN_HISTORY_DAYS, MAX_HISTORY_DAYS = 14, 90
# Fewer training cut-offs than this and the time split is not worth it: valid becomes a contact fraction.
MIN_TRAIN_CUTOFFS = 3
VALID_FRACTION = 0.2
# Contacts with more than one outcome, as a share of those with any: above this, outcomes recur.
RECURRING_SHARE = 0.2
STARTER_POINTS = 10
NEGATIVE_HINTS = ("unsub", "bounce", "churn", "cancel", "complain", "spam", "opt_out", "optout", "delete")


@dataclass(frozen=True)
class EventTypeProfile:
    name: str
    events: int
    contacts: int
    share_of_contacts: float
    first_seen: datetime
    last_seen: datetime
    mean_value: float


@dataclass(frozen=True)
class OutcomeProfile:
    outcome: str | None
    outcomes: int
    contacts: int


@dataclass(frozen=True)
class DataProfile:
    """What the data looks like, measured (:func:`profile_data`)."""

    contacts: int
    events: int
    first_event: datetime
    last_event: datetime
    last_outcome: datetime | None
    event_types: tuple[EventTypeProfile, ...]
    outcomes: tuple[OutcomeProfile, ...]
    contacts_with_outcome: int
    contacts_with_repeat_outcome: int
    median_active_gap_days: float  # median over contacts of the mean gap between their active days
    expected_after_latest: float | None = None  # events a day after the latest time of day, the days before

    @property
    def data_end_record(self):
        """Training's own default ``data_end`` (``training.data_end``: the midnight after the latest
        event or outcome, or the minute after it when the last day was cut short), with its reason."""
        from propensity.pipelines.training.data_end import DataEnd, default_data_end

        latest = max(t for t in (self.last_event, self.last_outcome) if t is not None)
        return DataEnd(value=default_data_end(latest, self.expected_after_latest), source="default",
                       latest=latest, start=self.first_event, expected_after=self.expected_after_latest)

    @property
    def data_end(self) -> datetime:
        return self.data_end_record.value

    @property
    def span_days(self) -> float:
        return (self.data_end - pd.Timestamp(self.first_event).normalize().to_pydatetime()).total_seconds() / 86400


@dataclass(frozen=True)
class StarterPlan:
    """Every choice ``init`` makes, each with the reason printed beside it in the YAML."""

    profile: DataProfile
    horizon_days: int
    horizon_note: str
    recurring: bool
    recurring_note: str
    grid_first: datetime
    grid_last: datetime
    step_days: int
    split: dict
    split_note: str
    windows_days: tuple[int, ...]
    half_lives_days: tuple[float, ...]
    cadence_note: str
    notes: list[str] = field(default_factory=list)


def profile_data(con) -> DataProfile:
    """Measure the workspace's ``events``, ``outcomes`` and ``contacts`` (a DuckDB connection)."""
    from propensity.pipelines.training.data_end import events_after_time_of_day

    def frame(sql: str) -> pd.DataFrame:
        return con.execute(sql).df()

    totals = frame("SELECT count(*) AS n, count(DISTINCT contact_id) AS c, min(ts) AS lo, max(ts) AS hi FROM events")
    if int(totals.n[0]) == 0:
        raise ValueError("no events to look at: give --events FILE (CSV, Parquet, JSON Lines or Segment JSONL)")
    known = int(frame("SELECT count(DISTINCT contact_id) AS c FROM "
                      "(SELECT contact_id FROM events UNION SELECT contact_id FROM contacts)").c[0])
    types = frame("""
        SELECT event_type, count(*) AS events, count(DISTINCT contact_id) AS contacts,
               min(ts) AS first_seen, max(ts) AS last_seen, avg(value) AS mean_value
        FROM events GROUP BY event_type ORDER BY events DESC, event_type""")
    gaps = frame("""
        WITH days AS (SELECT DISTINCT contact_id, CAST(ts AS DATE) AS d FROM events),
        per AS (SELECT contact_id, (max(d) - min(d)) / nullif(count(*) - 1, 0) AS gap FROM days GROUP BY contact_id)
        SELECT median(gap) AS gap FROM per WHERE gap IS NOT NULL""")
    outcomes = frame("SELECT outcome, count(*) AS n, count(DISTINCT contact_id) AS c FROM outcomes "
                     "GROUP BY outcome ORDER BY n DESC")
    per_contact = frame("SELECT count(*) AS with_any, count(*) FILTER (WHERE n > 1) AS repeat, max(hi) AS hi FROM "
                        "(SELECT contact_id, count(*) AS n, max(ts) AS hi FROM outcomes GROUP BY contact_id)")
    gap = gaps.gap[0]
    last_outcome = per_contact.hi[0]
    latest = max(pd.Timestamp(t) for t in (totals.hi[0], last_outcome) if not pd.isna(t)).to_pydatetime()
    expected = events_after_time_of_day(ibis.duckdb.from_connection(con).table("events"), latest, totals.lo[0])
    return DataProfile(
        contacts=known,
        events=int(totals.n[0]),
        first_event=pd.Timestamp(totals.lo[0]).to_pydatetime(),
        last_event=pd.Timestamp(totals.hi[0]).to_pydatetime(),
        last_outcome=None if pd.isna(last_outcome) else pd.Timestamp(last_outcome).to_pydatetime(),
        event_types=tuple(
            EventTypeProfile(row.event_type, int(row.events), int(row.contacts), row.contacts / known,
                             pd.Timestamp(row.first_seen).to_pydatetime(), pd.Timestamp(row.last_seen).to_pydatetime(),
                             float(row.mean_value))
            for row in types.itertuples()
        ),
        outcomes=tuple(OutcomeProfile(None if pd.isna(r.outcome) else str(r.outcome), int(r.n), int(r.c))
                       for r in outcomes.itertuples()),
        contacts_with_outcome=int(per_contact.with_any[0]),
        contacts_with_repeat_outcome=int(per_contact.repeat[0]),
        median_active_gap_days=float(gap) if gap is not None and not pd.isna(gap) else float("nan"),
        expected_after_latest=expected,
    )


def _nice_days(days: float, choices: tuple[int, ...]) -> int:
    """The nearest of ``choices`` (on a log scale): windows people read at a glance."""
    return min(choices, key=lambda c: abs(math.log(c) - math.log(max(days, 1.0))))


def _step_days(horizon_days: float) -> int:
    """Weekly cut-offs up to a 60-day horizon, then about four per horizon."""
    return 7 if horizon_days <= 60 else _nice_days(horizon_days / 4, (7, 14, 21, 30, 60, 90))


NICE_DAYS = (1, 2, 3, 7, 14, 21, 30, 60, 90, 120, 180, 270, 365, 540, 730)


def plan_project(profile: DataProfile, horizon_days: int | None = None) -> StarterPlan:
    """Choose grid, split, horizon, recurrence, windows and half-lives for ``profile`` (pure)."""
    notes: list[str] = []
    span = profile.span_days
    history = min(MAX_HISTORY_DAYS, max(MIN_HISTORY_DAYS, span / 4))
    usable = span - history  # days between the first possible cut-off and the data's end

    if horizon_days is None:
        horizon_days = 30 if usable >= 120 else max(1, int(usable // 4))
        horizon_note = f"default: 30 days when the data allows (here {span:.0f} days of data)"
    else:
        horizon_note = "as asked (--horizon)"
    # Honest splits need the test window, the valid window before it and training cut-offs before
    # that: a time split needs usable >= 3 horizons, a contact-fraction split 2.
    # less one grid step: the grid is anchored at the test cut-off, so its first cut-off can fall up
    # to a step after the earliest one the arithmetic allows
    longest_any = int((usable - _step_days(usable / 2)) // 2)
    if horizon_days > longest_any:
        if longest_any < 1:
            raise ValueError(
                f"{span:.0f} days of data leave no honest cut-off: the first {history:.0f} days are history "
                "for the first cut-off, and a label window must fit after it twice (training, then test)"
            )
        notes.append(
            f"the asked horizon of {horizon_days} days leaves no honest training cut-off in {span:.0f} days of data "
            f"({history:.0f} days of history first, then the training and the test label windows); "
            f"using {longest_any} days, the longest that does. A ranking learned on a shorter horizon can still be "
            f"judged on the longer one later, once more data exists."
        )
        horizon_note = f"shortened from {horizon_days} days (see the note above)"
        horizon_days = longest_any

    step = _step_days(horizon_days)
    data_end = profile.data_end
    # a data end that is not midnight (cut short) puts the test cut-off on the midnight before, so
    # the grid stays on whole days and its window still closes by data_end
    test_cut = pd.Timestamp(data_end - timedelta(days=horizon_days)).floor("D").to_pydatetime()
    first_allowed = pd.Timestamp(profile.first_event).normalize().to_pydatetime() + timedelta(days=math.ceil(history))
    n_steps = max(0, int((test_cut - first_allowed).total_seconds() // 86400 // step))
    cuts = [test_cut - timedelta(days=k * step) for k in range(n_steps, -1, -1)]
    horizon = timedelta(days=horizon_days)
    # the same rule as training's time split: valid closes by test, train closes by valid
    valid = [c for c in cuts[:-1] if c + horizon <= test_cut][-1:]
    train_cutoffs = [c for c in cuts if valid and c + horizon <= valid[0]]
    if len(train_cutoffs) >= MIN_TRAIN_CUTOFFS:
        split = {"valid_cutoffs": 1, "test_cutoffs": 1}
        split_note = (f"time split: test = the last cut-off ({test_cut:%Y-%m-%d}), valid = {valid[0]:%Y-%m-%d} "
                      f"(the latest whose window closes by test), train = {len(train_cutoffs)} cut-offs "
                      f"{train_cutoffs[0]:%Y-%m-%d} .. {train_cutoffs[-1]:%Y-%m-%d} (windows close by valid)")
    else:
        split = {"test_cutoffs": 1, "valid_fraction": VALID_FRACTION}
        split_note = (f"too little time for {MIN_TRAIN_CUTOFFS}+ training cut-offs, then valid, then test, windows one "
                      f"after another; valid is {VALID_FRACTION:.0%} of the contacts (a stable hash) at the "
                      f"cut-offs before test")
    grid_first = cuts[0]

    repeat_share = profile.contacts_with_repeat_outcome / max(profile.contacts_with_outcome, 1)
    recurring = repeat_share >= RECURRING_SHARE
    recurring_note = (
        f"{profile.contacts_with_repeat_outcome:,} of {profile.contacts_with_outcome:,} contacts with an outcome "
        f"have more than one ({repeat_share:.0%}): "
        + ("outcomes recur (repeat purchases, renewals): label = any outcome in the window"
           if recurring else "one-time conversions: contacts who converted before a cut-off leave the spine")
    )

    gap = profile.median_active_gap_days
    cadence = 7.0 if math.isnan(gap) else gap
    short = _nice_days(max(cadence, 1), NICE_DAYS)
    windows = sorted({short, _nice_days(max(horizon_days, short * 2), NICE_DAYS),
                      _nice_days(min(max(horizon_days * 3, short * 4), max(span, short)), NICE_DAYS)})
    half_lives = sorted({float(_nice_days(max(cadence, 1), NICE_DAYS)), float(_nice_days(horizon_days, NICE_DAYS))})
    cadence_note = (f"contacts come back every {cadence:.1f} days (median): windows and half-lives span that "
                    f"cadence up to about three horizons")
    return StarterPlan(
        profile=profile, horizon_days=int(horizon_days), horizon_note=horizon_note, recurring=recurring,
        recurring_note=recurring_note, grid_first=grid_first, grid_last=test_cut, step_days=step, split=split,
        split_note=split_note, windows_days=tuple(windows), half_lives_days=tuple(half_lives),
        cadence_note=cadence_note, notes=notes,
    )


def _yaml_str(text: str) -> str:
    """A YAML scalar for ``text`` (quoted when plain style would change it)."""
    import yaml

    return yaml.safe_dump(text, default_style=None).strip().removesuffix("\n...").removesuffix("...").strip()


def _rules_yaml(plan: StarterPlan, name: str) -> str:
    profile = plan.profile
    longest = max(plan.windows_days)
    half_life = plan.half_lives_days[-1]  # the longest: about the horizon
    lines = [
        "# Starter rules written by `propensity init` from the data: one rule per event type, each worth the",
        f"# same {STARTER_POINTS} points until you review them. Weights are what `propensity train` learns and",
        "# `propensity tune` proposes from outcomes; weighting them here from the outcomes would let the rules",
        "# see the test period. Names with an unsubscribe / bounce / churn hint start negative.",
        f"# Decay: half-life {half_life:g} days (the horizon); events older than {longest} days count nothing.",
        f"name: {_yaml_str(name)}",
        "description: Starter rules from propensity init (review the points)",
        "activities:",
    ]
    used: set[str] = set()
    for t in profile.event_types:
        rule = _rule_name(t.name)
        while rule in used:  # two event names can share a safe name ("Page View", "page_view")
            rule += "_2"
        used.add(rule)
        negative = any(hint in t.name.lower().replace(" ", "_") for hint in NEGATIVE_HINTS)
        points = -2 * STARTER_POINTS if negative else STARTER_POINTS
        lines += [
            f"  # {t.events:,} events by {t.contacts:,} contacts ({t.share_of_contacts:.0%} of contacts), "
            f"seen {t.first_seen:%Y-%m-%d} .. {t.last_seen:%Y-%m-%d}",
            f"  - name: {_yaml_str(rule)}",
            f"    event: {_yaml_str(t.name)}",
            f"    points: {points}",
            f"    half_life_days: {half_life:g}",
            f"    expires_after_days: {longest}",
        ]
        if not negative:
            lines.append(f"    cap: {STARTER_POINTS * 5}")
    lines += [
        "# The 0-5 score: total points -> score, piecewise linear (review with `propensity score`).",
        f"scale: {{0: 0, {STARTER_POINTS}: 1, {STARTER_POINTS * 3}: 2, {STARTER_POINTS * 6}: 3, "
        f"{STARTER_POINTS * 10}: 4, {STARTER_POINTS * 20}: 5}}",
        "bands:",
        "  - {name: cold, min_score: 0}",
        "  - {name: warm, min_score: 2}",
        "  - {name: hot, min_score: 3.5}",
    ]
    return "\n".join(lines) + "\n"


def _rule_name(event_type: str) -> str:
    from propensity.features.build import safe_name

    return safe_name(event_type)


def _features_yaml(plan: StarterPlan) -> str:
    value_types = [t.name for t in plan.profile.event_types if abs(t.mean_value - 1.0) > 1e-9]
    return "\n".join([
        "# Feature config written by `propensity init` (every key is a FeatureConfig field).",
        f"# {plan.cadence_note}; horizon {plan.horizon_days} days.",
        f"windows_days: [{', '.join(str(w) for w in plan.windows_days)}]",
        f"half_lives_days: [{', '.join(f'{h:g}' for h in plan.half_lives_days)}]",
        "# event types whose values are amounts or counts (their mean value is not 1): decayed sums weigh them",
        f"value_weighted_types: [{', '.join(_yaml_str(v) for v in value_types)}]",
        f"momentum_days: {min(plan.windows_days[-1], max(plan.windows_days[0], plan.horizon_days))}",
        "account_features: true",
        "include_attributes: true",
        "# contacts columns that look like identifiers (email, ids, CRM object types, unique per contact)",
        "# are left out and named by `train`; list one under include to use it anyway",
        "attributes: {include: [], exclude: []}",
    ]) + "\n"


def _data_end_lines(end) -> list[str]:
    if end.cut_short:
        return [f"# the data looks cut short at its latest event or outcome ({end.latest:%Y-%m-%d %H:%M:%S}): on the",
                f"# days before, {end.expected_after:,.1f} events a day came later in the day than that, so the data",
                "# ends the minute after it; set the next midnight yourself if the export holds whole days",
                f"data_end: '{end.value:%Y-%m-%dT%H:%M:%S}'"]
    return [f"# the data ends at the midnight after its latest event or outcome ({end.value:%Y-%m-%d}): an export",
            "# of whole days; set it yourself if the export stopped mid-day",
            f"data_end: {end.value:%Y-%m-%d}"]


def _train_yaml(plan: StarterPlan) -> str:
    profile = plan.profile
    outcome_types = [o for o in profile.outcomes if o.outcome is not None]
    lines = [
        "# Training config written by `propensity init`; relative paths resolve against this file's folder.",
        *(f"# NOTE: {note}" for note in plan.notes),
        "rules: rules.yaml",
        "features: features.yaml",
        f"# cut-offs every {plan.step_days} days; the last one ({plan.grid_last:%Y-%m-%d}) is the latest whose",
        f"# {plan.horizon_days}-day label window closes by data_end",
        f"grid: {{first: {plan.grid_first:%Y-%m-%d}, last: {plan.grid_last:%Y-%m-%d}, step_days: {plan.step_days}}}",
        f"horizon_days: {plan.horizon_days}  # {plan.horizon_note}",
        f"# {plan.recurring_note}",
        f"recurring: {'true' if plan.recurring else 'false'}",
        *_data_end_lines(profile.data_end_record),
        f"# {plan.split_note}",
        "split: {" + ", ".join(f"{k}: {v}" for k, v in plan.split.items()) + "}",
    ]
    if outcome_types:
        found = ", ".join(f"{o.outcome} ({o.outcomes:,})" for o in outcome_types)
        lines += [f"# outcome types found: {found}. All of them count; list the ones that qualify to narrow it:",
                  f"# qualifying_outcomes: [{', '.join(_yaml_str(o.outcome) for o in outcome_types)}]"]
    lines += [
        "model: {tune: true, n_trials: 20, timeout_seconds: 3600, seed: 0}",
        "calibration: {method: auto, score_mapping: rate_matching}",
        "mlflow: {experiment: propensity, model_name: propensity}",
    ]
    return "\n".join(lines) + "\n"


def render_files(plan: StarterPlan, *, rules_name: str = "starter") -> dict[str, str]:
    """The starter files' text by file name (``rules.yaml``, ``features.yaml``, ``train.yaml``)."""
    return {"rules.yaml": _rules_yaml(plan, rules_name), "features.yaml": _features_yaml(plan),
            "train.yaml": _train_yaml(plan)}


STARTER_FILES = ("rules.yaml", "features.yaml", "train.yaml")


class StarterExistsError(ValueError):
    """A starter file is already there (the user may have reviewed it): nothing was written."""


def check_writable(out_dir: Path, names=STARTER_FILES, *, overwrite: bool = False) -> None:
    """Refuse, before any work, when a starter file exists and ``overwrite`` is off."""
    existing = [Path(out_dir) / name for name in names if (Path(out_dir) / name).exists()]
    if existing and not overwrite:
        raise StarterExistsError(f"{existing[0]} already exists: pass --force to overwrite the starter files")


def write_files(files: dict[str, str], out_dir: Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``files`` into ``out_dir``; refuses before writing anything when one exists."""
    out_dir = Path(out_dir)
    check_writable(out_dir, files, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return [out_dir / name for name in files]


def split_preview(con, config) -> pd.DataFrame:
    """Rows, positives and cut-offs per split that ``config`` gives on the workspace (``con``: an Ibis
    DuckDB backend): training's own cut-off plan, before any feature is built."""
    from propensity.pipelines.training.cutoffs import plan_rows, resolve_data_end
    from propensity.pipelines.training.dataset import spine_frame

    contacts = con.table("contacts")  # every workspace has the table; empty means "known from events"
    if int(contacts.count().execute()) == 0:
        contacts = None
    spine = spine_frame(con, config, con.table("events"), contacts)
    planned = plan_rows(spine, con.table("outcomes").execute(), config, resolve_data_end(con, config.data_end))
    return (planned.rows.groupby("split", observed=True)
            .agg(rows=("label", "size"), positives=("label", "sum"), cutoffs=("as_of", "nunique"),
                 first=("as_of", "min"), last=("as_of", "max"))
            .reset_index())
