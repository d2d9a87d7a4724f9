"""The web console (`/console`) in a real browser: headless Chromium driven by Selenium.

Real data goes in over the HTTP API (a kline series of 1m bars with a deliberate hole,
a scalar series, enough other series to need paging); then each panel is opened and
what it drew is checked from the page's published state (`fastkConsole.state`)
against the same questions asked over HTTP. Screenshots go to the test's tmp dir and,
with FASTK_CONSOLE_SCREENSHOTS=1, to docs/console/ for docs/console.md.

Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver; scripts/test.sh
installs them when it runs as root). Without them the tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from fastk_testlib import (
    AUTH_TOKEN,
    JAN_1_2024_MS,
    MINUTE_MS,
    REPO_ROOT,
    expect_ok,
    kline_path,
    make_klines,
    make_scalars,
    register_kline,
    register_scalar,
    scalar_path,
)

BARS = 3000
HOLE = range(1500, 1560)  # indexes of the bars left out: one gap of 60 bars
SYMBOL = "CONSOLEBTC"
OTHER_SERIES = 70  # with SYMBOL's two, more than one inventory page (50)
WAIT_S = 60
SCREENSHOTS_ENV = "FASTK_CONSOLE_SCREENSHOTS"


def _driver(download_dir: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip(f"selenium is not installed: {e}")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not browser or not driver_bin:
        pytest.skip(f"needs chromium and chromedriver on PATH (found {browser}, {driver_bin})")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(download_dir), "download.prompt_for_download": False},
    )
    try:
        return webdriver.Chrome(service=Service(driver_bin), options=opts)
    except Exception as e:  # any failure to start the browser is an environment problem
        pytest.skip(f"chromedriver could not start chromium: {str(e).splitlines()[0]}")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console-downloads")


@pytest.fixture(scope="module")
def browser(downloads) -> Iterator[Any]:
    driver = _driver(downloads)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def data_server(start_server):
    """A server of its own holding the console's data (nothing else writes to it)."""
    server = start_server("console", {"FASTK__STORAGE__LOW_DISK_BYTES": "0"})
    base = server.http_url
    with requests.Session() as s:
        expect_ok(register_kline(s, base, SYMBOL), 200, 201)
        bars = [b for i, b in enumerate(make_klines(BARS)) if i not in HOLE]
        expect_ok(s.post(f"{base}{kline_path(SYMBOL)}/records", json={"records": bars}, timeout=60))
        expect_ok(register_scalar(s, base, SYMBOL, "indicator", "rsi_14"), 200, 201)
        values = make_scalars(BARS)
        path = scalar_path(SYMBOL, "1m", "indicator", "rsi_14")
        expect_ok(s.post(f"{base}{path}/records", json={"records": values}, timeout=60))
        many = [
            {"symbol": f"ZZ{i:03d}", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}
            for i in range(OTHER_SERIES)
        ]
        expect_ok(s.post(f"{base}/v1/kline/series/many", json={"series": many}, timeout=60))
    return server


def state(driver, expr: str = "") -> Any:
    return driver.execute_script("return window.fastkConsole.state" + expr)


def wait_for(driver, js: str, what: str) -> Any:
    """Waits until the JS expression (over `s`, the state) is truthy; returns it."""
    deadline = time.monotonic() + WAIT_S
    script = "const s = (window.fastkConsole || {}).state || {}; return (" + js + ");"
    while time.monotonic() < deadline:
        try:
            value = driver.execute_script(script)
        except Exception:  # the page is still loading
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; state: {state(driver)}")


def open_page(driver, server, fragment: str) -> None:
    driver.get("about:blank")
    driver.get(f"{server.http_url}/console#{fragment}")
    wait_for(driver, "s.ready", "the console to start")


def click(driver, element_id: str) -> None:
    driver.find_element("id", element_id).click()


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """Saves a PNG, checks it is not blank, and copies it to docs/console/ on request."""
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    try:
        from PIL import Image
    except ImportError:
        # A blank 1280x900 PNG compresses to a few KB; a drawn page does not.
        assert path.stat().st_size > 20_000, f"{path} looks blank ({path.stat().st_size} bytes)"
    else:
        with Image.open(path) as img:
            colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is None or len(colours) > 16, f"{path} looks blank"
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        out = REPO_ROOT / "docs" / "console"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / path.name)
    return path


def http_records(server, path: str, **params) -> dict:
    r = requests.get(f"{server.http_url}{path}/records", params=params, timeout=30)
    return expect_ok(r)


def check_chart_against_http(driver, server, path: str, kind: str) -> dict:
    """The drawn bars are exactly what the same read over HTTP answers."""
    s = state(driver)
    axis = s["axis"]
    params = {"start_ts": axis["start_ts"], "end_ts": axis["end_ts"], "limit": s["max_bars"] + 4}
    if s["resample"] != "none":
        params["resample"] = s["resample"]
        if kind == "scalar":
            params["agg"] = "mean"
    page = http_records(server, path, **params)
    drawn = s["candles"] if kind == "kline" else s["points"]
    assert drawn == len(page["records"]) > 0, (s, len(page["records"]))
    # At most one bar per two pixels, and the resample is the finest that allows it.
    assert drawn <= s["max_bars"] + 2, s
    span = axis["end_ts"] - axis["start_ts"]
    assert span / s["bucket_ms"] <= s["max_bars"], s
    if s["resample"] != "none":
        assert span / MINUTE_MS > s["max_bars"], s
    return s


def test_console_is_served_with_its_assets(data_server):
    with requests.Session() as s:
        for path in ("/console", "/console/"):
            r = s.get(data_server.http_url + path, timeout=30)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert r.headers["cache-control"] == "no-cache"
        r = s.get(data_server.http_url + "/console/app.js", timeout=30)
        assert r.headers["content-type"].startswith("text/javascript"), r.headers
        again = s.get(data_server.http_url + "/console/app.js", timeout=30,
                      headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        missing = s.get(data_server.http_url + "/console/nope.js", timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_series_browser_pages_and_filters(browser, data_server, tmp_path):
    open_page(browser, data_server, "series")
    wait_for(browser, "s.browser.loads >= 1 && !s.browser.loading", "the first page")
    first = state(browser, ".browser")
    assert first["rows"] == 50 and first["nextAfter"], first
    screenshot(browser, tmp_path, "series")
    click(browser, "series-next")
    wait_for(browser, "s.browser.loads >= 2 && !s.browser.loading", "the second page")
    second = state(browser, ".browser")
    assert second["rows"] == OTHER_SERIES + 2 - 50 and second["nextAfter"] is None, second
    click(browser, "series-prev")
    wait_for(browser, "s.browser.loads >= 3 && !s.browser.loading", "the first page again")
    assert state(browser, ".browser.rows") == 50
    browser.find_element("id", "series-symbol").send_keys(SYMBOL)
    browser.execute_script("document.getElementById('series-form').requestSubmit()")
    wait_for(browser, "s.browser.loads >= 4 && !s.browser.loading", "the filtered page")
    assert state(browser, ".browser.rows") == 2
    keys = [tr.get_attribute("data-key") for tr in browser.find_elements("css selector", "#series-table tbody tr")]
    assert keys == [f"kline/{SYMBOL}/1m", f"scalar/{SYMBOL}/1m/indicator/rsi_14"], keys
    # Choosing a series opens its chart.
    browser.find_element("css selector", "#series-table tbody tr").click()
    wait_for(browser, "s.tab === 'view' && s.loads >= 1 && !s.loading", "the chart")
    assert state(browser, ".candles") > 0


def test_kline_chart_draws_the_range_and_the_gap(browser, data_server, tmp_path):
    open_page(browser, data_server, f"view/kline/{SYMBOL}/1m")
    wait_for(browser, "s.loads >= 1 && !s.loading", "the chart")
    path = kline_path(SYMBOL)
    s = check_chart_against_http(browser, data_server, path, "kline")
    first_ts, last_ts = JAN_1_2024_MS, JAN_1_2024_MS + (BARS - 1) * MINUTE_MS
    assert s["axis"] == {"start_ts": first_ts, "end_ts": last_ts}, s
    assert s["resample"] not in ("none", None), s  # 3000 bars do not fit 1 per 2 px
    assert s["gaps"] == 1, s
    gap = s["gap_list"][0]
    assert gap["start_ts"] == first_ts + HOLE.start * MINUTE_MS, gap
    assert gap["missing"] == len(HOLE), gap
    screenshot(browser, tmp_path, "chart-kline")

    # Zoom in twice around the middle: a quarter of the span, loaded again, finer.
    loads = s["loads"]
    for _ in range(2):
        click(browser, "view-zoom-in")
        loads_js = f"s.loads > {loads} && !s.loading"
        wait_for(browser, loads_js, "the zoomed chart")
        loads = state(browser, ".loads")
    z = check_chart_against_http(browser, data_server, path, "kline")
    span = last_ts - first_ts
    assert abs((z["axis"]["end_ts"] - z["axis"]["start_ts"]) - span / 4) <= 1, z
    assert z["bucket_ms"] < s["bucket_ms"], (z, s)
    assert z["gaps"] == 1, z  # the hole is in the middle
    screenshot(browser, tmp_path, "chart-kline-zoomed")

    # Pan left by half the span: the axis moves, the bars follow, the gap too.
    click(browser, "view-left")
    wait_for(browser, f"s.loads > {loads} && !s.loading", "the panned chart")
    p = check_chart_against_http(browser, data_server, path, "kline")
    assert p["axis"]["start_ts"] < z["axis"]["start_ts"], (p, z)

    # Drag to pan and wheel to zoom work too (they load only the new range).
    from selenium.webdriver.common.action_chains import ActionChains

    loads = state(browser, ".loads")
    canvas = browser.find_element("id", "chart")
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(200, 0).release().perform()
    wait_for(browser, f"s.loads > {loads} && !s.loading", "the dragged chart")
    d = check_chart_against_http(browser, data_server, path, "kline")
    assert d["axis"]["start_ts"] < p["axis"]["start_ts"], (d, p)


def test_scalar_chart_draws_a_line(browser, data_server, tmp_path):
    open_page(browser, data_server, f"view/scalar/{SYMBOL}/1m/indicator/rsi_14")
    wait_for(browser, "s.loads >= 1 && !s.loading", "the scalar chart")
    path = scalar_path(SYMBOL, "1m", "indicator", "rsi_14")
    s = check_chart_against_http(browser, data_server, path, "scalar")
    assert s["candles"] == 0 and s["gaps"] == 0, s
    screenshot(browser, tmp_path, "chart-scalar")


def run_sql(browser, query: str, button: str = "sql-run") -> dict:
    runs = state(browser, ".sql.runs")
    browser.execute_script("document.getElementById('sql-text').value = arguments[0]", query)
    click(browser, button)
    wait_for(browser, f"s.sql.runs > {runs} && !s.sql.running", "the query")
    return state(browser, ".sql")


def test_sql_editor_grid_errors_and_downloads(browser, data_server, downloads, tmp_path):
    open_page(browser, data_server, "sql")
    query = (f"SELECT ts, open, close FROM kline_raw WHERE symbol = '{SYMBOL}' "
             "AND ts < '2024-01-01T08:20:00Z' ORDER BY ts")  # the first 500 bars
    over_http = expect_ok(requests.post(f"{data_server.http_url}/v1/sql", json={"query": query}, timeout=30))
    s = run_sql(browser, query)
    assert s["error"] is None, s
    assert s["rows"] == len(over_http["rows"]) == 500, s
    assert len(browser.find_elements("css selector", "#sql-grid tbody tr")) == 500
    assert s["columns"] == ["ts", "open", "close"], s
    screenshot(browser, tmp_path, "sql")

    # CSV, made in the page, and Arrow, the server's stream, saved as files.
    click(browser, "sql-csv")
    wait_for(browser, "s.sql.download && s.sql.download.name.endsWith('.csv')", "the CSV")
    csv = downloads / "fastk-result.csv"
    deadline = time.monotonic() + 10
    while not csv.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if csv.exists():
        lines = csv.read_text().splitlines()
        assert lines[0] == "ts,open,close" and len(lines) == 501, lines[:3]
    browser.execute_script("window.fastkConsole.state.sql.download = null")
    click(browser, "sql-arrow")
    dl = wait_for(browser, "s.sql.download && s.sql.download.name.endsWith('.arrows') && s.sql.download", "the Arrow file")
    assert dl["bytes"] > 0, dl
    arrow = downloads / dl["name"]
    deadline = time.monotonic() + 10
    while not arrow.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if arrow.exists():
        import pyarrow as pa

        table = pa.ipc.open_stream(arrow.read_bytes()).read_all()
        assert table.num_rows == 500 and table.column_names == ["ts", "open", "close"]

    # EXPLAIN shows the plan.
    e = run_sql(browser, query, "sql-explain")
    assert e["explain"] and e["rows"] >= 1 and e["error"] is None, e

    # A broken query shows the server's own message.
    broken = "SELEC 1"
    r = requests.post(f"{data_server.http_url}/v1/sql", json={"query": broken}, timeout=30)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    b = run_sql(browser, broken)
    box = browser.find_element("id", "sql-error")
    assert box.is_displayed() and message in box.text and "invalid_argument" in box.text, box.text
    assert b["rows"] == 0 and message in b["error"], b
    screenshot(browser, tmp_path, "sql-error")


def test_health_panel_and_validate(browser, data_server, tmp_path):
    open_page(browser, data_server, "health")
    wait_for(browser, "s.health.loads >= 1", "health")
    h = state(browser, ".health")
    assert h["status"] == "ok" and h["metricLines"], h
    click(browser, "health-validate")
    wait_for(browser, "s.health.validations >= 1", "validate")
    h = state(browser, ".health")
    assert h["findings"] == 0 and h["clean"] is True, h
    assert "clean" in browser.find_element("id", "validate-summary").text
    screenshot(browser, tmp_path, "health")


def test_protected_reads_ask_for_the_token(browser, protected_reads_server, tmp_path):
    server = protected_reads_server
    r = requests.get(f"{server.http_url}/inventory", params={"partitions": "false"}, timeout=30)
    assert r.status_code == 401
    message = r.json()["error"]["message"]
    # The page itself needs no token.
    open_page(browser, server, "series")
    wait_for(browser, "s.browser.loads >= 1 && !s.browser.loading", "the first page")
    box = browser.find_element("id", "auth-box")
    assert box.is_displayed() and message in box.text and "401" in box.text, box.text
    assert state(browser, ".auth")["needed"] is True
    screenshot(browser, tmp_path, "auth-401")

    # A wrong token is still a 401; the right one clears the box and loads the page.
    field = browser.find_element("id", "token")
    field.send_keys("wrong-token")
    click(browser, "token-save")
    wait_for(browser, "s.browser.loads >= 2 && !s.browser.loading", "the retry")
    assert box.is_displayed()
    field.clear()
    field.send_keys(AUTH_TOKEN)
    click(browser, "token-save")
    wait_for(browser, "s.browser.loads >= 3 && !s.browser.loading", "the page with a token")
    assert not box.is_displayed(), box.text
    assert state(browser, ".auth")["needed"] is False
    assert browser.execute_script("return sessionStorage.getItem('fastk.console.token')") == AUTH_TOKEN
    # Admin calls carry it too.
    open_page(browser, server, "health")
    click(browser, "health-validate")
    wait_for(browser, "s.health.validations >= 1", "validate")
    assert state(browser, ".health.clean") is True
