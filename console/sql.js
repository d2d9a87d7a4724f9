// SQL editor: POST /v1/sql (JSON) into a grid, EXPLAIN, and downloads of the result
// as CSV (made here from the grid's data) or Arrow (the server's IPC stream).
"use strict";

(function (fk) {
  const ARROW = "application/vnd.apache.arrow.stream";
  const MAX_RENDERED = 10000; // rows put in the DOM; the CSV has them all
  const el = (id) => document.getElementById(id);
  let last = null; // {columns, rows}

  function showError(e) {
    const box = el("sql-error");
    box.hidden = !e;
    box.textContent = e ? (e.describe ? e.describe() : String(e)) : "";
    fk.state.sql.error = e ? box.textContent : null;
  }

  function isTime(col) { return /^Timestamp/.test(col.type); }

  function render(result) {
    const grid = el("sql-grid");
    const head = grid.tHead, body = grid.tBodies[0];
    head.textContent = ""; body.textContent = "";
    const hr = document.createElement("tr");
    for (const c of result.columns) {
      const th = document.createElement("th");
      th.textContent = c.name;
      th.title = c.type;
      hr.appendChild(th);
    }
    head.appendChild(hr);
    const plan = result.columns.length === 2 && result.columns[0].name === "plan_type";
    for (const row of result.rows.slice(0, MAX_RENDERED)) {
      const tr = document.createElement("tr");
      row.forEach((v, i) => {
        const col = result.columns[i];
        if (plan && i === 1) {
          const pre = document.createElement("pre");
          pre.textContent = v;
          fk.fmt.cell(tr, "").appendChild(pre);
        } else if (isTime(col) && typeof v === "number") {
          fk.fmt.cell(tr, fk.fmt.formatTs(v)).title = String(v);
        } else {
          fk.fmt.cell(tr, v === null ? "null" : String(v), typeof v === "number" ? "num" : "");
        }
      });
      body.appendChild(tr);
    }
  }

  async function run(explain) {
    const st = fk.state.sql;
    const text = el("sql-text").value.trim();
    const query = explain ? "EXPLAIN " + text : text;
    st.running = true;
    showError(null);
    el("sql-info").textContent = "running\u2026";
    const t0 = performance.now();
    try {
      const result = await fk.api.post("/v1/sql", { query });
      last = explain ? null : result;
      render(result);
      st.rows = result.rows.length;
      st.rendered = Math.min(result.rows.length, MAX_RENDERED);
      st.columns = result.columns.map((c) => c.name);
      st.explain = !!explain;
      el("sql-info").textContent = result.rows.length + " rows in " + Math.round(performance.now() - t0) + " ms" +
        (result.rows.length > MAX_RENDERED ? " (first " + MAX_RENDERED + " shown)" : "") +
        " \u00b7 rows scanned " + result.stats.rows_scanned;
    } catch (e) {
      last = null;
      st.rows = 0; st.rendered = 0; st.columns = [];
      render({ columns: [], rows: [] });
      showError(e);
      el("sql-info").textContent = "";
    } finally {
      el("sql-csv").disabled = !last;
      st.running = false;
      st.runs += 1;
    }
  }

  function csvField(v) {
    if (v === null || v === undefined) return "";
    const s = String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function toCsv(result) {
    const lines = [result.columns.map((c) => csvField(c.name)).join(",")];
    for (const row of result.rows) lines.push(row.map(csvField).join(","));
    return lines.join("\r\n") + "\r\n";
  }

  function save(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    fk.state.sql.download = { name, bytes: blob.size };
  }

  async function downloadArrow() {
    showError(null);
    try {
      const blob = await fk.api.post("/v1/sql", { query: el("sql-text").value.trim() }, { accept: ARROW, as: "blob" });
      save(blob, "fastk-result.arrows");
    } catch (e) {
      showError(e);
    }
  }

  function init() {
    fk.state.sql = { rows: 0, rendered: 0, columns: [], error: null, running: false, runs: 0, download: null, explain: false };
    el("sql-run").addEventListener("click", () => run(false));
    el("sql-explain").addEventListener("click", () => run(true));
    el("sql-csv").addEventListener("click", () => last && save(new Blob([toCsv(last)], { type: "text/csv" }), "fastk-result.csv"));
    el("sql-arrow").addEventListener("click", downloadArrow);
    el("sql-text").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(false); }
    });
  }

  fk.sql = { init, run, toCsv };
})(window.fastkConsole);
