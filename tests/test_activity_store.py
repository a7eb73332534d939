"""The activity store: llama-swap's activity and stats queries checked against a plain Python
reference, its caps, its file across restarts and schema versions, and many tasks adding at once."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import statistics
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from tests.conftest import wait_until
from trioswap.observe import activity
from trioswap.observe.activity import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SORT_COLUMNS,
    ActivityRecord,
    ActivityStore,
    ActivityStoreError,
)


def record(**fields: Any) -> ActivityRecord:
    base: dict[str, Any] = {
        "request_id": "req",
        "timestamp": 1_764_000_000.0,
        "model": "qwen",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration": 1.5,
    }
    return ActivityRecord(**(base | fields))


async def add_all(store: ActivityStore, records: Sequence[ActivityRecord]) -> list[ActivityRecord]:
    return [await store.add(r) for r in records]


# --- the reference: llama-swap's parameters, read plainly ---


def is_error(status: int) -> bool:
    return status < 100 or status >= 400


def reference_select(stored: list[ActivityRecord], params: Mapping[str, Any]) -> list:
    def values(name: str) -> list[str]:
        value = params.get(name)
        return [] if value is None else [value] if isinstance(value, str) else list(value)

    def first(name: str) -> str | None:
        return values(name)[0] if values(name) else None

    models = set(values("model"))
    sessions = set(values("session_id"))
    start = float(first("start")) if first("start") else None
    end = float(first("end")) if first("end") else None
    min_id = int(first("min_id")) if first("min_id") else None
    max_id = int(first("max_id")) if first("max_id") else None
    errors = {None: None, "true": True, "false": False}[first("errors")]

    def keep(r: ActivityRecord) -> bool:
        return (
            (not models or r.model in models)
            and (not sessions or r.session_id in sessions)
            and (start is None or r.timestamp >= start)
            and (end is None or r.timestamp <= end)
            and (min_id is None or r.id >= min_id)
            and (max_id is None or r.id <= max_id)
            and (errors is None or is_error(r.status) == errors)
        )

    return [r for r in stored if keep(r)]


def reference_query(stored: list[ActivityRecord], params: Mapping[str, Any]) -> dict[str, Any]:
    rows = reference_select(stored, params)
    attribute = SORT_COLUMNS[params.get("sort", "id")]
    descending = params.get("order", "desc").lower() == "desc"
    known = [r for r in rows if getattr(r, attribute) is not None]
    unknown = [r for r in rows if getattr(r, attribute) is None]
    known.sort(key=lambda r: (getattr(r, attribute), r.id), reverse=descending)
    unknown.sort(key=lambda r: r.id, reverse=descending)
    ordered = known + unknown  # unknown numbers last, whichever the order
    page, limit = int(params.get("page", 1)), int(params.get("limit", 25))
    return {
        "data": [r.to_json() for r in ordered[(page - 1) * limit : page * limit]],
        "page": page,
        "limit": limit,
        "total": len(rows),
        "total_pages": math.ceil(len(rows) / limit),
    }


def reference_percentile(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def reference_stats(stored: list[ActivityRecord], params: Mapping[str, Any]) -> dict[str, Any]:
    rows = reference_select(stored, params)
    newest = sorted(rows, key=lambda r: -r.id)[: activity.STATS_SAMPLE]

    def known(attribute: str) -> list[float]:
        return [getattr(r, attribute) for r in newest if getattr(r, attribute) is not None]

    def histogram(values: list[float]) -> dict[str, Any] | None:
        if not values:
            return None
        low, high = min(values), max(values)
        if low == high:
            bins, size = [len(values)], 0.0
        else:
            count = min(20, max(5, math.ceil(math.log2(len(values))) + 1))
            size = (high - low) / count
            bins = [0] * count
            for v in values:
                bins[min(int((v - low) / size), count - 1)] += 1
        spread = {f"p{p}": reference_percentile(values, p) for p in (50, 95, 99)}
        return {"bins": bins, "min": low, "max": high, "binSize": size, **spread}

    def percentiles(values: list[float], unit: float) -> dict[str, Any] | None:
        if not values:
            return None
        spread = {f"p{p}": reference_percentile(values, p) * unit for p in (50, 90, 99)}
        return {"count": len(values), **spread}

    return {
        "total_requests": len(rows),
        "total_input_tokens": sum(r.prompt_tokens or 0 for r in rows),
        "total_output_tokens": sum(r.generated_tokens or 0 for r in rows),
        "total_cache_tokens": sum(r.cached_tokens or 0 for r in rows),
        "prompt_histogram": histogram(known("prefill_tps")),
        "gen_histogram": histogram(known("decode_tps")),
        "total_errors": sum(is_error(r.status) for r in rows),
        "percentiles": {
            "decode_tps": percentiles(known("decode_tps"), 1),
            "prefill_tps": percentiles(known("prefill_tps"), 1),
            "ttft_ms": percentiles(known("ttft"), 1000),
            "duration_ms": percentiles(known("duration"), 1000),
        },
    }


def approx(value: Any) -> Any:
    """`value` with every float compared approximately (two percentile formulas)."""
    if isinstance(value, dict):
        return {k: approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx(v) for v in value]
    return pytest.approx(value, rel=1e-9) if isinstance(value, float) else value


# --- hypothesis: records and parameters from small domains, so filters and ties bite ---

speeds = st.one_of(st.none(), st.floats(0.5, 5000), st.sampled_from([10.0, 20.0]))
counts = st.one_of(st.none(), st.integers(0, 100_000), st.just(7))
records = st.builds(
    record,
    request_id=st.text(max_size=4),
    timestamp=st.sampled_from([1000.0, 1000.5, 1001.0, 2000.0]),
    model=st.sampled_from(["a", "b", "c"]),
    path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]),
    status=st.sampled_from([0, 99, 100, 200, 399, 400, 404, 500, 599]),
    duration=st.one_of(st.floats(0, 100), st.just(1.0)),
    ttft=st.one_of(st.none(), st.floats(0, 10), st.just(0.25)),
    prompt_tokens=counts,
    cached_tokens=counts,
    generated_tokens=counts,
    prefill_tps=speeds,
    decode_tps=speeds,
    session_id=st.sampled_from([None, "s1", "s2"]),
)
filters = {
    "model": st.lists(st.sampled_from(["a", "b", "x"]), max_size=3, unique=True),
    "session_id": st.lists(st.sampled_from(["s1", "s2"]), max_size=2, unique=True),
    "start": st.sampled_from(["1000", "1000.5", "1001", "1500"]),
    "end": st.sampled_from(["1000", "1000.5", "1001", "5000"]),
    "min_id": st.integers(1, 12).map(str),
    "max_id": st.integers(1, 12).map(str),
    "errors": st.sampled_from(["true", "false"]),
}
query_params = st.fixed_dictionaries(
    {},
    optional=filters
    | {
        "sort": st.sampled_from(sorted(SORT_COLUMNS)),
        "order": st.sampled_from(["asc", "desc", "ASC"]),
        "page": st.integers(1, 4).map(str),
        "limit": st.integers(1, 6).map(str),
    },
)


def contradictory(params: Mapping[str, Any]) -> bool:
    return float(params.get("start", 0)) > float(params.get("end", math.inf)) or int(
        params.get("min_id", 0)
    ) > int(params.get("max_id", 10**9))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    added=st.lists(records, max_size=14),
    queries=st.lists(query_params, min_size=1, max_size=12),
)
def test_queries_match_the_reference(
    added: list[ActivityRecord], queries: list[dict[str, Any]]
) -> None:
    async def scenario() -> None:
        async with await ActivityStore.open() as store:
            stored = await add_all(store, added)
            for params in queries:
                if contradictory(params):
                    with pytest.raises(ValueError, match="must be"):
                        await store.query(params)
                    continue
                assert await store.query(params) == reference_query(stored, params)
                stats = await store.stats(params)
                assert stats == approx(reference_stats(stored, params))

    trio.run(scenario)


async def test_the_stats_read_the_newest_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity, "STATS_SAMPLE", 3)
    async with await ActivityStore.open() as store:
        await add_all(store, [record(decode_tps=float(i), prompt_tokens=1) for i in range(1, 9)])
        stats = await store.stats({})
    assert stats["total_requests"] == 8 and stats["total_input_tokens"] == 8
    assert stats["percentiles"]["decode_tps"] == approx(
        {"count": 3, "p50": 7.0, "p90": 7.8, "p99": 7.98}
    )
    assert stats["gen_histogram"]["min"] == 6.0


async def test_the_json_shapes() -> None:
    async with await ActivityStore.open() as store:
        stored = await store.add(
            record(
                request_id="r-1",
                ttft=0.2504,
                prompt_tokens=36006,
                cached_tokens=None,
                generated_tokens=12,
                prefill_tps=900.5,
                decode_tps=None,
                optimizer="limit_only; 36006->2609 tokens",
                translation="anthropic->chat",
                session_id="sess",
                client="127.0.0.1",
                user_agent="claude-cli/1.0",
                has_capture=True,
            )
        )
        page = await store.query({})
        stats = await store.stats({"model": "nobody"})
    entry = page["data"][0]
    assert entry == stored.to_json()
    assert entry == {
        "id": 1,
        "timestamp": entry["timestamp"],
        "model": "qwen",
        "req_path": "/v1/chat/completions",
        "resp_status_code": 200,
        "tokens": {
            "cache_tokens": None,
            "input_tokens": 36006,
            "output_tokens": 12,
            "prompt_per_second": 900.5,
            "tokens_per_second": None,
        },
        "duration_ms": 1500,
        "has_capture": True,
        "request_id": "r-1",
        "ttft_ms": 250,
        "optimizer": "limit_only; 36006->2609 tokens",
        "translation": "anthropic->chat",
        "session_id": "sess",
        "client": "127.0.0.1",
        "user_agent": "claude-cli/1.0",
    }
    assert datetime.fromisoformat(entry["timestamp"]).timestamp() == 1_764_000_000.0
    assert page.keys() == {"data", "page", "limit", "total", "total_pages"}
    assert stats == {
        "total_requests": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_cache_tokens": 0,
        "prompt_histogram": None,
        "gen_histogram": None,
        "total_errors": 0,
        "percentiles": {
            "decode_tps": None,
            "prefill_tps": None,
            "ttft_ms": None,
            "duration_ms": None,
        },
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "drafted"}, "invalid sort column 'drafted': one of id, time, model"),
        ({"sort": "id; DROP TABLE activity"}, "invalid sort column"),
        ({"order": "sideways"}, "order must be asc or desc"),
        ({"limit": "0"}, "limit must be a whole number from 1 to 999"),
        ({"limit": "1000"}, "limit must be"),
        ({"limit": "1_0"}, "limit must be"),
        ({"limit": "-5"}, "limit must be"),
        ({"page": "0"}, "page must be"),
        ({"page": "9" * 40}, "page must be"),
        ({"min_id": "0"}, "min_id must be"),
        ({"max_id": "x"}, "max_id must be"),
        ({"min_id": "5", "max_id": "4"}, "min_id must be <= max_id"),
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "start must be"),
        ({"start": "2026-01-02T00:00:00"}, "not a time: use RFC 3339 with a zone"),
        ({"end": "yesterday"}, "not a time"),
        ({"errors": "maybe"}, "errors must be true or false"),
        ({"model": [f"m{i}" for i in range(101)]}, "at most 100 values of model"),
    ],
)
async def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    async with await ActivityStore.open() as store:
        await store.add(record())
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            await store.query(params)
        if not params.keys() & {"sort", "order", "limit", "page"}:
            with pytest.raises(ValueError, match=r"must|not a time|at most"):
                await store.stats(params)
        assert (await store.query({}))["total"] == 1  # nothing was harmed


async def test_parameters_in_every_shape() -> None:
    async with await ActivityStore.open() as store:
        await add_all(
            store,
            [record(model="a", timestamp=1000.0), record(model="b", timestamp=2000.0)],
        )
        multi = MultiDict([("model", "a"), ("model", "b"), ("limit", "1")])
        assert (await store.query(multi))["total"] == 2
        assert (await store.query({"model": ["a", " a ", ""]}))["total"] == 1
        assert (await store.query({"model": "a' OR '1'='1"}))["total"] == 0
        # Unknown parameters are ignored, as llama-swap does; blank ones are absent.
        assert (await store.query({"colour": "red", "limit": " "}))["limit"] == 25
        for start in ("1970-01-01T00:25:00Z", "1970-01-01T01:25:00+01:00", "1500", "1500.0"):
            assert [e["model"] for e in (await store.query({"start": start}))["data"]] == ["b"]


async def test_hostile_fields_are_bounded_as_stored() -> None:
    hostile = record(
        request_id="\ud800",
        model="m\x00" + "x" * 10_000,
        path="/v1/\r\nchat",
        status=10**30,
        timestamp=math.inf,
        duration=math.nan,
        ttft=-1.0,
        prompt_tokens=True,  # type: ignore[arg-type]
        cached_tokens=-3,
        generated_tokens=10**30,
        prefill_tps=0.0,
        decode_tps=math.inf,
        user_agent="\u2028" * 3,
        session_id="",
    )
    async with await ActivityStore.open() as store:
        stored = await store.add(hostile)
        entry = (await store.query({}))["data"][0]
        stats = await store.stats({})
    assert entry == stored.to_json()
    json.dumps(entry, allow_nan=False)
    json.dumps(stats, allow_nan=False)
    assert (stored.status, stored.timestamp, stored.duration) == (0, 0.0, 0.0)
    assert stored.ttft is None and stored.prompt_tokens is None and stored.cached_tokens is None
    assert stored.generated_tokens is None and stored.prefill_tps is None
    assert stored.decode_tps is None
    assert len(stored.model) < 600 and "\x00" not in stored.model
    assert stored.request_id == "\\ud800" and stored.path == "/v1/\\r\\nchat"
    assert stored.session_id == ""


async def test_memory_keeps_the_newest() -> None:
    async with await ActivityStore.open(max_in_memory=5) as store:
        await add_all(store, [record(request_id=str(i)) for i in range(12)])
        page = await store.query({"limit": "999"})
        assert [e["id"] for e in page["data"]] == [12, 11, 10, 9, 8]
        assert page["total"] == 5 and (await store.stats({}))["total_requests"] == 5
        # Pruning by id stays exact across batches.
        await add_all(store, [record()] * 3)
        assert [e["id"] for e in (await store.query({}))["data"]] == [15, 14, 13, 12, 11]
    # metricsMaxInMemory: 0 keeps nothing: records get ids (captures are filed under them).
    async with await ActivityStore.open(max_in_memory=0) as store:
        stored = await add_all(store, [record()] * 3)
        assert [r.id for r in stored] == [1, 2, 3]
        assert (await store.query({}))["total"] == 0
    with pytest.raises(ValueError, match="cannot keep -1"):
        await ActivityStore.open(max_in_memory=-1)


async def test_a_file_survives_restarts(tmp_path: Path) -> None:
    path = tmp_path / "activity.sqlite"
    async with await ActivityStore.open(path, max_in_file=4) as store:
        assert not store.in_memory
        first = await add_all(store, [record(request_id=str(i)) for i in range(3)])
    async with await ActivityStore.open(path, max_in_file=4) as store:
        assert (await store.query({}))["data"] == [r.to_json() for r in reversed(first)]
        later = await add_all(store, [record(request_id="x"), record(request_id="y")])
        assert [r.id for r in later] == [4, 5]  # ids go on, never reused
        assert [e["id"] for e in (await store.query({}))["data"]] == [5, 4, 3, 2]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO activity (id, request_id, timestamp, model, path, status, duration, "
            "decode_tps) VALUES (7, 'old', 1000.0, 'm', '/v1/completions', 200, 2.0, 33.5)"
        )
        db.execute("PRAGMA user_version = 1")
    db.close()
    async with await ActivityStore.open(path) as store:
        entry = (await store.query({"model": "m"}))["data"][0]
        assert (entry["id"], entry["request_id"], entry["tokens"]["tokens_per_second"]) == (
            7,
            "old",
            33.5,
        )
        assert (await store.add(record())).id == 8
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        assert {"activity_time", "activity_model", "activity_session"} <= indexes
    db.close()


async def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE activity (id INTEGER PRIMARY KEY, shape TEXT)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(ActivityStoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        await ActivityStore.open(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a database at all, just text" * 100, "is not an SQLite database"),
        (None, "is not a trioswap activity store \\(it holds goose_db_version"),
    ],
)
async def test_other_files_are_refused(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "other.sqlite"
    if content is None:  # llama-swap's own store, say
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE goose_db_version (id INTEGER)")
        db.close()
    else:
        path.write_bytes(content)
    with pytest.raises(ActivityStoreError, match=message):
        await ActivityStore.open(path)
    with pytest.raises(ActivityStoreError, match="cannot open the activity store"):
        await ActivityStore.open(tmp_path / "missing" / "dir" / "a.sqlite")


async def test_one_store_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity, "LOCK_WAIT", 0.05)
    path = tmp_path / "activity.sqlite"
    async with await ActivityStore.open(path) as store:
        await store.add(record())
        with pytest.raises(ActivityStoreError, match="in use by another process"):
            await ActivityStore.open(path)
        assert (await store.query({}))["total"] == 1
    async with await ActivityStore.open(path) as store:  # free again once closed
        assert (await store.query({}))["total"] == 1


async def test_many_tasks_add_at_once_with_the_writer() -> None:
    async with await ActivityStore.open(max_in_memory=10_000) as store:
        returned: list[ActivityRecord] = []

        async def client(n: int) -> None:
            for i in range(20):
                returned.append(await store.add(record(request_id=f"{n}-{i}", model=f"m{n % 3}")))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            async with trio.open_nursery() as clients:
                for n in range(50):
                    clients.start_soon(client, n)
            # The writer empties the queue by itself, without a query.
            await wait_until(lambda: not store._pending)
            nursery.cancel_scope.cancel()
        page = await store.query({"limit": "999", "order": "asc"})
        rest = await store.query({"limit": "999", "order": "asc", "page": "2"})
    assert sorted(r.id for r in returned) == list(range(1, 1001))
    by_id = {r.id: r.to_json() for r in returned}
    assert page["data"] + rest["data"] == [by_id[i] for i in range(1, 1001)]


async def test_the_writer_writes_what_is_left_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "activity.sqlite"
    store = await ActivityStore.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for i in range(5):
            await store.add(record(request_id=str(i)))
        nursery.cancel_scope.cancel()
    assert not store._pending
    await store.aclose()
    await store.aclose()  # twice is fine
    with pytest.raises(trio.ClosedResourceError):
        await store.add(record())
    with pytest.raises(trio.ClosedResourceError):
        await store.query({})
    async with await ActivityStore.open(path) as store:
        assert (await store.query({}))["total"] == 5


async def test_add_writes_by_itself_when_nobody_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity, "PENDING_LIMIT", 10)
    async with await ActivityStore.open() as store:
        for _ in range(25):
            await store.add(record())
            assert len(store._pending) < 10


async def test_a_failed_write_is_logged_and_the_store_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with await ActivityStore.open() as store:
        assert store._connection is not None
        store._connection.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON activity WHEN NEW.model = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        with caplog.at_level(logging.WARNING, "trioswap.activity"):
            await add_all(store, [record(), record(model="boom")])
            assert (await store.query({}))["total"] == 0  # the batch went as one
        assert "2 records not written: disk on fire" in caplog.text
        await store.add(record())
        assert (await store.query({}))["total"] == 1
