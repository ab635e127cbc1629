"""Incremental rule scoring: one contact's score kept up to date event by event.

The batch scorer (:mod:`propensity.pipelines.rules.score`) sums, per activity, over every event with
``ts < as_of`` and ``age < expires_after_days``::

    points * weight * 0.5 ** (age_days / half_life_days)   (* value when per_value)

Here each activity keeps that sum as a decayed accumulator ``acc`` valid at a reference time
``ref``: moving to a later time multiplies it by ``0.5 ** (dt / half_life)``, so an event costs
O(1) whatever its order. Expiry is exact: an expiring activity keeps the contributions that have
not expired yet in a time-ordered list and subtracts each one when it ages out (so the sum never
includes an event older than the window, not even approximately). Events stamped at or after
the state's evaluation time wait in ``pending`` until time reaches them (``ts < as_of`` is strict).

Time only moves forward: :meth:`ContactState.advance` to an earlier instant is refused, and a
score for a past cut-off is what ``propensity score`` is for. All times are integer microseconds
since the Unix epoch (UTC), so ages are computed exactly as the batch query computes them.
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from propensity.pipelines.rules.config import Activity, FitCriterion, RuleSet

__all__ = [
    "POINTS_LIMIT",
    "ActivityState",
    "ContactState",
    "RuleScorer",
    "ScoreView",
    "clip_points",
    "from_micros",
    "to_micros",
]

_US_PER_DAY = 86_400_000_000.0
_LN2 = math.log(2)
_MAX_DAYS = 36_500.0  # a bound further than this is as good as never (and stays a valid datetime)
_EPOCH = datetime(1970, 1, 1)
# Points are clipped to +-POINTS_LIMIT: an uncapped per_value rule with value 1e308, twice, made
# them infinite (no JSON for the score or a trigger's payload). Every scale ends far below this,
# and a total above its last anchor maps to the top score anyway, so the clip moves no score; it
# only bounds the raw `points` shown.
POINTS_LIMIT = 1e12


def clip_points(points: float) -> float:
    """``points`` within +-:data:`POINTS_LIMIT` (NaN, which no finite input makes, -> 0)."""
    if points != points:
        return 0.0
    return max(-POINTS_LIMIT, min(POINTS_LIMIT, points))


def _clip_read(value: Any) -> float:
    value = float(value)
    return value if -POINTS_LIMIT <= value <= POINTS_LIMIT else clip_points(value)


def to_micros(ts: datetime) -> int:
    """A naive UTC datetime as integer microseconds since the epoch (exact)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    return _EPOCH + timedelta(microseconds=us)


def _age_days(now_us: int, ts_us: int) -> float:
    # the batch query: DATE_DIFF in microseconds, cast to DOUBLE, divided by us per day
    return float(now_us - ts_us) / _US_PER_DAY


# --------------------------------------------------------------------------- matching


def _match_value(expected: list[Any], actual: Any) -> bool:
    """One ``where`` condition, with the JSON typing rules of the batch query (ibis on DuckDB).

    All-boolean lists match JSON booleans only; all-number lists match JSON numbers only
    (compared as floats); anything else compares JSON strings with the values as text.
    """
    if all(isinstance(v, bool) for v in expected):
        return isinstance(actual, bool) and actual in expected
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in expected):
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        return float(actual) in [float(v) for v in expected]
    return isinstance(actual, str) and actual in [str(v) for v in expected]


def _matches(activity: Activity, event_type: str, properties: Mapping[str, Any] | None) -> bool:
    if event_type != activity.event:
        return False
    for key, expected in (activity.where or {}).items():
        if properties is None or key not in properties:
            return False
        values = expected if isinstance(expected, list) else [expected]
        if not _match_value(values, properties[key]):
            return False
    return True


def _as_number(value: Any) -> float | None:
    """``pd.to_numeric(errors="coerce")`` for one value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    try:
        number = float(str(value))
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _fit_matches(criterion: FitCriterion, value: Any) -> bool:
    """:func:`propensity.pipelines.rules.score._criterion_mask` for one attribute value."""
    if value is None:
        return False
    if criterion.equals is not None:
        if isinstance(criterion.equals, str):
            return str(value) == criterion.equals
        number = _as_number(value)
        return number is not None and number == float(criterion.equals)
    if criterion.in_ is not None:
        return str(value) in [str(v) for v in criterion.in_]
    number = _as_number(value)
    if number is None:
        return False
    if criterion.min is not None and not number >= criterion.min:
        return False
    return criterion.max is None or number < criterion.max


# --------------------------------------------------------------------------- state


@dataclass
class ActivityState:
    """One activity's running sum.

    ``acc`` is the sum of the live contributions, each decayed to ``ref`` (when the activity has
    a half-life; else a plain sum). ``live`` holds ``(ts_us, contribution)`` in time order for
    activities that expire, so that each can be subtracted exactly when it ages out.
    """

    acc: float = 0.0
    ref: int | None = None
    live: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class ContactState:
    """Everything needed to score one contact at any time from ``at_us`` on.

    ``pending`` holds ``(ts_us, activity index, contribution)`` for events stamped at or after
    ``at_us`` (they count once time passes them). ``traits`` are the contact's attributes
    (identify calls), used by fit criteria.
    """

    at_us: int
    activities: list[ActivityState]
    pending: list[tuple[int, int, float]] = field(default_factory=list)
    traits: dict[str, Any] = field(default_factory=dict)
    events: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able snapshot (stored in the service database with each commit)."""
        return {
            "at_us": self.at_us,
            # copies of the lists; their tuples are immutable and serialise as JSON arrays
            "activities": [[a.acc, a.ref, list(a.live)] for a in self.activities],
            "pending": list(self.pending),
            "traits": self.traits,
            "events": self.events,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], n_activities: int) -> ContactState:
        """Rebuild a snapshot made by :meth:`to_json` for a rule set with ``n_activities``."""
        # clipped: a state stored before points were bounded may hold inf (the comparison is
        # the fast path: this runs for every contact the writer or the sweep reads back)
        activities = [
            ActivityState(_clip_read(acc), None if ref is None else int(ref),
                          [(int(t), c if -POINTS_LIMIT <= c <= POINTS_LIMIT else clip_points(c)) for t, c in live])
            for acc, ref, live in data["activities"]
        ]
        if len(activities) != n_activities:
            raise ValueError(
                f"stored score state has {len(activities)} activities but the rules have {n_activities}: "
                "the rules changed; rebuild the state from the events (propensity serve --rebuild)"
            )
        return cls(
            at_us=int(data["at_us"]),
            activities=activities,
            pending=[(int(t), int(i), clip_points(float(c))) for t, i, c in data["pending"]],
            traits=dict(data.get("traits") or {}),
            events=int(data.get("events", 0)),
        )


@dataclass(frozen=True)
class ScoreView:
    """A contact's rule score at one instant, with the points of every rule (capped)."""

    contact_id: str
    as_of: datetime
    points: float
    rule_score: float
    band: str
    parts: dict[str, float]
    above: dict[str, bool]

    def top_reasons(self, k: int = 3) -> list[dict[str, Any]]:
        """The ``k`` rules adding the most points (positive ones only), biggest first."""
        ranked = sorted(((v, n) for n, v in self.parts.items() if v > 0), key=lambda x: (-x[0], x[1]))
        return [{"rule": n, "points": v} for v, n in ranked[:k]]


# --------------------------------------------------------------------------- the scorer


class RuleScorer:
    """Applies a :class:`RuleSet` to :class:`ContactState` objects, one event at a time.

    Parameters
    ----------
    rules : RuleSet
        The rule model; the same object ``propensity score`` uses.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._activities = rules.activities
        self._by_event: dict[str, list[int]] = {}
        for i, activity in enumerate(rules.activities):
            self._by_event.setdefault(activity.event, []).append(i)
        # only these can lose contributions as time passes (advance skips the others)
        self._expiring = [(i, a) for i, a in enumerate(rules.activities) if a.expires_after_days is not None]
        # view() runs once per rescored contact: read the rule set's fields once, here
        self._caps = [(a.name, a.cap) for a in rules.activities]
        self._fit = list(rules.fit)
        self._thresholds = list(rules.thresholds.items())
        self._anchors = list(rules.scale.keys())
        self._scores = list(rules.scale.values())
        self._band_edges = [b.min_score for b in rules.bands]

    # ---------------------------------------------------------------- state changes

    def new_state(self, at: datetime) -> ContactState:
        """An empty state at ``at``."""
        return ContactState(to_micros(at), [ActivityState() for _ in self._activities])

    def contributions(
        self, event_type: str, value: float, properties: Mapping[str, Any] | None
    ) -> list[tuple[int, float]]:
        """``(activity index, undecayed points)`` for every activity an event matches."""
        out = []
        for i in self._by_event.get(event_type, ()):
            activity = self._activities[i]
            if _matches(activity, event_type, properties):
                amount = activity.points * activity.weight
                out.append((i, clip_points(amount * value) if activity.per_value else amount))
        return out

    def apply(
        self,
        state: ContactState,
        ts: datetime,
        event_type: str,
        value: float = 1.0,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one event (any order, any timestamp) to ``state``."""
        ts_us = to_micros(ts)
        state.events += 1
        for index, amount in self.contributions(event_type, value, properties):
            if ts_us >= state.at_us:
                bisect.insort(state.pending, (ts_us, index, amount))
            else:
                self._add(state, index, ts_us, amount)

    def advance(self, state: ContactState, at: datetime) -> None:
        """Move ``state`` to the later instant ``at``: release pending events, expire old ones."""
        at_us = to_micros(at)
        if at_us < state.at_us:
            raise ValueError(
                f"cannot move a score back in time (state at {from_micros(state.at_us)}, asked {at}); "
                "use `propensity score --as-of` for past cut-offs"
            )
        state.at_us = at_us
        due = bisect.bisect_left(state.pending, (at_us, -1, -math.inf))
        if due:
            released, state.pending = state.pending[:due], state.pending[due:]
            for ts_us, index, amount in released:
                self._add(state, index, ts_us, amount)
        for index, activity in self._expiring:
            slot = state.activities[index]
            if slot.live:
                self._expire(slot, activity, at_us)

    def _decay(self, activity: Activity, later_us: int, earlier_us: int) -> float:
        return 0.5 ** (_age_days(later_us, earlier_us) / activity.half_life_days)

    def _add(self, state: ContactState, index: int, ts_us: int, amount: float) -> None:
        activity = self._activities[index]
        slot = state.activities[index]
        if activity.expires_after_days is not None:
            if not _age_days(state.at_us, ts_us) < activity.expires_after_days:
                return  # arrived late and already expired: it never counts again
            bisect.insort(slot.live, (ts_us, amount))
        if activity.half_life_days is None:
            slot.acc = clip_points(slot.acc + amount)
            return
        if slot.ref is None:
            slot.ref = ts_us
        elif ts_us > slot.ref:
            # rebase forward first, so that a contribution is only ever decayed, never grown
            slot.acc *= self._decay(activity, ts_us, slot.ref)
            slot.ref = ts_us
        slot.acc = clip_points(slot.acc + amount * self._decay(activity, slot.ref, ts_us))

    def _expire(self, slot: ActivityState, activity: Activity, at_us: int) -> None:
        live = slot.live
        gone = 0
        while gone < len(live) and not _age_days(at_us, live[gone][0]) < activity.expires_after_days:
            ts_us, amount = live[gone]
            if activity.half_life_days is None:
                slot.acc -= amount
            else:
                slot.acc -= amount * self._decay(activity, slot.ref, ts_us)
            gone += 1
        if gone:
            del live[:gone]
            if not live:
                slot.acc, slot.ref = 0.0, None  # exactly zero: no rounding residue survives

    # ---------------------------------------------------------------- reading

    def raw_points(self, state: ContactState) -> list[float]:
        """Uncapped points per activity at ``state.at_us``."""
        out = []
        for activity, slot in zip(self._activities, state.activities):
            if activity.half_life_days is None or slot.ref is None:
                out.append(slot.acc)
            else:
                out.append(slot.acc * self._decay(activity, state.at_us, slot.ref))
        return out

    def view(self, contact_id: str, state: ContactState) -> ScoreView:
        """The score of ``state`` at its own time, as :func:`score_frame` computes it."""
        parts: dict[str, float] = {}
        for (name, cap), raw in zip(self._caps, self.raw_points(state)):
            if cap is not None and raw >= 0:
                raw = cap * -math.expm1(-max(raw, 0.0) / cap)
            parts[name] = raw
        for criterion in self._fit:
            hit = _fit_matches(criterion, state.traits.get(criterion.attribute))
            parts[criterion.name] = criterion.points if hit else 0.0
        # left to right, activities then fit: the order pandas adds score_frame's columns in
        total = clip_points(sum(parts.values())) if parts else 0.0
        score = self.scale(total)
        return ScoreView(
            contact_id=contact_id,
            as_of=from_micros(state.at_us),
            points=total,
            rule_score=score,
            band=self.band(score),
            parts=parts,
            above={name: total >= t for name, t in self._thresholds},
        )

    def peek(self, contact_id: str, state: ContactState, at: datetime) -> ScoreView:
        """The score at a later ``at`` without changing ``state``."""
        future = copy.deepcopy(state)
        self.advance(future, at)
        return self.view(contact_id, future)

    # ---------------------------------------------------------------- when to look again

    def points_for_score(self, score: float) -> float:
        """The least total whose score is ``score`` or more (inverse of :meth:`scale`).

        -inf when every total scores at least ``score``, +inf when none does: a score level is a
        points level, since the scale is monotone.
        """
        xs, ys = self._anchors, self._scores
        if ys[0] >= score:
            return -math.inf
        for j in range(1, len(xs)):
            if ys[j] >= score:
                x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
                return float(x0 + (score - y0) * (x1 - x0) / (y1 - y0))
        return math.inf

    def levels(self) -> list[float]:
        """The point totals at which a stored field moves by a step: band edges and the thresholds."""
        found = {self.points_for_score(edge) for edge in self._band_edges}
        found.update(float(t) for _, t in self._thresholds)
        return sorted(x for x in found if math.isfinite(x))

    def next_due_us(self, state: ContactState, points: float, levels: Sequence[float]) -> tuple[int | None, bool]:
        """A time (us) at or before the first instant after ``state.at_us`` when the total may reach
        one of ``levels`` or make a step (a pending event counts, a contribution expires), None:
        never; and whether the points still move with time alone (a decaying part is not 0).

        Between steps each part only decays towards 0, at a rate that falls with it (a cap only
        slows it), so the total moves at most ``sum |raw| ln 2 / half_life`` points a day from now
        on; the distance to the nearest level over that rate is a lower bound of the time to reach
        it. Exact crossing times of a sum of exponentials have no closed form; a bound is enough,
        because a contact looked at before its crossing is simply given a later bound.
        """
        due: int | None = state.pending[0][0] if state.pending else None
        for index, activity in self._expiring:
            live = state.activities[index].live
            if live:
                out = live[0][0] + int(activity.expires_after_days * _US_PER_DAY)
                due = out if due is None else min(due, out)
        rate = 0.0
        for activity, raw in zip(self._activities, self.raw_points(state)):
            if activity.half_life_days is not None and raw:
                rate += abs(raw) * _LN2 / activity.half_life_days
        if rate > 0 and levels:
            distance = min(abs(points - level) for level in levels)
            reach = state.at_us + int(min(distance / rate, _MAX_DAYS) * _US_PER_DAY)
            due = reach if due is None else min(due, reach)
        return due, rate > 0

    def scale(self, total: float) -> float:
        """``numpy.interp`` through the scale's anchors, for one number."""
        xs, ys = self._anchors, self._scores
        if total <= xs[0]:
            return float(ys[0])
        if total >= xs[-1]:
            return float(ys[-1])
        j = bisect.bisect_right(xs, total)
        x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
        return float(y0 + (total - x0) * (y1 - y0) / (x1 - x0))

    def band(self, score: float) -> str:
        """The last band whose ``min_score`` is at or below ``score``."""
        index = bisect.bisect_right(self._band_edges, score) - 1
        return self.rules.bands[max(index, 0)].name
