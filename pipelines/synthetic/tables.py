"""The simulated blocks as Arrow tables in the canonical schema, and the world generated at once or chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from propensity.pipelines.synthetic.simulate import _draw_accounts, _simulate_block
from propensity.pipelines.synthetic.world import (
    _BLOCK,
    _COUNTRIES,
    _DAY_US,
    _INDUSTRIES,
    _LEAD_SOURCES,
    _PLANS,
    _PROPERTIES,
    _REPEAT_KINDS,
    _ROLES,
    _TYPE_OF_KIND,
    World,
    WorldConfig,
    _Accounts,
    _Block,
)


def _digit_matrix(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """ASCII bytes of ``f"{prefix}{number:0{width}d}"``, one row per number."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if numbers.size:
        width = max(width, len(str(int(numbers.max()))))
    head = np.frombuffer(prefix.encode(), np.uint8)
    matrix = np.empty((numbers.size, head.size + width), np.uint8)
    matrix[:, : head.size] = head
    rest = numbers.copy()
    for col in range(matrix.shape[1] - 1, head.size - 1, -1):
        matrix[:, col] = rest % 10 + 48
        rest //= 10
    return matrix


def _strings(matrix: np.ndarray, lengths: np.ndarray | None = None) -> pa.Array:
    """A string array from rows of ASCII bytes (the first ``lengths`` bytes of each row)."""
    rows, width = matrix.shape
    if lengths is None:
        offsets = np.arange(rows + 1, dtype=np.int64) * width
        data = np.ascontiguousarray(matrix).ravel()
    else:
        offsets = np.zeros(rows + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = matrix[np.arange(width)[None, :] < lengths[:, None]]
    return pa.LargeStringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))


def _event_ids(contact_matrix: np.ndarray, sequence: np.ndarray) -> pa.Array:
    """``e<contact digits>-<n>`` from the contacts' ``c<digits>`` rows and the sequence numbers."""
    head = contact_matrix.shape[1] + 1
    width = len(str(int(sequence.max()))) if sequence.size else 1
    n_digits = 1 + (sequence[:, None] >= 10 ** np.arange(1, width, dtype=np.int64)).sum(axis=1)
    matrix = np.empty((sequence.size, head + width), np.uint8)
    matrix[:, : head - 1] = contact_matrix
    matrix[:, 0] = ord("e")
    matrix[:, head - 1] = ord("-")
    rest = sequence.copy()
    for col in range(width - 1, -1, -1):  # left-aligned: digit col of an n-digit number
        shift = n_digits - 1 - col
        digit = (rest // 10 ** np.maximum(shift, 0)) % 10 + 48
        matrix[:, head + col] = np.where(shift >= 0, digit, 0)
    return _strings(matrix, head + n_digits)


def _id_width(count: int, minimum: int) -> int:
    return max(minimum, len(str(max(count - 1, 0))))


def _contact_matrix(config: WorldConfig, index: np.ndarray) -> np.ndarray:
    return _digit_matrix("c", index, _id_width(config.contacts, 6))


def _account_matrix(config: WorldConfig, index: np.ndarray) -> np.ndarray:
    return _digit_matrix("a", index, _id_width(config.n_accounts, 5))


def _start_us(config: WorldConfig) -> int:
    return int(np.datetime64(config.start, "us").astype(np.int64))


def _timestamps(config: WorldConfig, offsets_us: np.ndarray) -> pa.Array:
    return pa.array((offsets_us + _start_us(config)).astype("datetime64[us]"))


def _events_table(config: WorldConfig, block: _Block) -> pa.Table:
    contacts = _contact_matrix(config, block.first + np.arange(block.account.size))
    per_event = contacts[block.ev_contact]
    starts = np.flatnonzero(np.diff(block.ev_contact, prepend=-1))
    run_lengths = np.diff(starts, append=block.ev_contact.size)
    sequence = np.arange(block.ev_contact.size) - np.repeat(starts, run_lengths)
    return pa.table(
        {
            "event_id": _event_ids(per_event, sequence),
            "contact_id": _strings(per_event),
            "event_type": _TYPE_OF_KIND.take(pa.array(block.ev_kind)),
            "ts": _timestamps(config, block.ev_ts),
            "value": pa.array(block.ev_value, pa.float64()),
            "account_id": _strings(_account_matrix(config, block.account)[block.ev_contact]),
            "properties": _PROPERTIES.take(pa.array(block.ev_path)),
        }
    )


def _contacts_table(config: WorldConfig, accounts: _Accounts, block: _Block) -> pa.Table:
    index = block.first + np.arange(block.account.size)

    def names(table: Mapping[str, object], codes: np.ndarray) -> pa.Array:
        return pa.array(list(table), pa.large_string()).take(pa.array(codes))

    return pa.table(
        {
            "contact_id": _strings(_contact_matrix(config, index)),
            "account_id": _strings(_account_matrix(config, block.account)),
            "created_at": _timestamps(config, block.created_day * _DAY_US + block.created_tod_us),
            "company_size": pa.array(accounts.company_size[block.account], pa.int64()),
            "industry": names(_INDUSTRIES, accounts.industry[block.account]),
            "country": names(_COUNTRIES, accounts.country[block.account]),
            "role": names(_ROLES, block.role),
            "plan_interest": names(_PLANS, block.plan),
            "lead_source": names(_LEAD_SOURCES, block.source),
        }
    )


def _outcomes_table(config: WorldConfig, block: _Block) -> pa.Table:
    contact = block.first + block.conv_contact
    outcome_ids = _contact_matrix(config, contact)
    outcome_ids[:, 0] = ord("o")
    return pa.table(
        {
            "outcome_id": _strings(outcome_ids),
            "contact_id": _strings(_contact_matrix(config, contact)),
            "ts": _timestamps(config, block.conv_ts),
            "outcome": pa.array(["converted"], pa.large_string()).take(
                pa.array(np.zeros(contact.size, np.int8))
            ),
            "value": pa.array(block.conv_value, pa.float64()),
        }
    )


def _latent_table(config: WorldConfig, block: _Block) -> pa.Table:
    columns = {
        "contact_id": _strings(
            _contact_matrix(config, block.first + np.arange(block.account.size))
        ),
        "intent": pa.array(block.intent),
        "fit_logit": pa.array(block.fit),
        "created_day": pa.array(block.created_day, pa.int64()),
        "trial_rate": pa.array(block.trial_rate),
        "unsubscribe_rate": pa.array(block.unsub_rate),
    }
    for j, kind in enumerate(_REPEAT_KINDS):
        columns[f"rate__{kind}"] = pa.array(block.rates[:, j])
    return pa.table(columns)

def _n_blocks(config: WorldConfig) -> int:
    return -(-config.contacts // _BLOCK)


def generate_world(config: WorldConfig) -> World:
    """Generate the events, contacts, outcomes and hidden state of a synthetic world.

    Parameters
    ----------
    config : WorldConfig
        Size, seed and hidden-truth parameters.

    Returns
    -------
    World
        The same ``config`` always gives identical frames.
    """
    accounts = _draw_accounts(config)
    tables: dict[str, list[pa.Table]] = {"events": [], "contacts": [], "outcomes": [], "latent": []}
    for b in range(_n_blocks(config)):
        block = _simulate_block(config, accounts, b)
        tables["events"].append(_events_table(config, block))
        tables["contacts"].append(_contacts_table(config, accounts, block))
        tables["outcomes"].append(_outcomes_table(config, block))
        tables["latent"].append(_latent_table(config, block))
    frames = {name: pa.concat_tables(parts).to_pandas() for name, parts in tables.items()}
    return World(config=config, **frames)


def iter_event_chunks(
    config: WorldConfig, chunk_contacts: int = 16_384
) -> Iterator[pd.DataFrame]:
    """Yield the world's events chunk by chunk of contacts, without holding the whole world.

    Parameters
    ----------
    config : WorldConfig
        Size, seed and hidden-truth parameters.
    chunk_contacts : int
        Contacts per chunk, rounded up to a multiple of 2,048 (the unit of randomness).

    Yields
    ------
    pandas.DataFrame
        Events of consecutive contacts; concatenated, they equal ``generate_world(config).events``.
    """
    if chunk_contacts < 1:
        raise ValueError("chunk_contacts must be at least 1")
    per_chunk = -(-chunk_contacts // _BLOCK)
    accounts = _draw_accounts(config)
    n_blocks = _n_blocks(config)
    for first in range(0, n_blocks, per_chunk):
        tables = [
            _events_table(config, _simulate_block(config, accounts, b))
            for b in range(first, min(first + per_chunk, n_blocks))
        ]
        yield pa.concat_tables(tables).to_pandas()
