// Series view: loads only the visible range, resampled so that it holds at most one
// bar per two pixels, plus the coverage gaps of that range; zoom (wheel, buttons) and
// pan (drag, buttons) change the range and load again. What is drawn is published on
// `fastkConsole.state` (candles or points, axis, resample, gaps) for tests.
"use strict";

(function (fk) {
  const PX_PER_BAR = 2;
  const el = (id) => document.getElementById(id);
  const canvas = () => el("chart");
  let current = null; // {kind, key, path, meta, tfMs, bars, bucketMs, gapList}
  let controller = null;
  let timer = null;

  function pathOf(key) {
    const p = key.split("/");
    if (p[0] === "kline" && p.length === 3) return "/v1/kline/" + p.slice(1).map(encodeURIComponent).join("/");
    if (p[0] === "scalar" && p.length === 5) return "/v1/scalar/" + p.slice(1).map(encodeURIComponent).join("/");
    return null;
  }

  function showError(e) {
    const box = el("view-error");
    box.hidden = !e;
    box.textContent = e ? (e.describe ? e.describe() : String(e)) : "";
  }

  // Opens "kline/SYM/1m" (optionally "@start,end" for a range).
  async function open(address) {
    const [key, range] = (address || "").split("@");
    const path = pathOf(key);
    const s = fk.state;
    s.series = key; s.candles = 0; s.points = 0; s.gaps = 0; s.axis = null; s.resample = null;
    showError(null);
    if (!path) { fk.chart.message(canvas(), "pick a series on the Series tab"); return; }
    el("view-title").textContent = key;
    try {
      const meta = await fk.api.get(path);
      current = { kind: key.split("/")[0], key, path, meta, tfMs: meta.timeframe_ms, bars: [], gapList: [] };
      let start = meta.first_ts, end = meta.last_ts;
      const r = (range || "").split(",").map(Number);
      if (r.length === 2 && r.every(isFinite) && r[0] < r[1]) [start, end] = r;
      if (start === null || end === null) {
        s.axis = null;
        fk.chart.message(canvas(), "this series has no rows yet");
        s.loads += 1;
        return;
      }
      if (end - start < meta.timeframe_ms * 10) end = start + meta.timeframe_ms * 10;
      await load(start, end);
    } catch (e) {
      showError(e);
      fk.chart.message(canvas(), "could not load the series");
      s.loads += 1;
    }
  }

  async function load(start, end) {
    if (!current) return;
    const s = fk.state;
    start = Math.round(start); end = Math.round(end);
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    const maxBars = Math.floor(fk.chart.plotWidth(canvas()) / PX_PER_BAR);
    const resample = fk.fmt.chooseResample(current.tfMs, end - start, maxBars);
    const bucketMs = resample ? fk.fmt.timeframeMs(resample) : current.tfMs;
    s.loading = true;
    const q = fk.fmt.query({
      start_ts: start, end_ts: end, limit: maxBars + 4, resample,
      agg: resample && current.kind === "scalar" ? "mean" : "",
    });
    try {
      const [page, gapList] = await Promise.all([
        fk.api.get(current.path + "/records" + q, { signal }),
        coverage(start, end, signal),
      ]);
      Object.assign(current, { bars: page.records, bucketMs, gapList, start, end });
      s.axis = { start_ts: start, end_ts: end };
      s.resample = resample || "none";
      s.bucket_ms = bucketMs;
      s.max_bars = maxBars;
      s.candles = current.kind === "kline" ? page.records.length : 0;
      s.points = current.kind === "scalar" ? page.records.length : 0;
      s.gaps = gapList.length;
      s.gap_list = gapList;
      s.truncated = page.next_start_ts !== null;
      showError(null);
      redraw();
    } catch (e) {
      if (e.name === "AbortError") return;
      showError(e);
    } finally {
      if (!signal.aborted) { s.loading = false; s.loads += 1; }
    }
  }

  // Gaps inside the stored span of the range (outside it nothing is expected).
  async function coverage(start, end, signal) {
    const m = current.meta;
    if (m.irregular) return [];
    const lo = Math.max(start, m.first_ts), hi = Math.min(end, m.last_ts);
    if (!(lo <= hi)) return [];
    const q = fk.fmt.query({ start_ts: lo, end_ts: hi, max_gaps: 1000 });
    const cov = await fk.api.get(current.path + "/coverage" + q, { signal });
    return cov.gaps;
  }

  function redraw() {
    if (!current || current.start === undefined) return;
    const m = current.meta;
    fk.chart.draw(canvas(), {
      kind: current.kind, start: current.start, end: current.end, bucketMs: current.bucketMs,
      bars: current.bars, gaps: current.gapList, tfMs: current.tfMs,
      priceScale: m.price_scale, volumeScale: m.volume_scale,
    });
    const s = fk.state;
    el("view-info").textContent = fk.fmt.formatTs(current.start) + " \u2013 " + fk.fmt.formatTs(current.end) +
      " UTC \u00b7 " + (s.candles || s.points) + (current.kind === "kline" ? " candles" : " points") +
      " \u00b7 resample " + s.resample + " \u00b7 " + s.gaps + " gap" + (s.gaps === 1 ? "" : "s");
  }

  // Moves the range at once (redraw of what is loaded), then loads it shortly after.
  function setRange(start, end) {
    if (!current || current.start === undefined) return;
    const minSpan = current.tfMs * 10;
    if (end - start < minSpan) { const mid = (start + end) / 2; start = mid - minSpan / 2; end = mid + minSpan / 2; }
    current.start = start; current.end = end;
    redraw();
    clearTimeout(timer);
    timer = setTimeout(() => load(start, end), 150);
  }

  function zoom(factor, anchor) {
    if (!current) return;
    const a = anchor === undefined ? (current.start + current.end) / 2 : anchor;
    setRange(a - (a - current.start) * factor, a + (current.end - a) * factor);
  }

  function pan(fraction) {
    if (!current) return;
    const d = (current.end - current.start) * fraction;
    setRange(current.start + d, current.end + d);
  }

  function timeAt(clientX) {
    const r = canvas().getBoundingClientRect();
    const px = clientX - r.left - 8;
    return current.start + (px / fk.chart.plotWidth(canvas())) * (current.end - current.start);
  }

  function init() {
    Object.assign(fk.state, { series: null, candles: 0, points: 0, axis: null, gaps: 0, resample: null, loading: false, loads: 0 });
    el("view-zoom-in").addEventListener("click", () => zoom(0.5));
    el("view-zoom-out").addEventListener("click", () => zoom(2));
    el("view-left").addEventListener("click", () => pan(-0.5));
    el("view-right").addEventListener("click", () => pan(0.5));
    el("view-all").addEventListener("click", () => current && setRange(current.meta.first_ts, current.meta.last_ts));
    const c = canvas();
    c.addEventListener("wheel", (ev) => {
      if (!current || current.start === undefined) return;
      ev.preventDefault();
      zoom(ev.deltaY > 0 ? 1.25 : 0.8, timeAt(ev.clientX));
    }, { passive: false });
    let drag = null;
    c.addEventListener("mousedown", (ev) => {
      if (current && current.start !== undefined) drag = { x: ev.clientX, start: current.start, end: current.end };
    });
    window.addEventListener("mousemove", (ev) => {
      if (!drag) return;
      const d = ((drag.x - ev.clientX) / fk.chart.plotWidth(c)) * (drag.end - drag.start);
      current.start = drag.start + d; current.end = drag.end + d;
      redraw();
    });
    window.addEventListener("mouseup", () => {
      if (!drag) return;
      drag = null;
      setRange(current.start, current.end);
    });
    window.addEventListener("resize", redraw);
  }

  fk.view = { init, open, load, zoom, pan, redraw };
})(window.fastkConsole);
