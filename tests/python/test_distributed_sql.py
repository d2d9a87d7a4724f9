"""Distributed SQL (docs/scale-out.md, "Distributed SQL"): three `fastk serve` processes
share a shard map with `cluster.sql = "distributed"` (node a owns symbols from "" to
"F", b from "F" to "P", c from "P" on); a fourth, single node holds the same data and
answers as the oracle. Bearer tokens are required for reads, so the token travels
from the node asked to the workers.

- An aggregate per symbol over every symbol, a kline joined with a feature, ORDER BY
  ... LIMIT across the shards, a predicate on a scalar and a resample by `date_bin`
  asked of any node equal the oracle's answers (as multisets where the query has no
  ORDER BY).
- A query whose symbols are all on one node runs there only: the third node's worker
  counter (`fastk_sql_worker_tasks_total`) does not move.
- `EXPLAIN` names the stages and, on each scan, the node it runs on.
- A node that is down is an error naming it (503), not a hang; with `cluster.sql =
  "local"` a node answers from its own series only.
"""

from __future__ import annotations

import json
import re
import signal

import pytest
import requests

from fastk_testlib import (
    expect_ok,
    free_port,
    kline_path,
    make_klines,
    make_scalars,
    register_kline,
    scalar_path,
)

SYMBOLS = ["ADA", "AVAX", "BNB", "BTC", "DOGE", "DOT", "ETH", "LINK", "LTC", "MATIC",
           "NEAR", "OP", "SOL", "SUI", "TON", "TRX", "UNI", "XRP"]
TOKEN = "dist-sql-token"
NODES = ["a", "b", "c"]


def owner(sym: str) -> str:
    return "a" if sym < "F" else ("b" if sym < "P" else "c")


@pytest.fixture(scope="module")
def cluster(start_server):
    ports = {n: free_port() for n in NODES}
    shard_map = {"nodes": {n: f"grpc://127.0.0.1:{p}" for n, p in ports.items()},
                 "ranges": [{"from": "", "node": "a"}, {"from": "F", "node": "b"},
                            {"from": "P", "node": "c"}]}
    common = {"FASTK__AUTH__TOKEN": TOKEN, "FASTK__AUTH__PROTECT_READS": "true",
              "FASTK__CLUSTER__SHARD_MAP": json.dumps(shard_map),
              "FASTK__CLUSTER__SQL": "distributed", "FASTK__CLUSTER__FORWARD_TIMEOUT_S": "5"}
    nodes = {n: start_server(f"dist-{n}", {**common, "FASTK__CLUSTER__NODE": n,
                                           "FASTK__FLIGHT__ADDR": f"127.0.0.1:{ports[n]}"})
             for n in NODES}
    oracle = start_server("dist-oracle", {"FASTK__AUTH__TOKEN": TOKEN})
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {TOKEN}"
    for i, sym in enumerate(SYMBOLS):
        bars = make_klines(240 + 17 * i, seed=i)
        feats = make_scalars(240 + 17 * i, seed=100 + i)
        for srv in (nodes[owner(sym)], oracle):
            expect_ok(register_kline(s, srv.http_url, sym), 201)
            expect_ok(s.post(srv.http_url + kline_path(sym) + "/records",
                             json={"records": bars}, timeout=30), 200)
            expect_ok(s.post(srv.http_url + "/v1/scalar/series", json={
                "symbol": sym, "timeframe": "1m", "category": "feature", "name": "rsi",
                "value_type": "f64"}, timeout=30), 201)
            expect_ok(s.post(srv.http_url + scalar_path(sym, "1m", "feature", "rsi") + "/records",
                             json={"records": feats}, timeout=30), 200)
    yield {"nodes": nodes, "oracle": oracle, "session": s}


def sql(s: requests.Session, srv, query: str) -> requests.Response:
    return s.post(srv.http_url + "/v1/sql", json={"query": query}, timeout=60)


def rows(s, srv, query: str) -> list:
    return expect_ok(sql(s, srv, query))["rows"]


def canon(rs: list) -> list:
    """Rows with floats rounded (the order of a distributed sum differs)."""
    def c(v):
        return round(v, 6) if isinstance(v, float) else v
    return [tuple(c(v) for v in r) for r in rs]


QUERIES = {
    "aggregate per symbol": (
        "SELECT symbol, count(*) AS n, sum(close) AS s, min(low) AS lo, max(high) AS hi "
        "FROM kline GROUP BY symbol", False),
    "kline joined with a feature": (
        "SELECT k.symbol, count(*) AS n, avg(k.close * f.value) AS x FROM kline k "
        "JOIN scalar f ON k.symbol = f.symbol AND k.ts = f.ts "
        "WHERE f.category = 'feature' AND f.name = 'rsi' GROUP BY k.symbol", False),
    "order by limit across shards": (
        "SELECT symbol, ts, close FROM kline ORDER BY close DESC, symbol, ts LIMIT 7", True),
    "predicate on a scalar": (
        "SELECT symbol, count(*) AS n, max(value) AS m FROM scalar WHERE value > 75 "
        "GROUP BY symbol", False),
    "resample by date_bin": (
        "SELECT symbol, date_bin(INTERVAL '1 hour', ts) AS h, max(high) AS hi, "
        "sum(volume) AS v, count(*) AS n FROM kline GROUP BY symbol, h", False),
    "a few symbols over two nodes": (
        "SELECT symbol, sum(volume) AS v FROM kline WHERE symbol IN ('BTC', 'SOL', 'ETH') "
        "GROUP BY symbol ORDER BY symbol", True),
}


@pytest.mark.parametrize("name", list(QUERIES))
@pytest.mark.parametrize("asked", NODES)
def test_a_query_asked_of_any_node_equals_one_node(cluster, name, asked):
    query, ordered = QUERIES[name]
    s = cluster["session"]
    got = canon(rows(s, cluster["nodes"][asked], query))
    want = canon(rows(s, cluster["oracle"], query))
    assert len(want) > 0
    if ordered:
        assert got == want
    else:
        assert sorted(got) == sorted(want)


def worker_tasks(s, srv) -> int:
    text = s.get(srv.http_url + "/metrics", timeout=10).text
    m = re.search(r"^fastk_sql_worker_tasks_total (\d+)", text, re.M)
    assert m, "fastk_sql_worker_tasks_total is missing from /metrics"
    return int(m.group(1))


def test_a_query_of_one_node_does_not_contact_the_others(cluster):
    s, nodes = cluster["session"], cluster["nodes"]
    query = ("SELECT symbol, count(*) AS n, sum(close) AS c FROM kline "
             "WHERE symbol IN ('ADA', 'BNB', 'DOT') GROUP BY symbol ORDER BY symbol")
    before = {n: worker_tasks(s, nodes[n]) for n in NODES}
    got = rows(s, nodes["b"], query)
    assert got == rows(s, cluster["oracle"], query)
    after = {n: worker_tasks(s, nodes[n]) for n in NODES}
    assert after["a"] > before["a"], "the owner ran the scan"
    assert after["c"] == before["c"], "node c holds none of these symbols and was contacted"
    # A query of the asked node's own symbols runs there alone.
    own = "SELECT count(*) FROM kline WHERE symbol IN ('ADA', 'BTC')"
    before = {n: worker_tasks(s, nodes[n]) for n in NODES}
    assert rows(s, nodes["a"], own) == rows(s, cluster["oracle"], own)
    after = {n: worker_tasks(s, nodes[n]) for n in NODES}
    assert after == before


def test_explain_names_the_stages_and_the_nodes(cluster):
    s = cluster["session"]
    body = expect_ok(sql(s, cluster["nodes"]["a"],
                         "EXPLAIN SELECT symbol, count(*) FROM kline GROUP BY symbol"))
    plan = "\n".join(str(r[1]) for r in body["rows"])
    assert "Stage" in plan, plan
    for n in NODES:
        assert f"node={n}" in plan, plan


def test_a_token_is_needed_on_every_node(cluster):
    r = requests.post(cluster["nodes"]["a"].http_url + "/v1/sql",
                      json={"query": "SELECT count(*) FROM kline"}, timeout=30)
    assert r.status_code == 401, r.text


def test_a_node_down_is_an_error_that_names_it(cluster):
    s, nodes = cluster["session"], cluster["nodes"]
    c = nodes["c"]
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait(timeout=30)
    r = sql(s, nodes["a"], "SELECT symbol, count(*) FROM kline GROUP BY symbol")
    assert r.status_code == 503, r.text
    assert "c (" in r.json()["error"]["message"], r.text
    # Symbols of the nodes that are up still answer.
    q = "SELECT count(*) FROM kline WHERE symbol IN ('ADA', 'MATIC')"
    assert rows(s, nodes["a"], q) == rows(s, cluster["oracle"], q)
