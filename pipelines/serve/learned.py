"""Learned scores in the service: the champion's features per contact, recomputed per commit.

The features come from the event mirror (:mod:`propensity.pipelines.serve.mirror`), which holds
what they read; for the contacts a commit touched, their rows at ``now`` are computed in one
vectorised pass and scored with ONE LightGBM predict per commit. A score request computes its
one contact's row at request time, so decay and windows are exact at any ``as_of``.

A model trained with the rules as an input (``rule_inputs: true``, the train config's default)
also reads the ``rule__*`` columns and may blend in the rule score: both come from the
contacts' rule states, which the writer keeps anyway (:mod:`propensity.pipelines.serve.rule_inputs`),
so such a model is served only with the rules it was trained with.

Cost: per event O(1) to record; per commit O(history of the touched contacts, plus the events of
their accounts' members when the model uses account features) array work and one predict.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from propensity.pipelines.serve.feature_plan import FeaturePlan
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.learned_change import TraitHistory, learned_change_split
from propensity.pipelines.serve.mirror import EventMirror
from propensity.pipelines.serve.rule_inputs import rule_input_arrays, rules_difference
from propensity.pipelines.serve.state import ContactState, RuleScorer, to_micros

__all__ = [
    "LearnedScores",
    "LearnedView",
]


@dataclass(frozen=True)
class LearnedView:
    """A contact's learned score at one instant."""

    contact_id: str
    as_of: datetime
    probability: float
    learned_score: float
    learned_band: str | None


class LearnedScores:
    """The champion plus the mirror its features are computed from; safe across threads.

    Parameters
    ----------
    scorer : propensity.pipelines.training.scorer.LearnedScorer
    label : str
        What was loaded (e.g. ``propensity@champion v3``), shown by the service.
    rules : RuleScorer, optional
        The service's rule scorer; needed (and checked against the model's own rules) when the
        model reads the rules' columns.
    split_days : int
        How many days back the learned change split reaches (the mirror keeps them one by one).

    Raises
    ------
    ValueError
        The model's features cannot be computed live, or it reads rules other than ``rules``.
    """

    def __init__(self, scorer: Any, label: str = "", rules: RuleScorer | None = None, split_days: int = 0) -> None:
        self.scorer = scorer
        self.label = label
        self.plan = FeaturePlan.from_scorer(scorer)
        self.mirror = EventMirror(self.plan, extra_days=split_days)
        self._lock = threading.RLock()
        self.rules = rules if self.plan.rule_columns else None
        # the traits the model reads, before their last changes (the learned change split's attributes)
        read = [*self.plan.attributes, *(c[len("rule__attribute__"):] for c in self.plan.rule_columns
                                         if c.startswith("rule__attribute__"))]
        self.history = TraitHistory(read, known_from_us=-(2 ** 62))
        self._blends = bool(self.plan.rule_columns) and bool(scorer.blends_rules)
        if self.plan.rule_columns:
            if rules is None:
                raise ValueError(f"{label or 'the model'} reads the hand rules' columns (rule__*): serve it with "
                                 "the rules it was trained with")
            difference = rules_difference(scorer.input_rules, rules.rules, blends=self._blends)
            if difference is not None:
                raise ValueError(f"{label or 'the model'} was trained with other rules than the served "
                                 f"{rules.rules.name!r}: {difference}")
        bands = (scorer.metadata or {}).get("bands") or []
        self._band_names = [str(name) for name, _ in bands]
        self._band_edges = np.array([float(edge) for _, edge in bands])

    def load(self, engine: sa.Engine, now: datetime | None = None) -> int:
        """Mirror the stored events (with ``now``: those older than the horizon folded as read)."""
        with engine.connect() as conn, self._lock:
            if now is not None:  # the traits read now are the latest ones: what they were before is not known
                self.history.known_from_us = to_micros(now)
            return self.mirror.load(conn, now)

    def record(self, events: Iterable[EventRow], updates: Iterable[ContactUpdate], now: datetime | None = None,
               fold_contacts: int = 200) -> None:
        """Committed rows; with ``now``, then up to ``fold_contacts`` contacts' old events folded
        (the horizon moves a day at a time, so its work is spread over the commits)."""
        with self._lock:
            for update in updates:
                before = dict(self.mirror.traits_of(update.contact_id))
                self.mirror.update_contact(update.contact_id, update.account_id, update.created_at, update.traits)
                if now is not None:
                    self.history.record(update.contact_id, before, self.mirror.traits_of(update.contact_id),
                                        to_micros(now))
            self.mirror.record(events, ())
            if now is not None:
                self.mirror.fold(now, limit=fold_contacts)

    @property
    def reads_rules(self) -> bool:
        """Whether the model reads the rules' columns (score and features then need the rule states)."""
        return self.rules is not None

    def _rule_inputs(self, contacts: Sequence[str], as_of: datetime,
                     states: Mapping[str, ContactState] | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        if self.rules is None:
            return {}, None
        if states is None:
            raise ValueError(f"{self.label or 'the model'} reads the rules' columns: pass the contacts' rule states")
        return rule_input_arrays(self.rules, contacts, states, to_micros(as_of), self.plan.rule_columns,
                                 self.plan.categorical, self._blends)

    def features(self, contacts: Sequence[str], as_of: datetime,
                 states: Mapping[str, ContactState] | None = None, *, events_before: datetime | None = None,
                 traits: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
        """The model's feature rows at ``as_of`` (``states``: the contacts' rule states at ``as_of``,
        when the model reads the rules' columns; ``events_before`` and ``traits``: see
        :meth:`EventMirror.feature_frame`)."""
        columns, _ = self._rule_inputs(contacts, as_of, states)
        extra = {name: pd.Series(values, dtype=object) if name in self.plan.categorical else values
                 for name, values in columns.items()}
        with self._lock:
            return self.mirror.feature_frame(contacts, as_of, events_before=events_before, traits=traits, extra=extra)

    def score(self, contacts: Sequence[str], as_of: datetime,
              states: Mapping[str, ContactState] | None = None) -> dict[str, LearnedView]:
        """Learned scores of ``contacts`` at ``as_of``: one feature pass, one predict.

        ``states``: each contact's rule state at ``as_of`` (needed when the model reads the rules).
        """
        if not contacts:
            return {}
        with self._lock:
            out, _ = self.mirror.feature_arrays(contacts, as_of)
        rule_columns, rule_scores = self._rule_inputs(contacts, as_of, states)
        out.update(rule_columns)
        probability, learned = self._predict(out, rule_scores)
        bands = self._bands(learned)
        return {
            c: LearnedView(c, as_of, float(p), float(s), b)
            for c, p, s, b in zip(contacts, probability, learned, bands)
        }

    def model_matrix(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        """The float matrix LightGBM reads (categories as the model's codes) from feature arrays."""
        from propensity.pipelines.training.model import (
            category_codes,  # lightgbm is loaded by now (the scorer)
        )

        scorer = self.scorer
        matrix = np.empty((len(next(iter(out.values()))), len(scorer.feature_names)), dtype="float64", order="F")
        for j, name in enumerate(scorer.feature_names):
            categories = scorer.categories.get(name)
            matrix[:, j] = out[name] if categories is None else category_codes(out[name], categories)
        return matrix

    def _predict(self, out: Mapping[str, np.ndarray], rule_scores: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``LearnedScorer.score`` on arrays: the matrix ``model_array`` makes, without pandas.

        Per commit the DataFrame route cost ~30 ms of per-column pandas overhead for one row;
        the steps are the scorer's own (raw_probability_of, calibrated; compiled trees when asked), and the tests
        check the result against ``propensity score --model``.
        """
        scorer = self.scorer
        matrix = self.model_matrix(out)
        # one thread: a few rows do not pay for waking LightGBM's OpenMP pool (same numbers)
        raw = scorer.raw_probability_of(matrix, num_threads=1)
        if self._blends:  # LearnedScorer.raw_probability's blend, with the service's rule score
            from propensity.pipelines.training.rule_blend import Blend

            raw = Blend(**scorer.blend).apply(raw, rule_scores)
        return scorer.calibrated(raw)

    def reasons(self, contact: str, as_of: datetime, n: int = 3,
                states: Mapping[str, ContactState] | None = None) -> list[dict[str, Any]]:
        """The ``n`` feature groups raising the contact's learned score most, in 0-5 points.

        LightGBM's ``pred_contrib`` through :func:`propensity.pipelines.explain.explain_contacts` (the
        numbers ``propensity explain`` shows), for one row: about a millisecond of trees.
        """
        from propensity.pipelines.explain import reason_items

        return reason_items(self.explain(contact, as_of, states, with_facts=False), n, positive_only=True)

    def explain(self, contact: str, as_of: datetime, states: Mapping[str, ContactState] | None = None, *,
                with_facts: bool = True) -> Any:
        """The contact's learned score at ``as_of`` explained as ``propensity explain`` explains it.

        Its feature row from the mirror (the one :meth:`score` predicts on) through
        :func:`propensity.pipelines.explain.explain_contacts` with LightGBM's ``pred_contrib``:
        SHAP per group, carried onto 0-5 (a :class:`~propensity.pipelines.explain.ScoreExplanation`).
        """
        from propensity.pipelines.explain import explain_contacts

        frame = self.features([contact], as_of, states)
        return explain_contacts(self.scorer, frame, method="pred_contrib", with_facts=with_facts)

    def change_split(self, conn: sa.Connection, contact: str, since: datetime, until: datetime) -> dict:
        """The learned score's change from ``since`` to ``until`` split as ``explain --since`` does
        (:mod:`propensity.pipelines.serve.learned_change`; ``conn``: the service database)."""
        return learned_change_split(self, conn, contact, since, until)

    def consistent(self) -> threading.RLock:
        """Held, no commit changes the mirror (several feature passes then read the same events)."""
        return self._lock

    def _bands(self, scores: np.ndarray) -> list[str | None]:
        if not self._band_names:
            return [None] * len(scores)
        index = np.searchsorted(self._band_edges, scores, side="right") - 1  # as assign_bands
        return [self._band_names[i] for i in np.clip(index, 0, len(self._band_names) - 1)]

