"""Read CSV, Parquet, JSON Lines and Segment-spec JSON Lines files into raw rows.

Raw means "as in the file": nothing is parsed or checked here (see ``propensity.features.validate``).
Every reader adds a ``__row_number`` column, the 1-based data row (CSV: record after the
header; JSON Lines: line number) so a rejected row can be found again.

Two shapes are offered:

- :func:`read_frame` reads a whole file into a pandas frame (small files, JSON Lines, tests);
- :func:`open_csv` and :func:`parquet_relation` stream a file into DuckDB without holding it
  in memory (what ``propensity.features.store.ingest_file`` uses for CSV and Parquet).
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from propensity.features.schema import (
    READER_COLUMNS,
    ROW_NUMBER,
    SOURCE_ERROR,
    SOURCE_TEXT,
    Kind,
    schema_for,
)
from propensity.features.segment import merge_identifies, segment_row, segment_shaped
from propensity.features.validate import DataValidationError, quote_literal

__all__ = [
    "FORMATS",
    "Format",
    "SourceError",
    "check_encoding",
    "check_parquet",
    "detect_format",
    "open_csv",
    "parquet_relation",
    "read_frame",
    "read_segment",
    "segment_shaped",
]

Format = Literal["csv", "parquet", "jsonl", "segment"]
FORMATS: tuple[Format, ...] = get_args(Format)

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_SNIFF_RECORDS = 5  # JSON records looked at to recognise a Segment export
_CHUNK_BYTES = 1 << 24
_CSV_BLOCK_BYTES = 1 << 24
_SHOW_CHARS = 200  # a broken row's text kept in the rejects is cut to this length
_PARQUET_MAGIC = b"PAR1"
# Segment trait names that would collide with canonical contact columns are kept, prefixed.
# A JSON record is a Segment call when its `type` is one of these and it carries a Segment field.


def _refuse_reader_columns(name: str, columns: Any) -> None:
    """A file column named like a column the readers add would take its place: refuse it."""
    taken = [c for c in columns if c in READER_COLUMNS]
    if taken:
        raise SourceError(
            f"{name}: column(s) {', '.join(map(repr, taken))} have names propensity uses "
            "internally (the file's row numbers and unreadable rows); rename them in the file"
        )


class SourceError(DataValidationError):
    """A file cannot be read (unknown format, undecodable bytes, malformed JSON)."""


# --------------------------------------------------------------------------- format detection


def detect_format(path: str | Path, fmt: str | None = None, encoding: str = "utf-8") -> Format:
    """Return the format of ``path``: ``fmt`` when given, else from the extension.

    A JSON Lines file whose first records have ``type`` and ``userId`` or ``anonymousId`` is
    reported as ``"segment"``.

    Raises
    ------
    SourceError
        If ``fmt`` is unknown or the extension is not recognised.
    """
    path = Path(path)
    if fmt is not None:
        if fmt not in FORMATS:
            raise SourceError(f"{path.name}: unknown format {fmt!r}; expected one of {FORMATS}")
        return fmt  # type: ignore[return-value]
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise SourceError(
            f"{path.name}: cannot tell the format from the extension {path.suffix!r}; "
            f"use one of {', '.join(sorted(_EXTENSIONS))} or pass fmt= ({', '.join(FORMATS)})"
        )
    if found == "jsonl" and _looks_like_segment(path, encoding):
        return "segment"
    return found


def _looks_like_segment(path: Path, encoding: str) -> bool:
    records = []
    try:
        for _, record, _error in _iter_json_records(path, encoding):
            if record is None:
                continue  # a broken line says nothing about the format
            records.append(record)
            if len(records) >= _SNIFF_RECORDS:
                break
    except (SourceError, UnicodeDecodeError):
        return False  # reported properly when the file is read
    return bool(records) and all(segment_shaped(r) for r in records)


# --------------------------------------------------------------------------- encodings


def check_encoding(path: str | Path, encoding: str = "utf-8") -> None:
    """Raise :class:`SourceError` naming the byte offset and line of the first undecodable byte.

    The file is read in chunks through an incremental decoder, so memory stays bounded.
    """
    path = Path(path)
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError as exc:
        raise SourceError(f"{path.name}: unknown encoding {encoding!r}") from exc
    offset = newlines = 0
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(_CHUNK_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                at = max(offset - pending + exc.start, 0)
                line = newlines + chunk[: max(at - offset, 0)].count(b"\n") + 1
                bad = exc.object[exc.start : exc.start + 1]
                raise SourceError(
                    f"{path.name}: not valid {encoding} at byte offset {at} (line {line}): "
                    f"byte 0x{bad.hex() or '??'} ({exc.reason}). Pass the file's encoding, e.g. "
                    f"encoding='latin-1' or encoding='cp1252'"
                ) from exc
            if not chunk:
                return
            offset += len(chunk)
            newlines += chunk.count(b"\n")


# --------------------------------------------------------------------------- CSV and Parquet


def _csv_header(path: Path, encoding: str) -> list[str]:
    with path.open(encoding=encoding, newline="") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise SourceError(f"{path.name}: empty file (no header row)")
    names = [h.lstrip("\ufeff").strip() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourceError(f"{path.name}: duplicate column name(s) {', '.join(map(repr, dupes))}")
    _refuse_reader_columns(path.name, names)
    return names


def open_csv(path: str | Path, *, encoding: str = "utf-8") -> pa.RecordBatchReader:
    """Stream a CSV file as text columns plus ``__row_number`` (and the reader's rejects).

    Every column is read as text (DuckDB parses it during validation) and only empty cells are
    null, so ``"007"`` stays ``"007"``. Quoted values may contain newlines. A row with too few
    or too many fields (or an unterminated quote, which runs to the end of the file) does not
    stop the file: it comes out as a row of nulls with ``__source_error`` (the reason) and
    ``__source_text`` (the row as written), which validation rejects with its row number.

    Parameters
    ----------
    path : str or Path
        A CSV file with a header row.
    encoding : str
        Text encoding of the file (any Python codec name).

    Returns
    -------
    pyarrow.RecordBatchReader
        Readable once; memory stays bounded by the block size.

    Raises
    ------
    SourceError
        If the file is not valid in ``encoding``, is empty, or has duplicate column names.
    """
    path = Path(path)
    check_encoding(path, encoding)
    names = _csv_header(path, encoding)
    bad: list[tuple[int, str, str]] = []  # (data row, reason, text) of rows pyarrow skipped
    try:
        reader = _open_csv_reader(path, encoding, names, bad)
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{path.name}: cannot parse the CSV: {exc}") from exc
    schema = reader.schema.append(pa.field(ROW_NUMBER, pa.int64()))
    schema = schema.append(pa.field(SOURCE_ERROR, pa.string()))
    schema = schema.append(pa.field(SOURCE_TEXT, pa.string()))

    def numbered() -> Iterator[pa.RecordBatch]:
        start, reported = 1, 0  # next data row number; bad rows already emitted
        nulls = pa.nulls(0, pa.string())
        try:
            for batch in reader:
                # the handler saw this batch's bad rows while parsing it: number around them
                skipped = np.array(sorted(r for r, _, _ in bad if r >= start), dtype=np.int64)
                candidates = np.arange(start, start + batch.num_rows + len(skipped), dtype=np.int64)
                rows = candidates[~np.isin(candidates, skipped)][: batch.num_rows]
                if len(rows):
                    start = int(rows[-1]) + 1
                    nulls = pa.nulls(batch.num_rows, pa.string())
                    yield pa.RecordBatch.from_arrays(
                        [*batch.columns, pa.array(rows), nulls, nulls], schema=schema
                    )
                if len(bad) > reported:
                    yield _bad_rows_batch(schema, bad[reported:])
                    reported = len(bad)
            if len(bad) > reported:
                yield _bad_rows_batch(schema, bad[reported:])
        except pa.ArrowInvalid as exc:
            raise SourceError(
                f"{path.name}: cannot parse the CSV after row {start - 1}: {exc}"
            ) from exc

    return pa.RecordBatchReader.from_batches(schema, numbered())


def _bad_rows_batch(schema: pa.Schema, bad: list[tuple[int, str, str]]) -> pa.RecordBatch:
    """Rows the CSV reader skipped, as rows of nulls with their number, reason and text."""
    n = len(bad)
    columns = [pa.nulls(n, field.type) for field in schema][: len(schema) - 3]
    return pa.RecordBatch.from_arrays(
        [
            *columns,
            pa.array([r for r, _, _ in bad], pa.int64()),
            pa.array([reason for _, reason, _ in bad], pa.string()),
            pa.array([text for _, _, text in bad], pa.string()),
        ],
        schema=schema,
    )


def _open_csv_reader(
    path: Path, encoding: str, names: list[str], bad: list[tuple[int, str, str]]
) -> pacsv.CSVStreamingReader:
    # Bad rows go through pyarrow's invalid_row_handler, not DuckDB's read_csv(store_rejects):
    # this reader is pyarrow's (any Python codec, every cell read as text, bounded memory), and
    # its rows then meet the same validation as every other source; DuckDB's reader would
    # bring its own sniffing, type and encoding rules (utf-8/16 and latin-1 only).
    def skip(row: Any) -> str:
        # pyarrow numbers records from 1 counting the header (the skipped first row), and only
        # single-threaded (use_threads=False): measured as fast here on 2 cores (2M rows, 0.5 s)
        number = row.number - 1 if row.number is not None and row.number > 0 else -1
        if row.text.count("\n") and row.actual_columns < row.expected_columns:
            reason = (
                f"expected {row.expected_columns} fields, found {row.actual_columns} (an "
                "unterminated quote runs to the end of the file)"
            )
        else:
            reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        bad.append((number, reason, row.text[:_SHOW_CHARS]))
        return "skip"

    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(
            encoding=encoding,
            block_size=_CSV_BLOCK_BYTES,
            skip_rows=1,
            column_names=names,
            use_threads=False,  # row numbers of bad rows (pyarrow gives none with threads)
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
        ),
    )


def check_parquet(path: str | Path) -> None:
    """Raise :class:`SourceError` unless ``path`` looks like a Parquet file with usable columns.

    Parquet files start and end with the bytes ``PAR1``: checked here so that an empty file, a
    CSV or JSON file named ``.parquet`` (or given ``--format parquet``) gets a message instead
    of a reader's error.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise SourceError(f"{path.name}: empty file (0 bytes), not a Parquet file")
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if size < 12 or head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
        hint = ""
        try:
            start = head + path.open("rb").read(256)[4:]
            text = start.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text.lstrip().startswith(("{", "[")):
            hint = ": it looks like JSON; pass --format jsonl (or name it .jsonl)"
        elif text and ("," in text or "\t" in text or ";" in text):
            hint = ": it looks like CSV text; pass --format csv (or name it .csv)"
        raise SourceError(
            f"{path.name}: not a Parquet file (a Parquet file starts and ends with 'PAR1', this "
            f"one starts with {head!r}){hint}"
        )
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path.name}: cannot read the Parquet file: {exc}") from exc
    _refuse_reader_columns(path.name, names)


def parquet_relation(path: str | Path) -> str:
    """DuckDB SQL reading a Parquet file with ``__row_number`` (streamed, never in pandas).

    Raises
    ------
    SourceError
        If the file is not Parquet (see :func:`check_parquet`).
    """
    check_parquet(path)
    lit = quote_literal(Path(path).resolve().as_posix())
    return (
        f"(SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS {ROW_NUMBER} "
        f"FROM read_parquet({lit}, file_row_number = true))"
    )


# --------------------------------------------------------------------------- JSON (Lines)


def _iter_json_records(
    path: Path, encoding: str
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, object, None) for a JSON Lines file, or (index, object, None) for a
    JSON array; a line that is no JSON object gives (line number, None, reason)."""
    with path.open(encoding=encoding) as fh:
        first = fh.read(1)
        while first and first.isspace():
            first = fh.read(1)
        if first == "[":
            fh.seek(0)
            try:
                items = json.load(fh)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path.name}: not valid JSON: {exc}") from exc
            numbered = enumerate(items, start=1)
        else:
            fh.seek(0)
            numbered = enumerate(fh, start=1)
        for number, item in numbered:
            if isinstance(item, str):
                if not item.strip():
                    continue
                try:
                    item = json.loads(item.rstrip("\r\n"))  # (columns in the message on its line)
                except json.JSONDecodeError as exc:
                    yield number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                    continue
            if not isinstance(item, dict):
                yield number, None, f"expected a JSON object, got {type(item).__name__}"
                continue
            yield number, item, None


def _line_text(path: Path, encoding: str, numbers: set[int]) -> dict[int, str]:
    """The text of the given lines (cut), for the rejects of lines that are not JSON objects."""
    found: dict[int, str] = {}
    if not numbers:
        return found
    with path.open(encoding=encoding) as fh:
        for number, line in enumerate(fh, start=1):
            if number in numbers:
                found[number] = line.rstrip("\r\n")[:_SHOW_CHARS]
                if len(found) == len(numbers):
                    break
    return found


def _json_rows(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """:func:`_iter_json_records`, refusing the file when no line at all is a JSON object (it is
    then no JSON Lines file: a CSV given ``--format jsonl``, say)."""
    good = 0
    first_error = None
    for number, record, error in _iter_json_records(path, encoding):
        if record is None:
            first_error = first_error or f"line {number}: {error}"
        else:
            good += 1
        yield number, record, error
    if not good and first_error:
        raise SourceError(f"{path.name}: no line is a JSON object ({first_error}); is it JSON Lines?")


def _error_rows(path: Path, encoding: str, errors: list[tuple[int, str]]) -> list[dict[str, Any]]:
    texts = _line_text(path, encoding, {n for n, _ in errors})
    return [
        {ROW_NUMBER: n, SOURCE_ERROR: reason, SOURCE_TEXT: texts.get(n)} for n, reason in errors
    ]


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    rows, errors = [], []
    for n, record, error in _json_rows(path, encoding):
        if record is None:
            errors.append((n, error))
            continue
        _refuse_reader_columns(f"{path.name} line {n}", record)
        rows.append({ROW_NUMBER: n, **record})
    rows += _error_rows(path, encoding, errors)
    if not rows:
        return pd.DataFrame({ROW_NUMBER: []})
    return pd.DataFrame.from_records(sorted(rows, key=lambda r: r[ROW_NUMBER]))


def read_segment(path: str | Path, *, encoding: str = "utf-8") -> dict[str, pd.DataFrame]:
    """Read a Segment-spec JSON Lines export into raw events and contacts frames.

    ``track`` calls become events and ``identify`` calls contacts, by
    :func:`propensity.features.segment.segment_row` (the mapping, written once); identify calls
    of one user are merged, a later trait overriding an earlier one.

    Returns
    -------
    dict
        ``{"events": frame, "contacts": frame}``; each has ``__row_number`` = line number.
    """
    path = Path(path)
    tracks: list[dict[str, Any]] = []
    identifies: list[dict[str, Any]] = []
    errors: list[tuple[int, str]] = []
    for number, rec, error in _json_rows(path, encoding):
        if rec is None:
            errors.append((number, error))  # rejected in both tables: it may be either call
            continue
        mapped = segment_row(number, rec)
        if mapped is not None:
            (tracks if mapped[0] == "events" else identifies).append(mapped[1])
    broken = _error_rows(path, encoding, errors)
    events_cols = [ROW_NUMBER, *(c for c in schema_for("events").names)]
    if broken:
        events_cols += [SOURCE_ERROR, SOURCE_TEXT]
    tracks = sorted([*tracks, *broken], key=lambda r: r[ROW_NUMBER])
    events = pd.DataFrame.from_records(tracks, columns=events_cols)
    contacts = pd.DataFrame.from_records(
        sorted([*merge_identifies(identifies), *broken], key=lambda r: r[ROW_NUMBER])
    )
    if contacts.empty:
        contacts = pd.DataFrame(columns=[ROW_NUMBER, "contact_id"])
    # A trait no identify call sets would otherwise blank the stored value on upsert.
    contacts = contacts.dropna(axis="columns", how="all").reindex(
        columns=list(dict.fromkeys([ROW_NUMBER, "contact_id", *contacts.columns]))
    )
    return {"events": events, "contacts": contacts}


# --------------------------------------------------------------------------- whole-file frames


def read_frame(
    path: str | Path,
    kind: Kind,
    *,
    fmt: str | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a whole file into a raw pandas frame with ``__row_number``.

    Parameters
    ----------
    path : str or Path
        The file.
    kind : {"events", "contacts", "outcomes"}
        Which rows to take from a Segment file (track calls for events, identify calls for
        contacts; a Segment file has no outcomes). Other formats ignore it.
    fmt : {"csv", "parquet", "jsonl", "segment"}, optional
        Overrides the format detected from the extension.
    encoding : str
        Text encoding of CSV and JSON files.

    Returns
    -------
    pandas.DataFrame
        CSV columns are text (empty cells null); JSON values keep their JSON types.
    """
    path = Path(path)
    schema_for(kind)
    fmt = detect_format(path, fmt, encoding)
    if fmt == "csv":
        return open_csv(path, encoding=encoding).read_all().to_pandas()
    if fmt == "parquet":
        check_parquet(path)
        frame = pd.read_parquet(path)
        frame[ROW_NUMBER] = np.arange(1, len(frame) + 1)
        return frame
    check_encoding(path, encoding)
    if fmt == "segment":
        if kind == "outcomes":
            raise SourceError(
                f"{path.name}: a Segment file has track and identify calls, no outcomes"
            )
        return read_segment(path, encoding=encoding)[kind]
    return _read_jsonl(path, encoding)
