"""Schemathesis fuzzes the live server from openapi/openapi.json.

Checks: no 5xx for any generated request (valid or not), and every response whose
status the document describes matches the documented schema. It runs against a
server of its own (fresh data root), so its random writes and deletes never meet the
other tests' series. Two runs:

- free inputs: every operation, random names (most reads and writes meet 404s);
- existing series: path parameters pinned to a registered kline and scalar series
  with data, so writes, reads, latest and queries reach the engine and their real
  responses are checked against the document (DELETE left out so the series stays).

The example count is bounded so each run stays short, and the seed makes it
repeatable. FASTK_TEST_LONG=1 raises the count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from conftest import stop_cleanly
from fastk_testlib import (
    OPENAPI_PATH,
    expect_ok,
    kline_path,
    make_klines,
    make_scalars,
    register_kline,
    register_scalar,
    scalar_path,
)

MAX_EXAMPLES = 200 if os.environ.get("FASTK_TEST_LONG") == "1" else 25
SEED = 20240131
FUZZ_SYMBOL = "FUZZ"


@pytest.fixture(scope="module")
def fuzz_server(start_server):
    assert OPENAPI_PATH.exists(), "openapi/openapi.json is not committed"
    server = start_server("schemathesis")
    yield server
    server.assert_alive()
    stop_cleanly(server)


def run_schemathesis(server, workdir: Path, *extra: str, config: str | None = None) -> str:
    junit = workdir / "junit.xml"
    exe = Path(sys.executable).parent / "schemathesis"
    cmd = [str(exe)]
    if config is not None:
        cfg = workdir / "schemathesis.toml"
        cfg.write_text(config)
        cmd += ["--config-file", str(cfg)]
    cmd += [
        "run", str(OPENAPI_PATH),
        "--url", server.http_url,
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "30",
        "--report", "junit", "--report-junit-path", str(junit),
        *extra,
    ]
    env = dict(os.environ, NO_COLOR="1", SCHEMATHESIS_TELEMETRY="false")
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env,
                          timeout=1200)
    output = proc.stdout + proc.stderr
    print(output[-6000:])
    assert proc.returncode == 0, f"schemathesis reported failures:\n{output[-20000:]}"

    cases = ET.parse(junit).getroot().findall(".//testcase")
    failed = [c.get("name") for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    assert not failed, failed
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    assert not skipped, f"schemathesis skipped: {skipped}\n{output[-4000:]}"
    server.assert_alive()
    return output


def test_schemathesis_free_inputs(fuzz_server, tmp_path):
    with requests.Session() as s:
        spec = expect_ok(s.get(fuzz_server.http_url + "/openapi.json", timeout=30))
    operations = sum(len(v) for v in spec["paths"].values())
    output = run_schemathesis(fuzz_server, tmp_path)
    assert f"Tested: {operations}" in output, output[-3000:]


def test_schemathesis_on_existing_series(fuzz_server, tmp_path):
    base = fuzz_server.http_url
    with requests.Session() as s:
        expect_ok(register_kline(s, base, FUZZ_SYMBOL), 201, 200)
        expect_ok(register_scalar(s, base, FUZZ_SYMBOL, "indicator", "rsi_14", "f64"), 201,
                  200)
        expect_ok(s.post(base + kline_path(FUZZ_SYMBOL) + "/records",
                         json={"records": make_klines(500)}, timeout=30))
        expect_ok(s.post(base + scalar_path(FUZZ_SYMBOL, "1m", "indicator", "rsi_14")
                         + "/records", json={"records": make_scalars(500)}, timeout=30))
    config = (
        "[parameters]\n"
        f'"path.symbol" = "{FUZZ_SYMBOL}"\n'
        '"path.timeframe" = "1m"\n'
        '"path.category" = "indicator"\n'
        '"path.name" = "rsi_14"\n'
    )
    run_schemathesis(fuzz_server, tmp_path, "--exclude-method", "DELETE",
                     "--include-path-regex", "^/v1/(kline|scalar)/", config=config)
    with requests.Session() as s:
        meta = expect_ok(s.get(base + kline_path(FUZZ_SYMBOL), timeout=30))
    # The pinned series was really exercised: the fuzzer's valid writes landed.
    assert meta["rows"] >= 500
