// Series browser: one page of `GET /inventory?partitions=false&limit&after` at a
// time (so a store of 100,000 series is never loaded at once), filtered by kind and
// exact symbol on the server. Previous pages are the stack of `after` cursors.
"use strict";

(function (fk) {
  const PAGE = 50;
  const el = (id) => document.getElementById(id);
  const st = () => fk.state.browser;

  // "kline/BTCUSDT/1m" or "scalar/BTCUSDT/1m/indicator/rsi_14": the view's address.
  function keyOf(s) {
    const base = s.kind + "/" + s.symbol + "/" + s.timeframe;
    return s.kind === "scalar" ? base + "/" + s.category + "/" + s.name : base;
  }

  function label(s) {
    const base = s.symbol + " " + s.timeframe;
    return s.kind === "scalar" ? base + " " + s.category + "/" + s.name : base;
  }

  async function load() {
    const b = st();
    b.loading = true;
    el("series-error").hidden = true;
    const after = b.cursors[b.cursors.length - 1];
    const q = fk.fmt.query({ partitions: "false", limit: PAGE, after, kind: b.kind, symbol: b.symbol });
    try {
      const inv = await fk.api.get("/inventory" + q);
      render(inv.series);
      b.rows = inv.series.length;
      b.nextAfter = inv.next_after || null;
    } catch (e) {
      render([]);
      b.rows = 0;
      b.nextAfter = null;
      el("series-error").textContent = e.describe ? e.describe() : String(e);
      el("series-error").hidden = false;
    } finally {
      b.loading = false;
      b.loads += 1;
      el("series-prev").disabled = b.cursors.length <= 1;
      el("series-next").disabled = !b.nextAfter;
      el("series-page").textContent = "page " + b.cursors.length + (b.rows ? ", " + b.rows + " series" : "");
    }
  }

  function render(series) {
    const body = el("series-table").tBodies[0];
    body.textContent = "";
    for (const s of series) {
      const tr = document.createElement("tr");
      tr.dataset.key = keyOf(s);
      fk.fmt.cell(tr, s.kind);
      fk.fmt.cell(tr, label(s));
      fk.fmt.cell(tr, fk.fmt.formatNumber(s.rows), "num");
      fk.fmt.cell(tr, fk.fmt.formatTs(s.first_ts));
      fk.fmt.cell(tr, fk.fmt.formatTs(s.last_ts));
      fk.fmt.cell(tr, fk.fmt.formatBytes(s.bytes), "num");
      tr.addEventListener("click", () => fk.app.show("view", keyOf(s)));
      body.appendChild(tr);
    }
    if (!series.length) {
      const tr = document.createElement("tr");
      fk.fmt.cell(tr, "no series").colSpan = 6;
      body.appendChild(tr);
    }
  }

  function init() {
    fk.state.browser = { rows: 0, nextAfter: null, cursors: [""], kind: "", symbol: "", loading: false, loads: 0 };
    el("series-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const b = st();
      b.kind = el("series-kind").value;
      b.symbol = el("series-symbol").value.trim();
      b.cursors = [""];
      load();
    });
    el("series-kind").addEventListener("change", () => el("series-form").requestSubmit());
    el("series-next").addEventListener("click", () => {
      if (!st().nextAfter) return;
      st().cursors.push(st().nextAfter);
      load();
    });
    el("series-prev").addEventListener("click", () => {
      if (st().cursors.length <= 1) return;
      st().cursors.pop();
      load();
    });
  }

  fk.browser = { init, load, keyOf, PAGE };
})(window.fastkConsole);
