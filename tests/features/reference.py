"""A naive reference of the feature build, for tests only.

Plain Python over lists of dicts with ``datetime`` arithmetic, one spine row at a time, and
written from ``docs/ARCHITECTURE.md`` without looking at ``features/build.py``. It is slow on
purpose: every number is recomputed from the raw events for every row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = [
    "ACCOUNTS",
    "AS_OF",
    "TYPES",
    "RefConfig",
    "World",
    "edge_times",
    "make_world",
    "reference_features",
    "reference_known",
    "snake",
]

DAY = timedelta(days=1)


@dataclass(frozen=True)
class RefConfig:
    """The settings the reference needs (mirrors FeatureConfig's defaults)."""

    event_types: tuple[str, ...]
    windows: tuple[int, ...] = (7, 30, 90)
    half_lives: tuple[float, ...] = (7.0, 30.0)
    value_weighted: tuple[str, ...] = ()
    active_windows: tuple[int, ...] | None = None
    momentum: int = 30
    lifetime: bool = True
    trend: bool = True
    monetary: tuple[str, ...] = ()
    account_features: bool = True
    include_attributes: bool = True
    names: dict[str, str] = field(default_factory=dict)

    def active(self) -> tuple[int, ...]:
        return self.windows if self.active_windows is None else self.active_windows


def snake(event_type: str) -> str:
    """Our own snake_case of a type name (the tests only use plain ASCII names)."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", event_type)
    name = "_".join(w.lower() for w in words)
    return name + "_event" if name in {"all", "value", "account"} else name


def _age_days(as_of: datetime, ts: datetime) -> float:
    # timedelta / timedelta is computed on whole microseconds, then rounded once.
    return (as_of - ts) / DAY


def _in_window(as_of: datetime, ts: datetime, days: int) -> bool:
    return as_of - timedelta(days=days) <= ts < as_of


def reference_known(
    events: Sequence[dict], as_of: datetime, contacts: Sequence[dict] | None = None
) -> set[str]:
    """Contacts known at ``as_of``: an event before it, or created before it (or unknown)."""
    known = {e["contact_id"] for e in events if e["ts"] < as_of}
    for c in contacts or ():
        if c["created_at"] is None or c["created_at"] < as_of:
            known.add(c["contact_id"])
    return known


def _contact_account(
    contact_id: str, history: Sequence[dict], contacts: dict[str, dict]
) -> str | None:
    row = contacts.get(contact_id)
    if row is not None and row.get("account_id") is not None:
        return row["account_id"]
    with_account = [e for e in history if e["account_id"] is not None]
    if not with_account:
        return None
    return max(with_account, key=lambda e: e["ts"])["account_id"]


def _event_account(event: dict, contacts: dict[str, dict]) -> str | None:
    row = contacts.get(event["contact_id"])
    if row is not None and row.get("account_id") is not None:
        return row["account_id"]
    return event["account_id"]


def _account_row(
    account: str | None,
    as_of: datetime,
    events: Sequence[dict],
    contacts: dict[str, dict],
    config: RefConfig,
) -> dict[str, int]:
    """Account features; all 0 for a contact without an account."""
    out: dict[str, int] = {}
    past = [e for e in events if e["ts"] < as_of and _event_account(e, contacts) == account]
    for n in config.windows:
        active = {e["contact_id"] for e in past if _in_window(as_of, e["ts"], n)}
        out[f"account__active_contacts_{n}d"] = 0 if account is None else len(active)
    for n in config.windows:
        count = sum(1 for e in past if _in_window(as_of, e["ts"], n))
        out[f"account__count_{n}d"] = 0 if account is None else count
    members = {e["contact_id"] for e in past}
    for c in contacts.values():
        if c.get("account_id") == account and (c["created_at"] is None or c["created_at"] < as_of):
            members.add(c["contact_id"])
    out["account__contacts"] = 0 if account is None else len(members)
    return out


def _type_features(
    name: str, event_type: str, history: Sequence[dict], as_of: datetime, config: RefConfig
) -> dict[str, float | int | None]:
    mine = [e for e in history if e["event_type"] == event_type]
    out: dict[str, float | int | None] = {}
    for n in config.windows:
        out[f"{name}__count_{n}d"] = sum(1 for e in mine if _in_window(as_of, e["ts"], n))
    ages = [_age_days(as_of, e["ts"]) for e in mine]
    out[f"{name}__days_since_last"] = min(ages) if ages else None
    for h in config.half_lives:
        total = 0.0
        for e in mine:
            weight = e["value"] if event_type in config.value_weighted else 1.0
            total += 0.5 ** (_age_days(as_of, e["ts"]) / h) * weight
        out[f"{name}__decayed_{h:g}d"] = total
    for n in config.active():
        dates = {e["ts"].date() for e in mine if _in_window(as_of, e["ts"], n)}
        out[f"{name}__active_days_{n}d"] = len(dates)
    if config.lifetime:
        out[f"{name}__count_total"] = len(mine)
        out[f"{name}__days_since_first"] = max(ages) if ages else None
        stamps = sorted(e["ts"] for e in mine)
        gaps = [(b - a) / DAY for a, b in zip(stamps, stamps[1:])]
        out[f"{name}__mean_gap_days"] = sum(gaps) / len(gaps) if gaps else None
    if config.trend and len(config.windows) > 1:
        short, long = min(config.windows), max(config.windows)
        recent = sum(1 for e in mine if _in_window(as_of, e["ts"], short))
        within = sum(1 for e in mine if _in_window(as_of, e["ts"], long))
        out[f"{name}__trend_{short}d_{long}d"] = (
            (recent / short) / (within / long) if within else None
        )
    if event_type in config.monetary:
        out.update(_purchase_summary(name, mine, as_of))
    return out


def _purchase_summary(name: str, mine: Sequence[dict], as_of: datetime) -> dict:
    """lifetimes' summary_data_from_transaction_data, freq "D", observation end just before as_of."""
    per_day: dict = {}
    for e in mine:
        per_day[e["ts"].date()] = per_day.get(e["ts"].date(), 0.0) + (e["value"] or 0.0)
    if not per_day:
        nothing = dict.fromkeys(("rfm_frequency", "rfm_recency_days", "rfm_tenure_days", "rfm_monetary"))
        return {**{f"{name}__{k}": v for k, v in nothing.items()}, f"{name}__value_total": 0.0}
    days = sorted(per_day)
    end = (as_of - timedelta(microseconds=1)).date()
    repeats = [per_day[d] for d in days[1:]]
    return {
        f"{name}__rfm_frequency": len(days) - 1,
        f"{name}__rfm_recency_days": (days[-1] - days[0]).days,
        f"{name}__rfm_tenure_days": (end - days[0]).days,
        f"{name}__rfm_monetary": sum(repeats) / len(repeats) if repeats else 0.0,
        f"{name}__value_total": sum(per_day.values()),
    }


def _all_features(
    history: Sequence[dict], as_of: datetime, config: RefConfig
) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {}
    for n in config.windows:
        out[f"all__count_{n}d"] = sum(1 for e in history if _in_window(as_of, e["ts"], n))
    ages = [_age_days(as_of, e["ts"]) for e in history]
    out["all__days_since_last"] = min(ages) if ages else None
    for n in config.windows:
        seen = {
            e["event_type"]
            for e in history
            if _in_window(as_of, e["ts"], n) and e["event_type"] in config.event_types
        }
        out[f"all__distinct_types_{n}d"] = len(seen)
    for n in config.windows:
        out[f"value__sum_{n}d"] = sum(
            (e["value"] for e in history if _in_window(as_of, e["ts"], n)), 0.0
        )
    for n in config.windows:
        values = [e["value"] for e in history if _in_window(as_of, e["ts"], n)]
        out[f"value__max_{n}d"] = max(values) if values else None
    out["tenure_days"] = max(ages) if ages else None
    m = config.momentum
    recent = sum(1 for e in history if _in_window(as_of, e["ts"], m))
    before = sum(
        1
        for e in history
        if _in_window(as_of, e["ts"], 2 * m) and not _in_window(as_of, e["ts"], m)
    )
    total = recent + before
    out[f"all__momentum_{m}d"] = 0.0 if total == 0 else (recent - before) / total
    return out


def reference_features(
    events: Sequence[dict],
    spine: Iterable[tuple[str, datetime]],
    config: RefConfig,
    contacts: Sequence[dict] | None = None,
) -> list[dict]:
    """One dict per distinct spine row, sorted by (contact_id, as_of).

    Parameters
    ----------
    events : list of dict
        Keys ``contact_id``, ``event_type``, ``ts`` (naive datetime), ``value``,
        ``account_id``.
    spine : iterable of (contact_id, as_of)
    config : RefConfig
    contacts : list of dict, optional
        Keys ``contact_id``, ``account_id``, ``created_at`` and attribute columns.

    Returns
    -------
    list of dict
        Keys ``contact_id``, ``as_of``, ``account_id`` and every feature column.
    """
    by_contact = {c["contact_id"]: c for c in contacts or ()}
    attributes = [
        k
        for k in (contacts[0] if contacts else {})
        if k not in ("contact_id", "account_id", "created_at")
    ]
    names = config.names or {t: snake(t) for t in config.event_types}
    rows = []
    for contact_id, as_of in sorted(set(spine)):
        history = [e for e in events if e["contact_id"] == contact_id and e["ts"] < as_of]
        account = _contact_account(contact_id, history, by_contact)
        row: dict = {"contact_id": contact_id, "as_of": as_of, "account_id": account}
        for event_type in config.event_types:
            row.update(_type_features(names[event_type], event_type, history, as_of, config))
        row.update(_all_features(history, as_of, config))
        if config.account_features:
            row.update(_account_row(account, as_of, events, by_contact, config))
        if config.include_attributes:
            for k in attributes:
                row[k] = by_contact.get(contact_id, {}).get(k)
        rows.append(row)
    return rows


# --- Test worlds -------------------------------------------------------------------------

AS_OF = datetime(2024, 3, 15, 13, 45, 30, 250_000)  # not midnight, sub-second on purpose
TYPES = ("Demo Request", "page_view", "email.open", "trialStarted", "Webinar-Attended")
ACCOUNTS = ("acme", "globex", "initech")


@dataclass
class World:
    """Events and contacts as plain records; ``frames()`` gives the canonical pandas frames."""

    events: list[dict]
    contacts: list[dict]

    def frames(self):  # noqa: ANN201 - pandas imported lazily to keep this module plain
        import pandas as pd

        events = pd.DataFrame(
            {
                "event_id": pd.Series([f"e{i}" for i in range(len(self.events))], dtype="str"),
                "contact_id": pd.Series([e["contact_id"] for e in self.events], dtype="str"),
                "event_type": pd.Series([e["event_type"] for e in self.events], dtype="str"),
                "ts": pd.Series([e["ts"] for e in self.events], dtype="datetime64[us]"),
                "value": pd.Series([e["value"] for e in self.events], dtype="float64"),
                "account_id": pd.Series([e["account_id"] for e in self.events], dtype="str"),
                "properties": pd.Series([None] * len(self.events), dtype="str"),
            }
        )
        contacts = pd.DataFrame(
            {
                "contact_id": pd.Series([c["contact_id"] for c in self.contacts], dtype="str"),
                "account_id": pd.Series([c["account_id"] for c in self.contacts], dtype="str"),
                "created_at": pd.Series(
                    [c["created_at"] for c in self.contacts], dtype="datetime64[us]"
                ),
                "industry": pd.Series([c["industry"] for c in self.contacts], dtype="str"),
                "employees": pd.Series([c["employees"] for c in self.contacts], dtype="int64"),
                "is_customer": pd.Series([c["is_customer"] for c in self.contacts], dtype="bool"),
            }
        )
        return events, contacts


def edge_times(as_of: datetime) -> list[datetime]:
    """Instants where an off-by-one would show: at as_of, at window edges, +-1 us, midnight."""
    times = [as_of, as_of + timedelta(microseconds=1), as_of - timedelta(microseconds=1)]
    for days in (7, 14, 30, 60, 90, 180):
        edge = as_of - timedelta(days=days)
        times += [edge, edge - timedelta(microseconds=1), edge + timedelta(microseconds=1)]
    midnight = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    for days in (0, 7, 30, 90):
        day = midnight - timedelta(days=days)
        times += [day, day - timedelta(microseconds=1)]
    return times


def make_world(seed: int, n_contacts: int = 40, n_events: int = 500, as_of: datetime = AS_OF):
    """A small random world with every corner the feature build has to get right.

    Contacts ``c00..c{n-6}`` have events, the last five have none; ``c30..c34`` are not in
    the contacts table (their account comes from their events). Timestamps have microsecond
    precision, reach past ``as_of`` and include :func:`edge_times`.
    """
    import random

    rng = random.Random(seed)
    ids = [f"c{i:02d}" for i in range(n_contacts)]
    active = ids[: n_contacts - 5]
    in_table = [c for c in ids if not ("c30" <= c <= "c34")]
    table_account = {c: rng.choice((*ACCOUNTS, None)) for c in in_table}
    own_account = {c: rng.choice((*ACCOUNTS, None)) for c in active}
    weights = (5, 4, 3, 2, 1)
    stamps = [
        as_of - timedelta(microseconds=rng.randrange(-10 * 86_400_000_000, 200 * 86_400_000_000))
        for _ in range(n_events)
    ]
    stamps += edge_times(as_of) * 2
    events = []
    for ts in stamps:
        contact = rng.choice(active)
        if table_account.get(contact) is not None:
            account = rng.choice((*ACCOUNTS, None))  # the contacts table wins anyway
        else:
            account = own_account[contact] if rng.random() < 0.7 else None
        events.append(
            {
                "contact_id": contact,
                "event_type": rng.choices(TYPES, weights)[0],
                "ts": ts,
                "value": round(rng.uniform(-5.0, 100.0), 3),
                "account_id": account,
            }
        )
    contacts = []
    for c in in_table:
        created = rng.choice(
            [
                None,
                as_of - timedelta(days=rng.uniform(1, 300)),
                as_of + timedelta(days=rng.uniform(0, 5)),
            ]
        )
        contacts.append(
            {
                "contact_id": c,
                "account_id": table_account[c],
                "created_at": created,
                "industry": rng.choice(("saas", "retail", None)),
                "employees": rng.randrange(1, 5000),
                "is_customer": rng.random() < 0.3,
            }
        )
    return World(events=events, contacts=contacts)
