// The live viewer: tails this origin's /events with EventSource and shows
// the newest events first. Everything it keeps is capped (MAX_ROWS rows,
// the same number of events waiting while paused, 60 s of rates), so the
// tab can stay open for hours.
"use strict";

(() => {
  const MAX_ROWS = 500;
  const MAX_CELL = 300;  // characters shown in one table cell
  const MAX_DEPTH = 16;  // levels of nesting the summary descends
  const FILTER_FIELDS = ["event_name", "session_id"];
  const TOKEN_KEY = "event-dispatcher.access_token"; // sessionStorage: this tab only

  const $ = (id) => document.getElementById(id);
  const tbody = document.querySelector("#events tbody");
  const stateEl = $("state");
  const filtersForm = $("filters");
  const tokenForm = $("token");
  const noticeEl = $("notice");
  const pauseBtn = $("pause");
  const chart = $("chart");
  const detail = $("detail");

  const rowEvent = new WeakMap(); // table row -> the event's JSON text
  let source = null;   // the current EventSource
  let generation = 0;  // bumps on every connect, so stale callbacks are ignored
  let retryTimer = 0;
  let retryDelay = 1000;
  let paused = false;
  let waiting = [];    // received, not yet drawn: oldest first, at most MAX_ROWS
  let drawScheduled = false;
  let thisSecond = 0;
  const rates = new Array(60).fill(0);

  // --- connection ---------------------------------------------------------

  // Filters come from the form; any other parameter of the page's own URL
  // (e.g. /?version=1) is passed to the stream as a filter too, as written.
  // The query is built by hand: URLSearchParams would send the commas
  // between alternatives as %2C, which the server reads as a comma inside
  // one value, so "START,ERROR" would match nothing.
  function filterQuery() {
    const parts = [];
    for (const pair of location.search.slice(1).split("&")) {
      const name = decodeName(pair.split("=")[0]);
      if (pair && name !== "access_token" && !FILTER_FIELDS.includes(name)) parts.push(pair);
    }
    for (const name of FILTER_FIELDS) {
      const value = filtersForm.elements[name].value.trim();
      if (value) parts.push(name + "=" + value.split(",").map((v) => encodeURIComponent(v.trim())).join(","));
    }
    return parts.join("&");
  }

  function decodeName(raw) {
    try {
      return decodeURIComponent(raw.replace(/\+/g, " "));
    } catch (_) {
      return raw; // malformed: passed on, and the server answers 400
    }
  }

  function streamURL() {
    let q = filterQuery();
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) q += (q ? "&" : "") + "access_token=" + encodeURIComponent(token);
    return "/events" + (q ? "?" + q : "");
  }

  function setState(state, text) {
    stateEl.dataset.state = state;
    stateEl.textContent = text || state;
  }

  function notice(text) {
    noticeEl.hidden = !text;
    noticeEl.textContent = text || "";
  }

  // connect opens the stream with the current filters; retrying keeps the
  // "reconnecting" state on screen.
  function connect(retrying) {
    if (source) source.close();
    clearTimeout(retryTimer);
    const gen = ++generation;
    const query = filterQuery();
    if (retrying === true) setState("reconnecting", "reconnecting…");
    else setState("connecting", "connecting…");
    const es = new EventSource(streamURL());
    source = es;
    es.onopen = () => {
      if (gen !== generation) return;
      retryDelay = 1000;
      notice("");
      stateEl.dataset.query = query; // which filters this connection carries
      setState("connected");
    };
    es.onmessage = (e) => {
      if (gen === generation) receive(e.data);
    };
    es.onerror = () => {
      if (gen === generation) diagnose(es, gen);
    };
  }

  // EventSource does not say why it failed. Ask the same URL with fetch,
  // which sees the status: 401 means a token is needed, 400 a filter the
  // server refused; anything else is worth retrying.
  async function diagnose(es, gen) {
    setState("reconnecting", "reconnecting…");
    delete stateEl.dataset.query;
    const abort = new AbortController();
    let status = 0;
    let message = "";
    try {
      const resp = await fetch(streamURL(), { signal: abort.signal, cache: "no-store" });
      status = resp.status;
      if (status !== 200) message = ((await resp.json().catch(() => ({}))).error) || "";
    } catch (_) {
      // the server is unreachable: the retry below handles it
    } finally {
      abort.abort(); // a 200 is a live stream: do not keep it
    }
    if (gen !== generation) return;
    if (status === 401) {
      es.close();
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      setState("token", "token needed");
      tokenForm.hidden = false;
      notice(had ? "The token was refused." : "");
      tokenForm.elements.token.focus();
      return;
    }
    if (status === 400) {
      es.close();
      setState("refused", "filter refused");
      notice("The server refused the filter: " + (message || "bad request"));
      return;
    }
    // EventSource retries network errors by itself, but gives up on an
    // error status (e.g. 503 while the service restarts): retry then.
    if (es.readyState === EventSource.CLOSED) {
      retryTimer = setTimeout(() => connect(true), retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    }
  }

  // --- events -------------------------------------------------------------

  function receive(data) {
    thisSecond++;
    waiting.push({ data, at: Date.now() });
    if (waiting.length > MAX_ROWS) waiting.splice(0, waiting.length - MAX_ROWS);
    if (paused) {
      showCount();
      return;
    }
    if (!drawScheduled) {
      drawScheduled = true;
      requestAnimationFrame(draw);
    }
  }

  // draw adds what arrived since the last frame, newest on top, and drops
  // the oldest rows beyond MAX_ROWS.
  function draw() {
    drawScheduled = false;
    if (paused || waiting.length === 0) return;
    const batch = waiting;
    waiting = [];
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) frag.appendChild(row(batch[i]));
    tbody.insertBefore(frag, tbody.firstChild);
    while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
    showCount();
  }

  function row(ev) {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    let c;
    try {
      c = columns(ev.data);
    } catch (_) {
      // Whatever an event holds, it gets its row and the next one is drawn.
      c = { name: "", session: "", summary: ev.data, stamp: null };
    }
    // Rows are in arrival order, so the time shown is the arrival; the
    // player's own timestamp (ms since the epoch) is in the tooltip.
    cell(tr, clock(ev.at), "time").title = "received " + new Date(ev.at).toISOString() +
      (c.stamp && !isNaN(c.stamp) ? "\ntimestamp " + c.stamp.toISOString() : "");
    cell(tr, c.name, "name").dataset.name = c.name.slice(0, 32);
    cell(tr, c.session, "session");
    cell(tr, c.summary, "summary");
    rowEvent.set(tr, ev.data);
    return tr;
  }

  // columns reads what a row shows from the event's JSON text.
  function columns(data) {
    let obj = null;
    try {
      obj = JSON.parse(data);
    } catch (_) {
      // shown raw
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      return { name: "", session: "", summary: data, stamp: null };
    }
    return {
      name: text(obj.event_name),
      session: text(obj.session_id),
      summary: summary(obj),
      stamp: typeof obj.timestamp === "number" ? new Date(obj.timestamp) : null,
    };
  }

  // cell shows at most MAX_CELL characters (the whole event is a click
  // away), with bidirectional controls made visible, so that a value
  // cannot reorder what the rest of the row reads.
  function cell(tr, value, cls) {
    const td = tr.insertCell();
    td.className = cls;
    td.textContent = visible(value.length > MAX_CELL ? value.slice(0, MAX_CELL) + "…" : value);
    return td;
  }

  function visible(s) {
    return s.replace(/[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
      (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  function text(v) {
    if (v === undefined || v === null) return "";
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function clock(ms) {
    const d = new Date(ms);
    const p = (n, w) => String(n).padStart(w, "0");
    return `${p(d.getHours(), 2)}:${p(d.getMinutes(), 2)}:${p(d.getSeconds(), 2)}.${p(d.getMilliseconds(), 3)}`;
  }

  // summary lists the scalar leaves of the event, other than the columns
  // already shown, as path=value, "data." left out, up to 200 characters.
  // It walks with its own stack and stops descending at MAX_DEPTH, so a
  // deeply nested event cannot exhaust the call stack.
  function summary(obj) {
    const parts = [];
    let length = 0;
    const todo = []; // [value, path, depth], next on top
    const push = (v, base, depth) => {
      const entries = Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) {
        todo.push([entries[i][1], base ? base + "." + entries[i][0] : entries[i][0], depth]);
      }
    };
    push(Object.fromEntries(Object.entries(obj).filter(([k]) =>
      k !== "event_name" && k !== "session_id" && k !== "timestamp")), "", 1);
    while (todo.length > 0 && length <= 200) {
      const [v, path, depth] = todo.pop();
      const nested = v !== null && typeof v === "object";
      if (nested && depth < MAX_DEPTH) {
        push(v, path, depth + 1);
        continue;
      }
      const part = path.replace(/^data\./, "") + "=" + (nested ? "…" : text(v));
      parts.push(part.length > MAX_CELL ? part.slice(0, MAX_CELL) : part);
      length += part.length + 3;
    }
    return parts.join(" · ");
  }

  function showCount() {
    const n = tbody.rows.length;
    let s = `${n} event${n === 1 ? "" : "s"} shown, newest first (at most ${MAX_ROWS})`;
    if (paused) s += ` · paused, ${waiting.length} new${waiting.length === MAX_ROWS ? " (older ones dropped)" : ""}`;
    $("count").textContent = s;
    $("empty").hidden = n > 0;
  }

  // --- rate ---------------------------------------------------------------

  function tick() {
    rates.push(thisSecond);
    rates.shift();
    $("rate").textContent = String(thisSecond);
    thisSecond = 0;
    drawChart();
  }

  function drawChart() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(chart.clientWidth * dpr));
    const h = Math.max(1, Math.round(chart.clientHeight * dpr));
    if (chart.width !== w || chart.height !== h) {
      chart.width = w;
      chart.height = h;
    }
    const ctx = chart.getContext("2d");
    const css = getComputedStyle(document.documentElement);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = css.getPropertyValue("--line");
    ctx.fillRect(0, h - dpr, w, dpr);
    const top = Math.max(1, ...rates);
    const bar = w / rates.length;
    ctx.fillStyle = css.getPropertyValue("--accent");
    rates.forEach((r, i) => {
      const bh = Math.round((r / top) * (h - 2 * dpr));
      if (bh > 0) ctx.fillRect(i * bar, h - dpr - bh, Math.max(1, bar - dpr), bh);
    });
  }

  // --- controls -----------------------------------------------------------

  filtersForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = filterQuery();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : ""));
    connect();
  });

  tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, tokenForm.elements.token.value);
    tokenForm.elements.token.value = "";
    tokenForm.hidden = true;
    notice("");
    connect();
  });

  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.setAttribute("aria-pressed", String(paused));
    if (!paused) draw();
    showCount();
  });

  $("clear").addEventListener("click", () => {
    tbody.replaceChildren();
    waiting = [];
    showCount();
  });

  function open(tr) {
    const data = rowEvent.get(tr);
    if (data === undefined) return;
    let pretty = data;
    try {
      pretty = JSON.stringify(JSON.parse(data), null, 2);
    } catch (_) {
      // shown as received
    }
    $("detail-title").textContent = tr.cells[1].textContent || "event";
    $("detail-json").textContent = visible(pretty);
    detail.showModal();
  }

  tbody.addEventListener("click", (e) => open(e.target.closest("tr")));
  tbody.addEventListener("keydown", (e) => {
    if (e.key === "Enter") open(e.target.closest("tr"));
  });
  $("detail-close").addEventListener("click", () => detail.close());
  $("detail-copy").addEventListener("click", () => navigator.clipboard?.writeText($("detail-json").textContent));
  detail.addEventListener("click", (e) => {
    if (e.target === detail) detail.close(); // a click on the backdrop
  });

  // --- start --------------------------------------------------------------

  const initial = new URLSearchParams(location.search);
  for (const name of FILTER_FIELDS) filtersForm.elements[name].value = initial.getAll(name).join(",");
  showCount();
  drawChart();
  setInterval(tick, 1000);
  connect();
})();
