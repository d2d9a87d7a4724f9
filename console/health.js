// Health: /health as a table, a few lines of /metrics, and the report of
// POST /v1/admin/validate (needs the token whenever the server has one) as a table.
"use strict";

(function (fk) {
  const el = (id) => document.getElementById(id);
  const METRICS = /^(fastk_(uptime_seconds|health_status|series|store_(rows|bytes|files)|rows_(read|written)_total|wal_(bytes|fold_lag_ms)|mapped_files(_in_use)?|sql_queries_running)) /;
  const MAX_METRIC_LINES = 30;

  function showError(e) {
    const box = el("health-error");
    box.hidden = !e;
    box.textContent = e ? (e.describe ? e.describe() : String(e)) : "";
  }

  function kvRows(table, obj) {
    const body = table.tBodies[0];
    body.textContent = "";
    for (const [k, v] of Object.entries(obj)) {
      const tr = document.createElement("tr");
      fk.fmt.cell(tr, k);
      let text = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
      if (/_bytes$/.test(k) && typeof v === "number") text = fk.fmt.formatBytes(v);
      if (/_ts$/.test(k) && typeof v === "number") text = fk.fmt.formatTs(v) + " UTC";
      fk.fmt.cell(tr, text);
      body.appendChild(tr);
    }
  }

  async function refresh() {
    const st = fk.state.health;
    showError(null);
    try {
      // 503 carries the same body (status "failing" and its details).
      const h = await fk.api.get("/health", { allow: [503] });
      st.status = h.status;
      kvRows(el("health-table"), h);
    } catch (e) {
      st.status = null;
      showError(e);
    }
    try {
      const text = await fk.api.get("/metrics", { as: "text" });
      const lines = text.split("\n").filter((l) => l && !l.startsWith("#"));
      const chosen = lines.filter((l) => METRICS.test(l));
      st.metricLines = (chosen.length ? chosen : lines).slice(0, MAX_METRIC_LINES);
      el("health-metrics").textContent = st.metricLines.join("\n");
    } catch (e) {
      showError(e);
    }
    st.loads += 1;
  }

  async function validate() {
    const st = fk.state.health;
    showError(null);
    el("validate-summary").textContent = "running\u2026";
    try {
      const r = await fk.api.post("/v1/admin/validate", {});
      st.findings = r.findings.length;
      st.clean = r.clean;
      el("validate-summary").textContent = (r.clean ? "clean" : r.findings.length + " finding(s)") +
        " \u00b7 " + r.series_checked + " series, " + r.chunks_checked + " chunks checked in " + r.duration_ms + " ms";
      const body = el("validate-table").tBodies[0];
      body.textContent = "";
      for (const f of r.findings) {
        const tr = document.createElement("tr");
        for (const k of ["kind", "series", "month", "file", "detail", "suggested_action"]) fk.fmt.cell(tr, f[k] || "");
        body.appendChild(tr);
      }
    } catch (e) {
      st.findings = null;
      el("validate-summary").textContent = "not run";
      showError(e);
    }
    st.validations += 1;
  }

  function init() {
    fk.state.health = { status: null, metricLines: [], findings: null, clean: null, loads: 0, validations: 0 };
    el("health-refresh").addEventListener("click", refresh);
    el("health-validate").addEventListener("click", validate);
  }

  fk.health = { init, refresh, validate };
})(window.fastkConsole);
