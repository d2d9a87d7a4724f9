// Every call the console makes goes through here: the bearer token (kept in
// sessionStorage, sent only when set), and the contract's error body turned into an
// ApiError whose message is the server's own.
"use strict";

(function (fk) {
  const TOKEN_KEY = "fastk.console.token";

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    // "401 unauthorized: this server requires a token: ..."
    describe() { return this.status + " " + this.code + ": " + this.message; }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function setToken(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  // Listeners told about each answer's auth outcome: (ApiError or null).
  const authListeners = [];
  function onAuth(fn) { authListeners.push(fn); }
  function tellAuth(err) { for (const fn of authListeners) fn(err); }

  async function errorOf(resp) {
    let code = "http_" + resp.status;
    let message = resp.statusText || "request failed";
    try {
      const body = await resp.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) { /* not JSON: keep the status line */ }
    return new ApiError(resp.status, code, message);
  }

  // request("GET", "/health") -> the answer parsed as `as` ("json", "text", "blob").
  async function request(method, path, opts) {
    const o = opts || {};
    const headers = {};
    if (token()) headers.Authorization = "Bearer " + token();
    if (o.accept) headers.Accept = o.accept;
    let body;
    if (o.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(o.body);
    }
    let resp;
    try {
      resp = await fetch(path, { method, headers, body, signal: o.signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "the server did not answer: " + e.message);
    }
    const okStatus = resp.ok || (o.allow || []).includes(resp.status);
    if (!okStatus) {
      const err = await errorOf(resp);
      if (resp.status === 401) tellAuth(err);
      throw err;
    }
    if (path !== "/health" && path !== "/metrics") tellAuth(null);
    const as = o.as || "json";
    if (as === "text") return resp.text();
    if (as === "blob") return resp.blob();
    return resp.json();
  }

  fk.api = {
    ApiError, token, setToken, onAuth, request,
    get: (path, opts) => request("GET", path, opts),
    post: (path, body, opts) => request("POST", path, Object.assign({ body }, opts)),
  };
})(window.fastkConsole);
