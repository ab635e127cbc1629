"""The hand-written DuckDB SQL that ``features_bench.py`` measures ``build_features`` against.

One query producing the same columns, in the same order and with the same types and NULL
rules, as ``propensity.features.build.build_features`` for a spine of every contact known at one cut-off
(``propensity.features.spine.spine_at``), contacts joined, account features and attributes included
(docs/ARCHITECTURE.md, "Time semantics" and "Feature names").

Four shapes, each a single statement:

- ``const``: what one writes by hand for ONE cut-off: filter ``ts < as_of`` with the cut-off as
  a literal, one ``GROUP BY contact_id``, then the spine (contacts with an event, plus contacts
  created before the cut-off) left-joined to it. It cannot serve a spine with several cut-offs.
- ``spine``: as general as ``build_features``: the spine (its own ``as_of`` per row) LEFT JOIN
  events ON ``ts < as_of``, ``GROUP BY contact_id, as_of``; account features per
  ``(account_id, as_of)``.

- ``two_level``: for one cut-off too, but aggregating in two steps: first ``GROUP BY contact_id,
  event_type, account_id`` with the ~20 type-independent aggregates over the events, then one
  row per contact by pivoting those (a few rows per contact) with the per-type ``CASE``
  aggregates. The wide per-type aggregation then runs over ~10x fewer rows than the events.
- ``two_level_spine``: the same two levels, but as general as ``spine`` (the spine joined
  on ``ts < as_of``, groups per ``(contact_id, as_of)``, account features over the events):
  the shape ``build_features`` has.

Written the way the fastest known DuckDB idioms go (they are the ones ``build_features`` uses
too, see its module docstring): ``COUNT(CASE ...)`` rather than ``FILTER``, active days from day
bitmasks rather than ``COUNT(DISTINCT date)``, distinct types from the per-type counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from propensity.features.build import safe_name
from propensity.features.config import FeatureConfig

__all__ = ["hand_features_sql"]

DAY_US = 86_400_000_000
_WORD = 63  # bits per BIGINT day word (the sign bit is not shifted into)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _days(expr: str) -> str:
    return f"CAST({expr} AS DOUBLE) / {DAY_US}"


def _contact_aggregates(types: Sequence[str], cfg: FeatureConfig) -> list[str]:
    """Aggregates over rows with columns event_type, value, account_id, ts, age, day."""
    windows = cfg.windows_days
    active = cfg.resolved_active_days_windows
    day_bits = max(active)
    words = -(-day_bits // _WORD)
    weighted = set(cfg.value_weighted_types)
    aggs: list[str] = []
    for t in types:
        n = safe_name(t)
        is_t = f"event_type = {_lit(t)}"
        for w in windows:
            aggs.append(f"count(CASE WHEN {is_t} AND age <= {w * DAY_US} THEN 1 END) AS {_q(f'{n}__count_{w}d')}")
        aggs.append(f"min(CASE WHEN {is_t} THEN age END) AS {_q(f'{n}__age_min')}")
        for h in cfg.half_lives_days:
            decay = f"power(0.5, ({_days('age')}) / {h!r})" + (" * value" if t in weighted else "")
            aggs.append(f"sum(CASE WHEN {is_t} THEN {decay} END) AS {_q(f'{n}__decayed_{h:g}d')}")
        for j in range(words):
            low, high = j * _WORD, min((j + 1) * _WORD, day_bits)
            aggs.append(
                f"bit_or(CASE WHEN {is_t} AND day >= {low} AND day < {high} "
                f"THEN CAST(1 AS BIGINT) << (day - {low}) ELSE 0 END) AS {_q(f'{n}__w{j}')}"
            )
        for w in active:  # day w counts only for an event exactly w days old (age <= w days)
            aggs.append(
                f"count(CASE WHEN {is_t} AND day = {w} AND age <= {w * DAY_US} THEN 1 END) "
                f"AS {_q(f'{n}__edge{w}')}"
            )
    for w in windows:
        aggs.append(f"count(CASE WHEN age <= {w * DAY_US} THEN 1 END) AS {_q(f'all__count_{w}d')}")
    aggs.append("min(age) AS all__age_min")
    aggs.append("max(age) AS all__age_max")
    for w in windows:
        aggs.append(f"sum(CASE WHEN age <= {w * DAY_US} THEN value END) AS {_q(f'value__sum_{w}d')}")
        aggs.append(f"max(CASE WHEN age <= {w * DAY_US} THEN value END) AS {_q(f'value__max_{w}d')}")
    m = cfg.momentum_days * DAY_US
    aggs.append(f"count(CASE WHEN age <= {m} THEN 1 END) AS m_recent")
    aggs.append(f"count(CASE WHEN age > {m} AND age <= {2 * m} THEN 1 END) AS m_before")
    aggs.append("arg_max(account_id, ts) AS ev_account")  # arg_max skips NULL accounts
    return aggs


def _contact_features(types: Sequence[str], cfg: FeatureConfig) -> list[str]:
    """Final feature columns from the aggregate row ``a`` (NULL when the contact has no events)."""
    windows = cfg.windows_days
    active = cfg.resolved_active_days_windows
    cols: list[str] = []
    for t in types:
        n = safe_name(t)
        for w in windows:
            cols.append(f"coalesce(a.{_q(f'{n}__count_{w}d')}, 0) AS {_q(f'{n}__count_{w}d')}")
        age_min = "a." + _q(f"{n}__age_min")
        cols.append(f"{_days(age_min)} AS {_q(f'{n}__days_since_last')}")
        for h in cfg.half_lives_days:
            c = _q(f"{n}__decayed_{h:g}d")
            cols.append(f"coalesce(a.{c}, 0.0) AS {c}")
        for w in active:
            bits = []
            for j in range(-(-w // _WORD)):
                width = min(w - j * _WORD, _WORD)
                bits.append(f"bit_count(coalesce(a.{_q(f'{n}__w{j}')}, 0) & {(1 << width) - 1})")
            edge = f"CAST(coalesce(a.{_q(f'{n}__edge{w}')}, 0) > 0 AS BIGINT)"
            total = " + ".join(f"CAST({b} AS BIGINT)" for b in bits)
            cols.append(f"{total} + {edge} AS {_q(f'{n}__active_days_{w}d')}")
    for w in windows:
        cols.append(f"coalesce(a.{_q(f'all__count_{w}d')}, 0) AS {_q(f'all__count_{w}d')}")
    cols.append(f"{_days('a.all__age_min')} AS all__days_since_last")
    for w in windows:
        seen = " + ".join(
            f"CASE WHEN coalesce(a.{_q(f'{safe_name(t)}__count_{w}d')}, 0) > 0 THEN 1 ELSE 0 END"
            for t in types
        ) or "0"
        cols.append(f"CAST({seen} AS BIGINT) AS {_q(f'all__distinct_types_{w}d')}")
    for w in windows:
        cols.append(f"coalesce(a.{_q(f'value__sum_{w}d')}, 0.0) AS {_q(f'value__sum_{w}d')}")
    for w in windows:
        cols.append(f"a.{_q(f'value__max_{w}d')} AS {_q(f'value__max_{w}d')}")
    cols.append(f"{_days('a.all__age_max')} AS tenure_days")
    r, b = "coalesce(a.m_recent, 0)", "coalesce(a.m_before, 0)"
    cols.append(
        f"CASE WHEN {r} + {b} = 0 THEN 0.0 ELSE CAST({r} - {b} AS DOUBLE) / CAST({r} + {b} AS DOUBLE) "
        f"END AS {_q(f'all__momentum_{cfg.momentum_days}d')}"
    )
    return cols


def _account_columns(cfg: FeatureConfig) -> tuple[list[str], list[str]]:
    """(per-member aggregates, per-account aggregates) over member rows with m_age."""
    windows = cfg.windows_days
    member = ["min(m_age) AS recent"] + [
        f"count(CASE WHEN m_age <= {w * DAY_US} THEN 1 END) AS n{w}" for w in windows
    ]
    account = (
        [f"count(CASE WHEN recent <= {w * DAY_US} THEN 1 END) AS account__active_contacts_{w}d" for w in windows]
        + [f"CAST(sum(n{w}) AS BIGINT) AS account__count_{w}d" for w in windows]
        + ["count(*) AS account__contacts"]
    )
    return member, account


def _account_names(cfg: FeatureConfig) -> list[str]:
    w = cfg.windows_days
    return [f"account__active_contacts_{n}d" for n in w] + [f"account__count_{n}d" for n in w] + [
        "account__contacts"
    ]


def _two_level(types: Sequence[str], cfg: FeatureConfig, cutoff: str, *, spine: bool = False) -> str:
    """CTEs ``ev``, ``l1`` (contact, type, event account) and ``agg`` (one row per contact).

    With ``spine``, per (contact, as_of) of a ``spine`` CTE defined before: events joined on
    ``ts < as_of`` instead of filtered by the literal cut-off.
    """
    windows = cfg.windows_days
    active = cfg.resolved_active_days_windows
    day_bits = max(active)
    words = -(-day_bits // _WORD)
    weighted = set(cfg.value_weighted_types)
    m = cfg.momentum_days * DAY_US
    l1 = [f"count(CASE WHEN age <= {w * DAY_US} THEN 1 END) AS c{w}" for w in windows]
    l1 += ["min(age) AS age_min", "max(age) AS age_max", "max(ts) AS ts_max"]
    for i, h in enumerate(cfg.half_lives_days):
        l1.append(f"sum(power(0.5, ({_days('age')}) / {h!r})) AS d{i}")
        l1.append(f"sum(power(0.5, ({_days('age')}) / {h!r}) * value) AS dv{i}")
    for j in range(words):
        low, high = j * _WORD, min((j + 1) * _WORD, day_bits)
        l1.append(
            f"bit_or(CASE WHEN day >= {low} AND day < {high} "
            f"THEN CAST(1 AS BIGINT) << (day - {low}) ELSE 0 END) AS w{j}"
        )
    l1 += [f"count(CASE WHEN day = {w} AND age <= {w * DAY_US} THEN 1 END) AS e{w}" for w in active]
    for w in windows:
        l1.append(f"sum(CASE WHEN age <= {w * DAY_US} THEN value END) AS vs{w}")
        l1.append(f"max(CASE WHEN age <= {w * DAY_US} THEN value END) AS vm{w}")
    l1.append(f"count(CASE WHEN age <= {m} THEN 1 END) AS m_recent")
    l1.append(f"count(CASE WHEN age > {m} AND age <= {2 * m} THEN 1 END) AS m_before")
    l2: list[str] = []
    for t in types:
        n = safe_name(t)
        is_t = f"event_type = {_lit(t)}"
        for w in windows:
            l2.append(f"CAST(sum(CASE WHEN {is_t} THEN c{w} END) AS BIGINT) AS {_q(f'{n}__count_{w}d')}")
        l2.append(f"min(CASE WHEN {is_t} THEN age_min END) AS {_q(f'{n}__age_min')}")
        for i, h in enumerate(cfg.half_lives_days):
            col = f"dv{i}" if t in weighted else f"d{i}"
            l2.append(f"sum(CASE WHEN {is_t} THEN {col} END) AS {_q(f'{n}__decayed_{h:g}d')}")
        for j in range(words):
            l2.append(f"bit_or(CASE WHEN {is_t} THEN w{j} END) AS {_q(f'{n}__w{j}')}")
        for w in active:
            l2.append(f"sum(CASE WHEN {is_t} THEN e{w} END) AS {_q(f'{n}__edge{w}')}")
    l2 += [f"CAST(sum(c{w}) AS BIGINT) AS {_q(f'all__count_{w}d')}" for w in windows]
    l2 += ["min(age_min) AS all__age_min", "max(age_max) AS all__age_max"]
    for w in windows:
        l2.append(f"sum(vs{w}) AS {_q(f'value__sum_{w}d')}")
        l2.append(f"max(vm{w}) AS {_q(f'value__max_{w}d')}")
    l2 += ["CAST(sum(m_recent) AS BIGINT) AS m_recent", "CAST(sum(m_before) AS BIGINT) AS m_before"]
    l2.append("arg_max(account_id, ts_max) AS ev_account")  # NULL accounts skipped
    sep = ",\n    "
    if spine:
        ev = """
  SELECT s.contact_id, s.as_of, e.event_type, e.ts, e.value, e.account_id,
         date_diff('microsecond', e.ts, s.as_of) AS age,
         date_diff('day', CAST(e.ts AS DATE), CAST(s.as_of AS DATE)) AS day
  FROM spine s JOIN events e ON e.contact_id = s.contact_id AND e.ts < s.as_of"""
        key = "contact_id, as_of"
    else:
        ev = f"""
  SELECT contact_id, event_type, ts, value, account_id,
         date_diff('microsecond', ts, {cutoff}) AS age,
         date_diff('day', CAST(ts AS DATE), CAST({cutoff} AS DATE)) AS day
  FROM events WHERE ts < {cutoff}"""
        key = "contact_id"
    return f"""
ev AS ({ev}
),
l1 AS (
  SELECT {key}, event_type, account_id,
    {sep.join(l1)}
  FROM ev GROUP BY {key}, event_type, account_id
),
agg AS (
  SELECT {key},
    {sep.join(l2)}
  FROM l1 GROUP BY {key}
)"""


def hand_features_sql(
    event_types: Sequence[str],
    attributes: Sequence[str],
    cfg: FeatureConfig,
    as_of: str,
    *,
    shape: str = "const",
) -> str:
    """The hand-written feature query for every contact known at ``as_of``.

    Parameters
    ----------
    event_types : sequence of str
        The types that get per-type features, in column order (``build_features`` sorts them).
    attributes : sequence of str
        Contact attribute columns (empty, or ``cfg.include_attributes`` False, for none).
    cfg : FeatureConfig
        Windows, half-lives, momentum; ``account_features`` and ``include_attributes``.
    as_of : str
        The cut-off, e.g. ``"2025-06-30 00:00:00"`` (naive UTC).
    shape : {"const", "spine", "two_level", "two_level_spine"}
        See the module docstring.

    Returns
    -------
    str
        One ``SELECT`` over the workspace tables ``events`` and ``contacts``.
    """
    shapes = ("const", "spine", "two_level", "two_level_spine")
    if shape not in shapes:
        raise ValueError(f"shape must be one of {shapes}, not {shape!r}")
    attrs = list(attributes) if cfg.include_attributes else []
    cutoff = f"CAST({_lit(as_of)} AS TIMESTAMP)"
    aggs = ",\n    ".join(_contact_aggregates(event_types, cfg))
    feats = ",\n  ".join(_contact_features(event_types, cfg))
    member, account = _account_columns(cfg)
    known_contacts = f"SELECT contact_id FROM contacts WHERE created_at IS NULL OR created_at < {cutoff}"
    if shape == "two_level":
        ctes = _two_level(event_types, cfg, cutoff) + f""",
spine AS (SELECT contact_id, {cutoff} AS as_of FROM (SELECT contact_id FROM agg UNION {known_contacts}))"""
        agg_join = "LEFT JOIN agg a ON a.contact_id = s.contact_id"
        member_l1 = ", ".join(
            ["min(age_min) AS recent"] + [f"sum(c{w}) AS n{w}" for w in cfg.windows_days]
        )
        members = f"""
mem AS (
  SELECT l.contact_id AS m_contact, coalesce(c.account_id, l.account_id) AS m_account,
         l.age_min, {", ".join(f"l.c{w}" for w in cfg.windows_days)}
  FROM l1 l LEFT JOIN contacts c ON c.contact_id = l.contact_id
  UNION ALL
  SELECT contact_id, account_id, NULL, {", ".join("0" for _ in cfg.windows_days)} FROM contacts
  WHERE account_id IS NOT NULL AND (created_at IS NULL OR created_at < {cutoff})
),
per_member AS (
  SELECT m_account, {cutoff} AS as_of, m_contact, {member_l1}
  FROM mem WHERE m_account IS NOT NULL GROUP BY m_account, m_contact
),"""
    elif shape == "const":
        ctes = f"""
ev AS (
  SELECT contact_id, event_type, ts, value, account_id,
         date_diff('microsecond', ts, {cutoff}) AS age,
         date_diff('day', CAST(ts AS DATE), CAST({cutoff} AS DATE)) AS day
  FROM events WHERE ts < {cutoff}
),
agg AS (
  SELECT contact_id,
    {aggs}
  FROM ev GROUP BY contact_id
),
spine AS (SELECT contact_id, {cutoff} AS as_of FROM (SELECT contact_id FROM agg UNION {known_contacts}))"""
        agg_join = "LEFT JOIN agg a ON a.contact_id = s.contact_id"
        members = f"""
mem AS (
  SELECT e.contact_id AS m_contact, coalesce(c.account_id, e.account_id) AS m_account, e.age AS m_age
  FROM ev e LEFT JOIN contacts c ON c.contact_id = e.contact_id
  UNION ALL
  SELECT contact_id, account_id, NULL FROM contacts
  WHERE account_id IS NOT NULL AND (created_at IS NULL OR created_at < {cutoff})
),
per_member AS (
  SELECT m_account, {cutoff} AS as_of, m_contact, {", ".join(member)}
  FROM mem WHERE m_account IS NOT NULL GROUP BY m_account, m_contact
),"""
    else:
        spine_cte = f"""
spine AS (
  SELECT DISTINCT contact_id, as_of FROM (
    SELECT contact_id, {cutoff} AS as_of FROM events WHERE ts < {cutoff}
    UNION ALL SELECT contact_id, {cutoff} FROM ({known_contacts}))
)"""
        ctes = spine_cte + """,
h AS (
  SELECT s.contact_id, s.as_of, e.event_type, e.ts, e.value, e.account_id,
         date_diff('microsecond', e.ts, s.as_of) AS age,
         date_diff('day', CAST(e.ts AS DATE), CAST(s.as_of AS DATE)) AS day
  FROM spine s LEFT JOIN events e ON e.contact_id = s.contact_id AND e.ts < s.as_of
),
agg AS (
  SELECT contact_id, as_of,
    """ + aggs + """
  FROM h GROUP BY contact_id, as_of
)"""
        if shape == "two_level_spine":
            ctes = spine_cte + "," + _two_level(event_types, cfg, cutoff, spine=True)
        agg_join = "LEFT JOIN agg a ON a.contact_id = s.contact_id AND a.as_of = s.as_of"
        members = """
mem AS (
  SELECT e.contact_id AS m_contact, coalesce(c.account_id, e.account_id) AS m_account, e.ts AS m_ts,
         TRUE AS m_event
  FROM events e LEFT JOIN contacts c ON c.contact_id = e.contact_id
  UNION ALL
  SELECT contact_id, account_id, created_at, FALSE FROM contacts WHERE account_id IS NOT NULL
),
keys AS (SELECT DISTINCT account_id, as_of FROM rows_ WHERE account_id IS NOT NULL),
joined AS (
  SELECT k.account_id AS m_account, k.as_of, m.m_contact,
         CASE WHEN m.m_event THEN date_diff('microsecond', m.m_ts, k.as_of) END AS m_age
  FROM keys k JOIN mem m ON m.m_account = k.account_id AND (m.m_ts IS NULL OR m.m_ts < k.as_of)
),
per_member AS (
  SELECT m_account, as_of, m_contact, """ + ", ".join(member) + """
  FROM joined GROUP BY m_account, as_of, m_contact
),"""
    attr_cols = "".join(f",\n  c.{_q(x)}" for x in attrs)
    rows = f"""
rows_ AS (
  SELECT s.contact_id, s.as_of, coalesce(c.account_id, a.ev_account) AS account_id,
  {feats}{attr_cols}
  FROM spine s {agg_join}
  LEFT JOIN contacts c ON c.contact_id = s.contact_id
)"""
    names = _account_names(cfg)
    if not cfg.account_features:
        return f"WITH {ctes.strip()},{rows}\nSELECT * FROM rows_"
    feature_cols = "r.* EXCLUDE (" + ", ".join(_q(x) for x in attrs) + ")" if attrs else "r.*"
    acct = ",\n  ".join(f"coalesce(x.{_q(c)}, 0) AS {_q(c)}" for c in names)
    attr_tail = "".join(f",\n  r.{_q(x)}" for x in attrs)
    return f"""WITH {ctes.strip()},{rows},{members}
acct AS (
  SELECT m_account, as_of, {", ".join(account)}
  FROM per_member GROUP BY m_account, as_of
)
SELECT {feature_cols},
  {acct}{attr_tail}
FROM rows_ r LEFT JOIN acct x ON x.m_account = r.account_id AND x.as_of = r.as_of"""
