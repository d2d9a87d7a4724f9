"""Hostile SQL, as a client without a token would send it (SQL is a read).

Each test sends queries that once took the whole server down, over HTTP `/v1/sql` and
over Flight SQL (ADBC, which prepares every statement), and then reads data from the
same server: it must still answer, with the right rows.

- Stack: flat chains (`1+1+...`, `||`, `OR`, `AND`, `UNION ALL`, casts, joins, common
  table expressions, a prepared statement of `$1+` terms) used to overflow a worker's
  stack and abort the process. They are refused with 400 (`sql.max_query_operators`,
  `sql.max_query_depth`); chains under the limits answer.
- Memory and time: functions that make more than they read (`range`, `repeat`,
  `lpad`, `array_repeat`, `string_agg` of `repeat`, `unnest`) used to grow the process
  until the kernel killed it. Each now ends in 413 (its estimate, the query's pool or
  the timeout) within twice `sql.query_timeout_s`, while a small read keeps answering,
  and the process's peak memory stays under `sql.memory_total_bytes` plus a stated
  margin ([`PEAK_MARGIN`]).
- The process-wide guard: past `sql.process_memory_limit_bytes` the query holding the
  most is cancelled (413) and new ones wait (503) until the memory is back under.

`FASTK_TEST_LONG=1` makes every chain four times longer and runs the memory queries
more times at once.
"""

from __future__ import annotations

import os
import threading
import time

import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import pytest
import requests

from fastk_testlib import check_error, expect_ok, kline_path, make_klines, register_kline

LONG = os.environ.get("FASTK_TEST_LONG") == "1"
SCALE = 4 if LONG else 1
MIB = 1 << 20
# What the process may grow past its resident memory before the memory queries, on
# top of sql.memory_total_bytes: the runtime's threads, Arrow buffers in flight, the
# allocator's slack. docs/sql.md states it.
PEAK_MARGIN = 512 * MIB


def chain(term: str, op: str, n: int) -> str:
    return op.join([term] * n)


# The shapes that overflowed the stack, at the sizes that did (times SCALE).
STACK_SHAPES = {
    "plus": "SELECT " + chain("1", "+", 2000 * SCALE),
    "concat": "SELECT " + chain("'a'", " || ", 5000 * SCALE),
    "or": "SELECT 1 WHERE " + chain("x = 1", " OR ", 5000 * SCALE).replace("x", "1"),
    "and": "SELECT 1 WHERE " + chain("true", " AND ", 10000 * SCALE),
    "union": chain("SELECT 1", " UNION ALL ", 5000 * SCALE),
    "cast": "SELECT 1" + "::bigint" * (3000 * SCALE),
    "joins": "SELECT 1 FROM " + chain("(SELECT 1 AS v)", " CROSS JOIN ", 1000 * SCALE),
    "ctes": "WITH " + ", ".join(f"c{i} AS (SELECT 1 AS v)" for i in range(1000 * SCALE))
            + " SELECT * FROM c0",
}
# Chains under the limits answer (sql.max_query_depth is 256).
FINE_SHAPES = {
    "SELECT " + chain("1", "+", 200): 200,
    "SELECT count(*) FROM (" + chain("SELECT 1 AS x", " UNION ALL ", 100) + ")": 100,
    "SELECT count(*) FROM (SELECT 1 AS x) WHERE " + chain("x = 1", " AND ", 100): 1,
}


def post_sql(base: str, query: str, timeout: float = 120) -> requests.Response:
    return requests.post(base + "/v1/sql", json={"query": query}, timeout=timeout)


def seed(server) -> tuple[str, list[dict]]:
    sym = f"HOSTILE{int(time.time() * 1000) % 10**9}"
    bars = make_klines(500, seed=11)
    with requests.Session() as s:
        expect_ok(register_kline(s, server.http_url, sym), 201)
        expect_ok(s.post(server.http_url + kline_path(sym) + "/records",
                         json={"records": bars}, timeout=60))
    return sym, bars


def reads_back(server, conn, sym: str, bars: list[dict]) -> None:
    """The server still serves: HTTP records, HTTP SQL and ADBC agree with what was
    written."""
    r = requests.get(server.http_url + kline_path(sym) + "/records",
                     params={"limit": 1000}, timeout=30)
    assert [b["ts"] for b in expect_ok(r)["records"]] == [b["ts"] for b in bars]
    body = expect_ok(post_sql(server.http_url,
                              f"SELECT count(*), sum(close) FROM kline_raw WHERE symbol = '{sym}'"))
    assert body["rows"] == [[len(bars), sum(b["close"] for b in bars)]]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM kline_raw WHERE symbol = $1", parameters=(sym,))
        assert cur.fetchone() == (len(bars),)


@pytest.fixture(scope="module")
def seeded(server):
    sym, bars = seed(server)
    with adbc.connect(server.flight_uri, autocommit=True) as conn:
        yield server, conn, sym, bars


@pytest.mark.parametrize("shape", sorted(STACK_SHAPES))
def test_flat_chains_are_refused_over_http_and_flight_sql(seeded, shape):
    server, conn, sym, bars = seeded
    query = STACK_SHAPES[shape]
    msg = check_error(post_sql(server.http_url, query), 400, "invalid_argument")
    assert "sql.max_query" in msg, msg
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute(query)
            cur.fetchall()
        assert "sql.max_query" in str(e.value), str(e.value)[:500]
    server.assert_alive()
    reads_back(server, conn, sym, bars)


def test_a_prepared_statement_of_thousands_of_parameters_is_refused(seeded):
    server, conn, sym, bars = seeded
    query = "SELECT " + chain("$1", "+", 3000 * SCALE)
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute(query, parameters=(1,))
        assert "sql.max_query" in str(e.value), str(e.value)[:500]
    server.assert_alive()
    reads_back(server, conn, sym, bars)


def test_chains_under_the_limits_answer(seeded):
    server, conn, sym, bars = seeded
    for query, want in FINE_SHAPES.items():
        assert expect_ok(post_sql(server.http_url, query))["rows"] == [[want]], query[:80]
        with conn.cursor() as cur:
            cur.execute(query)
            assert cur.fetchone() == (want,), query[:80]
    with conn.cursor() as cur:
        cur.execute("SELECT " + chain("$1::bigint", "+", 100), parameters=(2,))
        assert cur.fetchone() == (200,)
    reads_back(server, conn, sym, bars)


# Queries whose functions would make gigabytes in one call.
BIG_CALLS = [
    "select count(*) from (select unnest(range(1, 1000000000)))",
    "select length(repeat('x', 800000000))",
    "select count(*) from (select unnest(range(1, 60000000)))",
    "select length(lpad('x', 900000000))",
    "select cardinality(array_repeat(1, 900000000))",
    "select count(*) from (select unnest(generate_series(timestamp '1970-01-01', "
    "timestamp '2100-01-01', interval '1 second')))",
]


def test_functions_that_would_make_gigabytes_are_refused_at_the_default_limits(seeded):
    server, conn, sym, bars = seeded
    for query in BIG_CALLS:
        msg = check_error(post_sql(server.http_url, query), 413, "payload_too_large")
        assert "sql.max_function_output_bytes" in msg, (query, msg)
        with conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error) as e:
                cur.execute(query)
                cur.fetchall()
            assert "sql.max_function_output_bytes" in str(e.value), str(e.value)[:300]
    # Within the limits the same functions answer.
    body = expect_ok(post_sql(server.http_url,
                              "select count(*), length(repeat('ab', 1000)) "
                              "from (select unnest(range(1, 1000001)))"))
    assert body["rows"] == [[1_000_000, 2000]]
    reads_back(server, conn, sym, bars)


def status_of(path: str) -> dict[str, int]:
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0]) * 1024
    return out


def test_memory_and_time_hold_under_a_crowd_of_hostile_queries(start_server):
    timeout_s = 8
    total = 256 * MIB
    srv = start_server("sqlmem", {
        "FASTK__SQL__MEMORY_PER_QUERY_BYTES": str(64 * MIB),
        "FASTK__SQL__MEMORY_TOTAL_BYTES": str(total),
        "FASTK__SQL__MAX_FUNCTION_OUTPUT_BYTES": str(32 * MIB),
        "FASTK__SQL__QUERY_TIMEOUT_S": str(timeout_s),
    })
    sym, bars = seed(srv)
    status = f"/proc/{srv.proc.pid}/status"
    before = status_of(status)["VmRSS"]
    literal = "y" * 200_000
    hostile = BIG_CALLS + [
        "select length(string_agg(repeat('x', 2000), ',')) from generate_series(1, 1000000)",
        f"select count(x) from (select '{literal}' as x from generate_series(1, 1000000))",
        # Hashed, not sorted: generate_series is ordered, and a distinct count of an
        # ordered column streams in constant memory.
        "select count(distinct (v * 2654435761) % 4294967291) "
        "from generate_series(1, 100000000) t(v)",
        # 10^10 pairs to test: only the timeout ends it.
        "select count(*) from generate_series(1, 100000) a, generate_series(1, 100000) b "
        "where a.value * 3 + b.value = 7",
    ] * (2 if LONG else 1)
    outcomes: list[tuple[str, int, str, float]] = []
    reader_errors: list[str] = []
    reads = 0
    stop = threading.Event()

    def hostile_query(q: str) -> None:
        t0 = time.monotonic()
        r = post_sql(srv.http_url, q, timeout=10 * timeout_s)
        outcomes.append((q[:70], r.status_code, r.text[:300], time.monotonic() - t0))

    def reader() -> None:
        nonlocal reads
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    h = s.get(srv.http_url + "/health", timeout=10)
                    assert h.status_code == 200, h.text
                    r = s.get(srv.http_url + kline_path(sym) + "/latest", params={"n": 5},
                              timeout=10)
                    assert [b["ts"] for b in r.json()["records"]] == [b["ts"] for b in bars[-5:]]
                    reads += 1
                except Exception as e:  # noqa: BLE001 - any failure of a small read counts
                    reader_errors.append(repr(e)[:300])
                time.sleep(0.05)

    threads = [threading.Thread(target=hostile_query, args=(q,)) for q in hostile]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    srv.assert_alive()
    assert not reader_errors, reader_errors[:5]
    assert reads > 0
    for q, code, text, took in outcomes:
        # 413: an estimate, a pool or the timeout; 503: sql.max_concurrent_queries.
        assert code in (413, 503), (q, code, text)
        assert took < 2 * timeout_s, (q, took, text)
    assert sum(code == 413 for _, code, _, _ in outcomes) >= len(BIG_CALLS)
    peak = status_of(status)["VmHWM"]
    assert peak - before < total + PEAK_MARGIN, (peak, before)
    with adbc.connect(srv.flight_uri, autocommit=True) as conn:
        reads_back(srv, conn, sym, bars)


def test_past_the_process_limit_the_largest_query_is_cancelled(start_server):
    srv = start_server("sqlguard", {
        "FASTK__SQL__PROCESS_MEMORY_LIMIT_BYTES": str(640 * MIB),
        "FASTK__SQL__MEMORY_PER_QUERY_BYTES": str(8192 * MIB),
        "FASTK__SQL__MEMORY_TOTAL_BYTES": str(8192 * MIB),
    })
    rss = status_of(f"/proc/{srv.proc.pid}/status")["RssAnon"]
    if rss > 400 * MIB:
        pytest.skip(f"the idle server already holds {rss} bytes; the 640 MiB guard would not test")
    sym, bars = seed(srv)
    r = post_sql(srv.http_url, "select count(distinct (v * 2654435761) % 4294967291) "
                               "from generate_series(1, 400000000) t(v)")
    msg = check_error(r, 413, "payload_too_large")
    assert "sql.process_memory_limit_bytes" in msg, msg
    # Once the memory is back under the limit, queries are admitted again.
    deadline = time.monotonic() + 120
    while True:
        r = post_sql(srv.http_url, "SELECT 41 + 1")
        if r.status_code == 200:
            break
        check_error(r, 503, "unavailable")
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert r.json()["rows"] == [[42]]
    srv.assert_alive()
    assert "process_memory_limit_bytes" in srv.log_text()
    metrics = requests.get(srv.http_url + "/metrics", timeout=30).text
    cancelled = [line for line in metrics.splitlines()
                 if line.startswith("fastk_sql_guard_cancelled_total ")]
    assert cancelled and int(cancelled[0].split()[1]) >= 1, metrics[:2000]
    assert f"fastk_sql_process_memory_limit_bytes {640 * MIB}" in metrics


def test_an_http_write_never_lands_in_a_series_registered_again_while_it_uploads(server):
    sym = f"RACEH{int(time.time() * 1000) % 10**9}"
    base = server.http_url
    with requests.Session() as s:
        expect_ok(register_kline(s, base, sym, price_scale=100), 201)
    bars = make_klines(2000, seed=5)
    body = ('{"records": ' + str(bars).replace("'", '"') + "}").encode()
    half = len(body) // 2

    def upload():
        yield body[:half]
        time.sleep(0.5)  # the request head has arrived: the write began
        with requests.Session() as s:
            expect_ok(s.delete(base + kline_path(sym), timeout=30), 204)
            expect_ok(register_kline(s, base, sym, price_scale=10_000), 201)
        yield body[half:]

    r = requests.post(base + kline_path(sym) + "/records", data=upload(),
                      headers={"content-type": "application/json"}, timeout=60)
    msg = check_error(r, 404, "not_found")
    assert "registered again" in msg, msg
    r = requests.get(base + kline_path(sym) + "/records", timeout=30)
    assert expect_ok(r)["records"] == [], "nothing of the old upload is in the new series"
