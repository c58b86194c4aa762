// phantom demo page script (served with Cache-Control: public, max-age=300).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // ---- Cache status ---------------------------------------------------------------------------
  // Each row of #cache-status names a URL (data-url). We fetch it and show what phantom said in
  // its Cache-Status and Age response headers. When every row is filled, #cache-status gets
  // data-ready="true" (a hook for browser tests).
  //
  // cache: "no-store" keeps the browser's own HTTP cache out of the way, so the request really
  // reaches phantom. In that mode browsers add "Cache-Control: no-cache" unless the request already
  // carries a Cache-Control header, and no-cache would make phantom revalidate with the origin
  // rather than answer from its cache; "max-stale=0" asks for nothing beyond the default.
  const FETCH_OPTIONS = { cache: "no-store", headers: { "Cache-Control": "max-stale=0" } };

  async function checkRow(row) {
    const cell = (name) => row.querySelector(`.${name}`);
    try {
      const response = await fetch(row.dataset.url, FETCH_OPTIONS);
      await response.arrayBuffer();
      const status = response.headers.get("cache-status");
      const age = response.headers.get("age");
      cell("http").textContent = String(response.status);
      cell("status").textContent = status ?? "(none)";
      cell("status").classList.toggle("hit", status !== null && /;\s*hit\b/i.test(status));
      cell("age").textContent = age ?? "-";
    } catch (err) {
      cell("http").textContent = "error";
      cell("status").textContent = String(err);
      cell("age").textContent = "-";
    }
  }

  async function checkCache() {
    const table = $("cache-status");
    delete table.dataset.ready;
    const rows = Array.from(table.querySelectorAll("tbody tr[data-url]"));
    for (const row of rows) {
      await checkRow(row); // one at a time: the order of requests stays easy to follow in logs
    }
    table.dataset.ready = "true";
  }

  // ---- WebSocket echo -------------------------------------------------------------------------
  // #ws-state shows (and data-state holds) one of: connecting, open, closed.
  // #ws-log gets one <li> per event: class "sent", "received" or "info"; the text of a sent or
  // received entry is exactly the message.
  const MAX_LOG_ENTRIES = 200;
  const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws/echo`;
  let socket = null;

  function setState(state) {
    const el = $("ws-state");
    el.textContent = state;
    el.dataset.state = state;
    $("ws-send").disabled = state !== "open";
    $("ws-connect").disabled = state === "open" || state === "connecting";
  }

  function log(kind, text) {
    const list = $("ws-log");
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text;
    list.appendChild(item);
    while (list.children.length > MAX_LOG_ENTRIES) {
      list.removeChild(list.firstElementChild);
    }
    list.scrollTop = list.scrollHeight;
  }

  function connect() {
    const ws = new WebSocket(wsUrl);
    ws.binaryType = "arraybuffer";
    socket = ws;
    setState("connecting");
    ws.addEventListener("open", () => {
      if (socket === ws) setState("open");
    });
    ws.addEventListener("message", (event) => {
      const data = event.data;
      log("received", typeof data === "string" ? data : `[${data.byteLength} bytes]`);
    });
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      setState("closed");
      log("info", `connection closed (code ${event.code})`);
    });
    // An "error" event is always followed by "close", which updates the state.
    ws.addEventListener("error", () => {
      if (socket === ws) log("info", "connection error");
    });
  }

  function send(event) {
    event.preventDefault();
    const input = $("ws-input");
    const text = input.value;
    if (!socket || socket.readyState !== WebSocket.OPEN || text === "") return;
    socket.send(text);
    log("sent", text);
    input.value = "";
    input.focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("ws-url").textContent = wsUrl;
    $("ws-form").addEventListener("submit", send);
    $("ws-connect").addEventListener("click", connect);
    $("cache-refresh").addEventListener("click", checkCache);
    connect();
    checkCache();
  });
})();
