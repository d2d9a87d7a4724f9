// Formatting and time arithmetic shared by the panels: timestamps, numbers,
// timeframes and the choice of a resample timeframe for a visible range.
"use strict";
window.fastkConsole = window.fastkConsole || { state: {} };

(function (fk) {
  const UNIT_MS = { s: 1000, m: 60000, h: 3600000, d: 86400000, w: 604800000, M: 2592000000 };

  // "5m" -> 300000; months count as 30 days (only used to estimate bar counts).
  function timeframeMs(tf) {
    const m = /^(\d+)([smhdwM])$/.exec(tf || "");
    return m ? Number(m[1]) * UNIT_MS[m[2]] : NaN;
  }

  // The resample ladder, finest first. Fixed widths must be multiples of the stored
  // timeframe; weeks and months only need to be at least as wide (market-queries.md).
  const LADDER = ["1s", "5s", "15s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "4h",
    "6h", "12h", "1d", "1w", "1M", "3M", "12M"];

  // The finest timeframe that puts at most `maxBars` buckets in `spanMs`; "" when
  // the stored bars already do (no resample needed).
  function chooseResample(storedMs, spanMs, maxBars) {
    if (!(storedMs > 0) || spanMs / storedMs <= maxBars) return "";
    for (const tf of LADDER) {
      const ms = timeframeMs(tf);
      const calendar = /[wM]$/.test(tf);
      if (ms <= storedMs) continue;
      if (!calendar && ms % storedMs !== 0) continue;
      if (spanMs / ms <= maxBars) return tf;
    }
    return "12M";
  }

  function pad(n, w) { return String(n).padStart(w || 2, "0"); }

  // UTC, as the API's timestamps are; precision follows `stepMs` when given.
  function formatTs(ts, stepMs) {
    if (ts === null || ts === undefined || !isFinite(ts)) return "";
    const d = new Date(ts);
    const date = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    const time = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (stepMs >= 86400000) return date;
    if (stepMs !== undefined && stepMs < 60000) return time + ":" + pad(d.getUTCSeconds());
    return stepMs !== undefined ? time : date + " " + time;
  }

  function formatNumber(v) {
    if (v === null || v === undefined) return "";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    return Math.abs(v) >= 1000 ? v.toFixed(2) : String(Number(v.toPrecision(6)));
  }

  function formatBytes(n) {
    if (!(n >= 0)) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  // Builds "?a=1&b=2", leaving out empty values.
  function query(params) {
    const parts = [];
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(v));
    }
    return parts.length ? "?" + parts.join("&") : "";
  }

  // Empties `el` and appends text content (never HTML: values come from the store).
  function setText(el, text) { el.textContent = text; }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  fk.fmt = { timeframeMs, chooseResample, formatTs, formatNumber, formatBytes, query, setText, cell };
})(window.fastkConsole);
