"""Schemathesis fuzzes the live server from openapi/openapi.json.

Checks: no 5xx for any generated request (valid or not), and every response whose
status the document describes matches the documented schema. It runs against a
server of its own (fresh data root), so its random writes and deletes never meet the
other tests' series. The example count is bounded so the run stays short; the seed
makes it repeatable. FASTK_TEST_LONG=1 raises the count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import stop_cleanly
from fastk_testlib import OPENAPI_PATH

MAX_EXAMPLES = 200 if os.environ.get("FASTK_TEST_LONG") == "1" else 20
SEED = 20240131


def test_schemathesis_finds_no_failures(start_server, tmp_path):
    assert OPENAPI_PATH.exists(), "openapi/openapi.json is not committed"
    server = start_server("schemathesis")
    junit = tmp_path / "junit.xml"
    exe = Path(sys.executable).parent / "schemathesis"
    cmd = [
        str(exe), "run", str(OPENAPI_PATH),
        "--url", server.http_url,
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "30",
        "--report", "junit", "--report-junit-path", str(junit),
    ]
    env = dict(os.environ, NO_COLOR="1", SCHEMATHESIS_TELEMETRY="false")
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=1200)
    output = proc.stdout + proc.stderr
    print(output[-6000:])
    assert proc.returncode == 0, f"schemathesis reported failures:\n{output[-20000:]}"

    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= 10, f"schemathesis tested only {len(cases)} operations"
    failed = [c.get("name") for c in cases if c.find("failure") is not None
              or c.find("error") is not None]
    assert not failed, failed
    # Every operation in the document was exercised (none skipped as unsupported).
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    assert not skipped, f"schemathesis skipped: {skipped}\n{output[-4000:]}"

    server.assert_alive()
    stop_cleanly(server)
