"""A client generated from openapi/openapi.json talks to the real server.

`openapi-python-client generate --meta none` writes a bare package (no pyproject,
nothing to install, nothing fetched), which is imported from a temp directory. The
tests find the generated functions by the method and URL template in their source,
so they do not depend on how the document names its operations or tags.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest

from fastk_testlib import OPENAPI_PATH, make_klines

PACKAGE = "fastk_generated_client"
_URL_RE = re.compile(r'"method":\s*"(\w+)",\s*"url":\s*f?"([^"]+)"')


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> ModuleType:
    assert OPENAPI_PATH.exists(), "openapi/openapi.json is not committed"
    out = tmp_path_factory.mktemp("client")
    env = dict(os.environ)
    # Post-generation hooks run `ruff` from the venv; make sure it is on PATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate",
         "--path", str(OPENAPI_PATH), "--output-path", str(out / PACKAGE),
         "--meta", "none", "--overwrite"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    # The generator skips endpoints it cannot express and says so with a warning.
    assert "Warning" not in log, f"openapi-python-client skipped parts of the document:\n{log}"
    assert (out / PACKAGE / "client.py").exists(), log
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))


def endpoint(pkg: ModuleType, method: str, template: str) -> ModuleType:
    """The generated module for `method template` (placeholder names ignored)."""
    norm = re.sub(r"\{[^}]*\}", "{}", template)
    root = Path(pkg.__file__).parent / "api"
    found = []
    for f in root.rglob("*.py"):
        for m, url in _URL_RE.findall(f.read_text()):
            if m.lower() == method.lower() and re.sub(r"\{[^}]*\}", "{}", url) == norm:
                rel = f.relative_to(root.parent).with_suffix("")
                found.append(".".join([pkg.__name__, *rel.parts]))
    assert len(found) == 1, f"{method} {template}: generated modules {found}"
    return importlib.import_module(found[0])


def body_type(fn) -> type:
    hint = typing.get_type_hints(fn)["body"]
    for t in typing.get_args(hint) or (hint,):
        if hasattr(t, "from_dict"):
            return t
    raise AssertionError(f"no model type for body: {hint}")


def call(module: ModuleType, client, body: dict | None = None, **kwargs):
    fn = module.sync_detailed
    if body is not None:
        kwargs["body"] = body_type(fn).from_dict(body)
    return fn(client=client, **kwargs)


def to_dict(parsed) -> dict:
    assert parsed is not None, "the generated client could not parse the response"
    return parsed.to_dict()


@pytest.fixture(scope="module")
def client(generated, server):
    c = generated.Client(base_url=server.http_url, raise_on_unexpected_status=False)
    with c as opened:
        yield opened


def test_generated_client_register_write_read(generated, client, unique_name):
    register = endpoint(generated, "post", "/v1/kline/series")
    write = endpoint(generated, "post", "/v1/kline/{symbol}/{timeframe}/records")
    read = endpoint(generated, "get", "/v1/kline/{symbol}/{timeframe}/records")
    latest = endpoint(generated, "get", "/v1/kline/{symbol}/{timeframe}/latest")
    meta = endpoint(generated, "get", "/v1/kline/{symbol}/{timeframe}")

    sym = unique_name("GEN")
    spec = {"symbol": sym, "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}
    r = call(register, client, spec)
    assert r.status_code == 201, r.content
    info = to_dict(r.parsed)
    assert info["symbol"] == sym and info["timeframe_ms"] == 60_000

    r = call(register, client, spec)
    assert r.status_code == 200, r.content

    records = make_klines(250)
    r = call(write, client, {"records": records[::-1]}, symbol=sym, timeframe="1m")
    assert r.status_code == 200, r.content
    w = to_dict(r.parsed)
    assert w["written"] == 250 and w["inserted"] == 250 and w["months"] == ["2024-01"]

    r = call(read, client, symbol=sym, timeframe="1m")
    assert r.status_code == 200, r.content
    page = to_dict(r.parsed)
    assert page["records"] == records
    assert page.get("next_start_ts") is None

    r = call(read, client, symbol=sym, timeframe="1m", start_ts=records[10]["ts"],
             end_ts=records[19]["ts"], limit=5)
    page = to_dict(r.parsed)
    assert page["records"] == records[10:15]
    assert page["next_start_ts"] is not None
    r = call(read, client, symbol=sym, timeframe="1m", start_ts=page["next_start_ts"],
             end_ts=records[19]["ts"], limit=5)
    assert to_dict(r.parsed)["records"] == records[15:20]

    r = call(latest, client, symbol=sym, timeframe="1m", n=3)
    assert to_dict(r.parsed)["records"] == records[-3:]

    r = call(meta, client, symbol=sym, timeframe="1m")
    m = to_dict(r.parsed)
    assert m["rows"] == 250 and m["version"] == w["version"]


def _error_body(response) -> dict:
    import json

    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"code", "message"}, body
    assert body["error"]["message"], body
    if response.parsed is not None:
        # The document describes this error, so the client parsed it as its model.
        parsed = response.parsed.to_dict()
        assert parsed["error"]["code"] == body["error"]["code"], parsed
    return body["error"]


def test_generated_client_error_paths(generated, client, unique_name):
    register = endpoint(generated, "post", "/v1/kline/series")
    write = endpoint(generated, "post", "/v1/kline/{symbol}/{timeframe}/records")
    read = endpoint(generated, "get", "/v1/kline/{symbol}/{timeframe}/records")

    sym = unique_name("GENE")
    spec = {"symbol": sym, "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}
    assert call(register, client, spec).status_code == 201
    r = call(register, client, dict(spec, volume_scale=1))
    assert r.status_code == 409
    assert _error_body(r)["code"] == "conflict"

    records = make_klines(3)
    r = call(write, client, {"records": records + [records[0]]}, symbol=sym, timeframe="1m")
    assert r.status_code == 422
    err = _error_body(r)
    assert err["code"] == "unprocessable" and re.search(r"\b3\b", err["message"]), err

    r = call(read, client, symbol=unique_name("MISSING"), timeframe="1m")
    assert r.status_code == 404
    assert _error_body(r)["code"] == "not_found"
