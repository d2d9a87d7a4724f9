// The shell: tabs addressed by the location hash (#series, #view/kline/SYM/1m,
// #sql, #health), the token form, and the box that shows a 401's message.
"use strict";

(function (fk) {
  const el = (id) => document.getElementById(id);
  const TABS = ["series", "view", "sql", "health"];

  function showAuth(err) {
    const box = el("auth-box");
    fk.state.auth = { needed: !!err, message: err ? err.message : null };
    box.hidden = !err;
    box.textContent = err
      ? err.describe() + "\nEnter the server's bearer token at the top right and press \u201cUse token\u201d."
      : "";
  }

  // Shows `tab` and loads what it shows; `arg` is the view's series address.
  function show(tab, arg) {
    if (!TABS.includes(tab)) tab = "series";
    const hash = "#" + tab + (arg ? "/" + arg : "");
    if (location.hash !== hash) history.replaceState(null, "", hash);
    fk.state.tab = tab;
    for (const t of TABS) el("tab-" + t).hidden = t !== tab;
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
    if (tab === "series") fk.browser.load();
    if (tab === "view") {
      if (arg) fk.view.open(arg);
      else fk.view.redraw();
    }
    if (tab === "health") fk.health.refresh();
  }

  function fromHash() {
    const h = decodeURIComponent(location.hash.replace(/^#/, ""));
    const i = h.indexOf("/");
    return i < 0 ? [h, ""] : [h.slice(0, i), h.slice(i + 1)];
  }

  function init() {
    fk.state.auth = { needed: false, message: null };
    fk.api.onAuth(showAuth);
    fk.browser.init();
    fk.view.init();
    fk.sql.init();
    fk.health.init();
    for (const b of document.querySelectorAll("#tabs button")) {
      b.addEventListener("click", () => show(b.dataset.tab, b.dataset.tab === "view" ? fk.state.series : ""));
    }
    el("token").value = fk.api.token();
    el("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      fk.api.setToken(el("token").value.trim());
      show(...fromHash());
    });
    el("token-clear").addEventListener("click", () => {
      fk.api.setToken("");
      el("token").value = "";
    });
    window.addEventListener("hashchange", () => show(...fromHash()));
    show(...fromHash());
    fk.state.ready = true;
  }

  fk.app = { show };
  init();
})(window.fastkConsole);
