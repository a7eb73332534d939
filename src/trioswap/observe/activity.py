"""The activity store: one record per inference request, in SQLite, behind llama-swap's
`GET /api/metrics/activity` and `GET /api/metrics/stats`.

Where: in memory (`":memory:"`), keeping the newest `max_in_memory` records (llama-swap's
`metricsMaxInMemory`), or in a file (`store.path`), which survives restarts. llama-swap never
trims its file; trioswap keeps the newest `MAX_IN_FILE` there (half a million requests, about
80 MB: weeks of a busy agent's traffic), so the disk and a query's work stay bounded. The stats'
percentiles and histograms read the newest `STATS_SAMPLE` records of those selected. The file
is held with an exclusive lock: one trioswap per file, and a second one is told so.

Every database call runs in a worker thread (`trio.to_thread.run_sync`) on one connection, one
call at a time under a `trio.Lock`. `add` is cheap: it gives the record its id, queues it and
returns; `run` (a task for the app's nursery) writes the queue in batches, one thread call each.
A query writes the queue first, so it sees every record added before it; without `run`, the
queue is written by queries, by `aclose`, and by `add` itself once `PENDING_LIMIT` records wait
(`queue` leaves that `flush` to its caller).
A failed write is logged and its records dropped: activity is worth less than the requests.

The schema's version is SQLite's `user_version`; `MIGRATIONS[n]` takes version n to n + 1, in a
transaction with the version bump. A file of a newer version, or another program's database, is
refused with an `ActivityStoreError` that says so; trioswap never alters what it cannot read.

Records as JSON are llama-swap's `ActivityLogEntry` (`id`, `timestamp` in RFC 3339, `model`,
`req_path`, `resp_status_code`, `tokens` {`input_tokens`, `output_tokens`, `cache_tokens`,
`prompt_per_second`, `tokens_per_second`}, `duration_ms`, `has_capture`) plus trioswap's
`request_id`, `ttft_ms`, `optimizer`, `translation`, `session_id`, `client`, `user_agent`. A
number nobody reported is `null` (llama-swap writes -1 or 0). `input_tokens` is the whole
prompt, its cached part included. The query parameters, pages and stats are llama-swap's too
(see `ActivityStore.query` and `ActivityStore.stats`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

import trio

from trioswap.clip import clip
from trioswap.errors import TrioswapError
from trioswap.observe.timeformat import LAYOUTS

log = logging.getLogger("trioswap.activity")

MEMORY = ":memory:"
DEFAULT_MAX_IN_MEMORY = 1000
MAX_IN_FILE = 500_000
# The stats' percentiles and histograms read the newest this many records of those selected.
STATS_SAMPLE = 10_000
# Records queued before `add` writes them itself (no writer task, or one that falls behind).
PENDING_LIMIT = 1000
# How long a second process waits for the file's lock before it is told the file is in use.
LOCK_WAIT = 0.5
# How long the writer waits after a record arrives before it writes (seconds).
FLUSH_INTERVAL = 0.1
# How long the writer may take, at shutdown, to write what is queued.
SHUTDOWN_FLUSH = 5.0
# llama-swap's paging: 25 a page, at most 999.
DEFAULT_LIMIT = 25
MAX_LIMIT = 999
MAX_PAGE = 10**9
# Values of one repeated filter parameter (`model=a&model=b`).
MAX_FILTER_VALUES = 100
# What a record keeps of outside text (a client's model name, user agent, session id).
TEXT_CHARS = 500
MAX_COUNT = 2**62
MAX_SECONDS = 1e9
MAX_RATE = 1e9
# Year 3000: any later timestamp is a clock gone wrong.
MAX_TIMESTAMP = 32503680000.0

_RFC3339NANO = LAYOUTS["rfc3339nano"]


class ActivityStoreError(TrioswapError):
    """The store's file cannot be used: in use, another program's, or of a newer trioswap."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityRecord:
    """One inference request. Times in seconds (`timestamp` Unix time), speeds in tokens per
    second; None where nothing reported it. `id` is 0 until the store gives one."""

    id: int = 0
    request_id: str
    timestamp: float
    model: str
    path: str
    status: int
    duration: float
    ttft: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    generated_tokens: int | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    optimizer: str | None = None
    translation: str | None = None
    session_id: str | None = None
    client: str | None = None
    user_agent: str | None = None
    has_capture: bool = False

    def to_json(self) -> dict[str, Any]:
        """llama-swap's `ActivityLogEntry`, plus trioswap's fields."""
        return {
            "id": self.id,
            "timestamp": _RFC3339NANO(datetime.fromtimestamp(self.timestamp).astimezone()),
            "model": self.model,
            "req_path": self.path,
            "resp_status_code": self.status,
            "tokens": {
                "cache_tokens": self.cached_tokens,
                "input_tokens": self.prompt_tokens,
                "output_tokens": self.generated_tokens,
                "prompt_per_second": self.prefill_tps,
                "tokens_per_second": self.decode_tps,
            },
            "duration_ms": int(self.duration * 1000),
            "has_capture": self.has_capture,
            "request_id": self.request_id,
            "ttft_ms": None if self.ttft is None else int(self.ttft * 1000),
            "optimizer": self.optimizer,
            "translation": self.translation,
            "session_id": self.session_id,
            "client": self.client,
            "user_agent": self.user_agent,
        }


_COLUMNS = tuple(f.name for f in fields(ActivityRecord))
_INSERT = f"INSERT INTO activity ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM activity"

# Version n + 1 is MIGRATIONS[n] applied to version n. Append; never edit a shipped step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the records.
    (
        """CREATE TABLE activity (
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL,
            timestamp REAL NOT NULL,
            model TEXT NOT NULL,
            path TEXT NOT NULL,
            status INTEGER NOT NULL,
            duration REAL NOT NULL,
            ttft REAL,
            prompt_tokens INTEGER,
            cached_tokens INTEGER,
            generated_tokens INTEGER,
            prefill_tps REAL,
            decode_tps REAL,
            optimizer TEXT,
            translation TEXT,
            session_id TEXT,
            client TEXT,
            user_agent TEXT,
            has_capture INTEGER NOT NULL DEFAULT 0
        )""",
    ),
    # 2: indexes for the Activity page's filters; each ends with the id (SQLite's rowid), so
    # the newest records of one model or session are read first, without a sort.
    (
        "CREATE INDEX activity_time ON activity (timestamp)",
        "CREATE INDEX activity_model ON activity (model)",
        "CREATE INDEX activity_session ON activity (session_id) WHERE session_id IS NOT NULL",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# `sort` keys (llama-swap's UI column ids, and trioswap's `ttft`) → columns. Only these names
# ever reach the SQL text.
SORT_COLUMNS = {
    "id": "id",
    "time": "timestamp",
    "model": "model",
    "req_path": "path",
    "resp_status_code": "status",
    "cached": "cached_tokens",
    "prompt": "prompt_tokens",
    "generated": "generated_tokens",
    "prompt_speed": "prefill_tps",
    "gen_speed": "decode_tps",
    "duration": "duration",
    "ttft": "ttft",
}
# A status that is an error: a client or server error, or no status at all.
_ERROR = "(status < 100 OR status >= 400)"
# The stats' percentiles: column, its name in the JSON, the factor to its unit there.
_PERCENTILE_COLUMNS = (
    ("decode_tps", "decode_tps", 1.0),
    ("prefill_tps", "prefill_tps", 1.0),
    ("ttft", "ttft_ms", 1000.0),
    ("duration", "duration_ms", 1000.0),
)
PERCENTILES = (50, 90, 99)
# llama-swap's histograms of the two speeds, with their own percentiles.
_HISTOGRAMS = (("prompt_histogram", "prefill_tps"), ("gen_histogram", "decode_tps"))
HISTOGRAM_PERCENTILES = (50, 95, 99)

_DIGITS = re.compile(r"\d{1,18}")
_SECONDS = re.compile(r"\d{1,12}(\.\d{1,9})?")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ActivityFilter:
    """Which records a query or the stats cover; every field set narrows (AND)."""

    models: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    min_id: int | None = None
    max_id: int | None = None
    errors: bool | None = None

    def where(self) -> tuple[str, list[Any]]:
        """A parameterized ` WHERE …` (or nothing), and its arguments."""
        conditions: list[str] = []
        args: list[Any] = []
        for column, values in (("model", self.models), ("session_id", self.session_ids)):
            if values:
                conditions.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        for condition, value in (
            ("timestamp >= ?", self.start),
            ("timestamp <= ?", self.end),
            ("id >= ?", self.min_id),
            ("id <= ?", self.max_id),
        ):
            if value is not None:
                conditions.append(condition)
                args.append(value)
        if self.errors is not None:
            conditions.append(_ERROR if self.errors else f"NOT {_ERROR}")
        return (" WHERE " + " AND ".join(conditions) if conditions else ""), args


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    filter: ActivityFilter = field(default_factory=ActivityFilter)
    page: int = 1
    limit: int = DEFAULT_LIMIT
    sort: str = "id"
    descending: bool = True

    def order_by(self) -> str:
        # The id breaks ties, so pages never overlap; unknown numbers sort last either way.
        direction = "DESC" if self.descending else "ASC"
        column = SORT_COLUMNS[self.sort]
        if column == "id":
            return f" ORDER BY id {direction}"
        return f" ORDER BY {column} {direction} NULLS LAST, id {direction}"


Params = Mapping[str, str] | Mapping[str, Sequence[str]]


def parse_filter(params: Params) -> ActivityFilter:
    """llama-swap's filters: `model` (repeatable), `start` and `end` (RFC 3339, or Unix
    seconds), `min_id`, `max_id`; and trioswap's `session_id` (repeatable) and `errors`
    (true/false). Raises ValueError saying what is wrong."""
    start = _optional(params, "start", _parse_time)
    end = _optional(params, "end", _parse_time)
    if start is not None and end is not None and start > end:
        raise ValueError("start must be before end")
    min_id = _optional(params, "min_id", lambda raw: _parse_int(raw, "min_id", 1))
    max_id = _optional(params, "max_id", lambda raw: _parse_int(raw, "max_id", 1))
    if min_id is not None and max_id is not None and min_id > max_id:
        raise ValueError("min_id must be <= max_id")
    return ActivityFilter(
        models=_repeated(params, "model"),
        session_ids=_repeated(params, "session_id"),
        start=start,
        end=end,
        min_id=min_id,
        max_id=max_id,
        errors=_optional(params, "errors", _parse_bool),
    )


def parse_query(params: Params) -> ActivityQuery:
    """The filters, and llama-swap's `page` (from 1), `limit` (1 to 999, 25 unless given),
    `sort` (a key of SORT_COLUMNS, `id` unless given) and `order` (`asc`, `desc` unless
    given). Raises ValueError saying what is wrong."""
    sort = _optional(params, "sort", _parse_sort) or "id"
    order = _optional(params, "order", _parse_order) or "desc"
    return ActivityQuery(
        filter=parse_filter(params),
        page=_optional(params, "page", lambda raw: _parse_int(raw, "page", 1, MAX_PAGE)) or 1,
        limit=_optional(params, "limit", _parse_limit) or DEFAULT_LIMIT,
        sort=sort,
        descending=order == "desc",
    )


class ActivityStore(trio.abc.AsyncResource):
    """Open with `await ActivityStore.open(path)`; `async with` closes it."""

    def __init__(self, connection: sqlite3.Connection, path: str, cap: int, next_id: int):
        self._connection: sqlite3.Connection | None = connection
        self.path = path
        self.in_memory = path == MEMORY
        self._cap = cap
        self._next_id = next_id
        self._pending: list[ActivityRecord] = []
        self._wake = trio.Event()
        self._lock = trio.Lock()

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str] = MEMORY,
        *,
        max_in_memory: int = DEFAULT_MAX_IN_MEMORY,
        max_in_file: int = MAX_IN_FILE,
    ) -> ActivityStore:
        """The store at `path` (a file, created when missing and migrated when old), or in
        memory (`max_in_memory` 0: nothing is kept, as llama-swap's metricsMaxInMemory: 0).
        Raises ActivityStoreError when the file cannot be the store."""
        path = os.fspath(path)
        cap = max_in_memory if path == MEMORY else max_in_file
        if cap < 0:
            raise ValueError(f"the activity store cannot keep {cap} records")
        connection, next_id = await trio.to_thread.run_sync(_connect, path)
        return cls(connection, path, cap, next_id)

    def reserve_id(self) -> int:
        """An id for a record added later: an exchange's capture is filed under it from the
        start. `add` keeps a record's id when it has one."""
        found = self._next_id
        self._next_id += 1
        return found

    async def add(self, record: ActivityRecord) -> ActivityRecord:
        """`record` as stored: with its id, and its fields bounded (text clipped, numbers
        that cannot be measures made None). Written within FLUSH_INTERVAL; seen by every
        later query."""
        stored = self.queue(record)
        if self.backlogged:
            await self.flush()
        return stored

    def queue(self, record: ActivityRecord) -> ActivityRecord:
        """`add` without waiting: a caller that queues must `flush` once `backlogged`."""
        if self._connection is None:
            raise trio.ClosedResourceError("the activity store is closed")
        stored = _bounded(record, record.id or self.reserve_id())
        if self._cap:
            self._pending.append(stored)
            self._wake.set()
        return stored

    @property
    def backlogged(self) -> bool:
        """PENDING_LIMIT records wait: the writer is behind (or not running)."""
        return len(self._pending) >= PENDING_LIMIT

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: writes what `add` queued, in batches, until cancelled; then what is
        left, within SHUTDOWN_FLUSH seconds. Start it with `await nursery.start(store.run)`."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                # Gather what arrives meanwhile: one thread hop and one transaction for many
                # records, not one each (queries write what is pending first, so they see all).
                await trio.sleep(FLUSH_INTERVAL)
                self._wake = trio.Event()
                await self.flush()
        finally:
            with trio.move_on_after(SHUTDOWN_FLUSH, shield=True):
                await self.flush()

    async def query(self, params: Params) -> dict[str, Any]:
        """`GET /api/metrics/activity`: `{"data": [records], "page", "limit", "total",
        "total_pages"}`, newest first unless `sort`/`order` say otherwise. Raises ValueError
        for a bad parameter (unknown ones are ignored, as llama-swap does)."""
        query = parse_query(params)
        rows, total = await self._read(lambda c: _select(c, query))
        return {
            "data": [_record(row).to_json() for row in rows],
            "page": query.page,
            "limit": query.limit,
            "total": total,
            "total_pages": -(-total // query.limit),
        }

    async def stats(self, params: Params) -> dict[str, Any]:
        """`GET /api/metrics/stats` over the records the filters of `query` select:
        llama-swap's `total_requests`, `total_input_tokens`, `total_output_tokens`,
        `total_cache_tokens`, `prompt_histogram` and `gen_histogram` (prefill and decode
        speeds: `bins`, `min`, `max`, `binSize`, `p50`, `p95`, `p99`, or null), plus
        trioswap's `total_errors` and `percentiles`: for `decode_tps`, `prefill_tps`,
        `ttft_ms` and `duration_ms`, `{"count", "p50", "p90", "p99"}` or null."""
        where = parse_filter(params).where()
        return await self._read(lambda c: _stats(c, *where))

    async def aclose(self) -> None:
        """Write what is queued and close. Later calls do nothing."""
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is None:
                return
            batch, self._pending = self._pending, []
            error = await trio.to_thread.run_sync(_write_and_close, connection, batch, self._cap)
        _log_write_error(error, batch)

    async def flush(self) -> None:
        if not self._pending or self._connection is None:
            return
        await self._read(lambda _: None)

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """`read` in a worker thread, after writing what is queued."""
        async with self._lock:
            connection = self._connection
            if connection is None:
                raise trio.ClosedResourceError("the activity store is closed")
            batch, self._pending = self._pending, []
            error, result = await trio.to_thread.run_sync(
                _write_then, connection, batch, self._cap, read
            )
        _log_write_error(error, batch)
        return result


# --- parameters ---


def _values(params: Params, name: str) -> list[str]:
    getlist = getattr(params, "getlist", None)  # werkzeug's MultiDict, as Quart gives
    if getlist is not None:
        values = list(getlist(name))
    else:
        value = params.get(name)
        values = [] if value is None else [value] if isinstance(value, str) else list(value)
    if len(values) > MAX_FILTER_VALUES:
        raise ValueError(f"at most {MAX_FILTER_VALUES} values of {name}")
    return values


def _repeated(params: Params, name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in _values(params, name) if v.strip()))


def _optional(params: Params, name: str, parse: Callable[[str], T]) -> T | None:
    """The first value of `name` (as Go's `Query().Get`), parsed; None when absent or blank."""
    values = _values(params, name)
    raw = values[0].strip() if values else ""
    return parse(raw) if raw else None


def _parse_int(raw: str, name: str, low: int, high: int = MAX_COUNT) -> int:
    if _DIGITS.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _parse_limit(raw: str) -> int:
    return _parse_int(raw, "limit", 1, MAX_LIMIT)


def _parse_time(raw: str) -> float:
    if _SECONDS.fullmatch(raw) is not None:
        return float(raw)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ValueError(
            f"{clip(raw, 40)!r} is not a time: use RFC 3339 with a zone "
            "(2026-01-31T12:00:00Z) or Unix seconds"
        )
    return when.timestamp()


def _parse_bool(raw: str) -> bool:
    value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
    if value is None:
        raise ValueError("errors must be true or false")
    return value


def _parse_sort(raw: str) -> str:
    if raw not in SORT_COLUMNS:
        raise ValueError(f"invalid sort column {clip(raw, 40)!r}: one of {', '.join(SORT_COLUMNS)}")
    return raw


def _parse_order(raw: str) -> str:
    order = raw.lower()
    if order not in ("asc", "desc"):
        raise ValueError("order must be asc or desc")
    return order


# --- records in, bounded ---


def _bounded(record: ActivityRecord, record_id: int) -> ActivityRecord:
    """`record` as the store keeps it: numbers that cannot be measures become None (or 0 where a
    value is required), outside text is clipped and made printable (SQLite and JSON take it)."""
    return ActivityRecord(
        id=record_id,
        request_id=clip(record.request_id, TEXT_CHARS),
        timestamp=_number(record.timestamp, MAX_TIMESTAMP) or 0.0,
        model=clip(record.model, TEXT_CHARS),
        path=clip(record.path, TEXT_CHARS),
        status=record.status if type(record.status) is int and 0 <= record.status <= 999 else 0,
        duration=_number(record.duration, MAX_SECONDS) or 0.0,
        ttft=_number(record.ttft, MAX_SECONDS),
        prompt_tokens=_count(record.prompt_tokens),
        cached_tokens=_count(record.cached_tokens),
        generated_tokens=_count(record.generated_tokens),
        prefill_tps=_rate(record.prefill_tps),
        decode_tps=_rate(record.decode_tps),
        optimizer=_text(record.optimizer),
        translation=_text(record.translation),
        session_id=_text(record.session_id),
        client=_text(record.client),
        user_agent=_text(record.user_agent),
        has_capture=bool(record.has_capture),
    )


def _number(value: object, high: float) -> float | None:
    """A finite float from 0 to `high`, or None."""
    if type(value) is int:
        return float(value) if 0 <= value <= high else None
    if type(value) is float:
        return value if 0 <= value <= high else None  # NaN compares false
    return None


def _rate(value: object) -> float | None:
    rate = _number(value, MAX_RATE)
    return rate if rate else None


def _count(value: object) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_COUNT else None


def _text(value: str | None) -> str | None:
    return None if value is None else clip(value, TEXT_CHARS)


def _record(row: tuple[Any, ...]) -> ActivityRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["has_capture"] = bool(values["has_capture"])
    return ActivityRecord(**values)


def _log_write_error(error: str | None, batch: list[ActivityRecord]) -> None:
    if error is not None:
        log.warning("activity store: %d records not written: %s", len(batch), error)


# --- in the worker thread ---


def _connect(path: str) -> tuple[sqlite3.Connection, int]:
    """A connection to the store at `path`, migrated to SCHEMA_VERSION, and the next id."""
    try:
        connection = sqlite3.connect(
            path, timeout=LOCK_WAIT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as error:
        raise ActivityStoreError(f"cannot open the activity store {path}: {error}") from error
    try:
        if path != MEMORY:
            # Locks are kept from the first read on: no other process uses the file after.
            connection.execute("PRAGMA locking_mode = EXCLUSIVE")
            _schema_version(connection, path)  # a file that is not ours is left as it was
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("BEGIN EXCLUSIVE")
        try:
            for step in range(_schema_version(connection, path), SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {step + 1}")
            (next_id,) = connection.execute(
                "SELECT COALESCE(MAX(id), 0) + 1 FROM activity"
            ).fetchone()
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as error:
        connection.close()
        if "locked" in str(error):
            raise ActivityStoreError(
                f"the activity store {path} is in use by another process "
                "(another trioswap with this store.path?)"
            ) from error
        raise ActivityStoreError(f"cannot open the activity store {path}: {error}") from error
    except sqlite3.DatabaseError as error:
        connection.close()
        raise ActivityStoreError(
            f"{path} is not an SQLite database ({error}): point store.path at a new file"
        ) from error
    except BaseException:
        connection.close()
        raise
    return connection, next_id


def _schema_version(connection: sqlite3.Connection, path: str) -> int:
    """The store's schema version; ActivityStoreError for a newer one or another program's."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise ActivityStoreError(
            f"the activity store {path} has schema version {version}, newer than this "
            f"trioswap's {SCHEMA_VERSION}: a newer trioswap wrote it. Run that version, or point "
            "store.path at another file"
        )
    if version == 0:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
        if tables:
            raise ActivityStoreError(
                f"{path} is not a trioswap activity store (it holds {', '.join(tables[:5])}): "
                "point store.path at a new file"
            )
    return version


def _write_then(
    connection: sqlite3.Connection,
    batch: list[ActivityRecord],
    cap: int,
    read: Callable[[sqlite3.Connection], T],
) -> tuple[str | None, T]:
    """Write `batch` (dropping the oldest records past `cap`), then `read`. A failed write is
    rolled back and reported, not raised: the read still answers."""
    error = None
    if batch:
        try:
            connection.execute("BEGIN")
            try:
                connection.executemany(
                    _INSERT, [tuple(getattr(r, c) for c in _COLUMNS) for r in batch]
                )
                connection.execute("DELETE FROM activity WHERE id <= ?", (batch[-1].id - cap,))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as failure:
            error = str(failure)
    return error, read(connection)


def _write_and_close(
    connection: sqlite3.Connection, batch: list[ActivityRecord], cap: int
) -> str | None:
    try:
        return _write_then(connection, batch, cap, lambda _: None)[0]
    finally:
        connection.close()


def _select(connection: sqlite3.Connection, query: ActivityQuery) -> tuple[list[tuple], int]:
    where, args = query.filter.where()
    (total,) = connection.execute(f"SELECT COUNT(*) FROM activity{where}", args).fetchone()
    rows = connection.execute(
        f"{_SELECT}{where}{query.order_by()} LIMIT ? OFFSET ?",
        [*args, query.limit, (query.page - 1) * query.limit],
    ).fetchall()
    return rows, total


def _stats(connection: sqlite3.Connection, where: str, args: list[Any]) -> dict[str, Any]:
    requests, errors, prompt, generated, cached = connection.execute(
        f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {_ERROR} THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(generated_tokens), 0), "
        f"COALESCE(SUM(cached_tokens), 0) FROM activity{where}",
        args,
    ).fetchone()
    # The speeds and times of the newest STATS_SAMPLE records selected, one list a column.
    columns = [column for column, _, _ in _PERCENTILE_COLUMNS]
    rows = connection.execute(
        f"SELECT {', '.join(columns)} FROM activity{where} ORDER BY id DESC LIMIT ?",
        [*args, STATS_SAMPLE],
    ).fetchall()
    known = {c: sorted(row[i] for row in rows if row[i] is not None) for i, c in enumerate(columns)}

    stats: dict[str, Any] = {
        "total_requests": requests,
        "total_input_tokens": prompt,
        "total_output_tokens": generated,
        "total_cache_tokens": cached,
    }
    for name, column in _HISTOGRAMS:
        stats[name] = _histogram(known[column])
    stats["total_errors"] = errors
    stats["percentiles"] = {
        name: {"count": len(known[column])}
        | {f"p{p}": _percentile(known[column], p) * unit for p in PERCENTILES}
        if known[column]
        else None
        for column, name, unit in _PERCENTILE_COLUMNS
    }
    return stats


def _percentile(ordered: list[float], p: float) -> float:
    """Interpolated between the two nearest ranks, as llama-swap computes it."""
    rank = p / 100 * (len(ordered) - 1)
    lower, upper = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    return lower + (rank - math.floor(rank)) * (upper - lower)


def _histogram(ordered: list[float]) -> dict[str, Any] | None:
    """llama-swap's histogram: Sturges' bin count (5 to 20) over [min, max], or one bin when
    every value is the same."""
    if not ordered:
        return None
    low, high = ordered[0], ordered[-1]
    if low == high:
        bins, size = [len(ordered)], 0.0
    else:
        n = min(20, max(5, math.ceil(math.log2(len(ordered))) + 1))
        size = (high - low) / n
        bins = [0] * n
        for value in ordered:
            bins[min(math.floor((value - low) / size), n - 1)] += 1
    return {"bins": bins, "min": low, "max": high, "binSize": size} | {
        f"p{p}": _percentile(ordered, p) for p in HISTOGRAM_PERCENTILES
    }
