// The TrayProxy inspector page: the live list of requests, their detail, exports.
//
// Everything shown comes from prompts and answers, which are hostile text: it is put in the page
// with textContent (and attribute values) only, never innerHTML. The page's
// Content-Security-Policy allows no inline script either. No build step, no library.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const rows = new Map(); // id -> row JSON
  const elements = new Map(); // id -> <tr>
  let selected = null; // id shown in the detail pane
  let events = null;
  // While the list is read (after a reset), the push stream's events are held and applied
  // after it: the list may be older than they are. A reset drops those held (the list read
  // after it holds what they said) and, if a list is being read, has it read again.
  let reading = false;
  let readAgain = false;
  let held = [];

  const $ = (id) => document.getElementById(id);

  function make(tag, text, className) {
    const element = document.createElement(tag);
    if (text !== undefined && text !== null) element.textContent = String(text);
    if (className) element.className = className;
    return element;
  }

  // Formatting ---------------------------------------------------------------------------

  function ms(value) {
    if (value === null || value === undefined) return "";
    if (value < 1000) return `${Math.round(value)} ms`;
    return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
  }

  function bytes(value) {
    if (value === null || value === undefined) return "";
    if (value < 1024) return `${value} B`;
    if (value < 1024 * 1024) return `${(value / 1024).toFixed(1)} KiB`;
    return `${(value / 1024 / 1024).toFixed(1)} MiB`;
  }

  function clock(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso || "";
    const two = (n) => String(n).padStart(2, "0");
    return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${String(date.getMilliseconds()).padStart(3, "0")}`;
  }

  function tokens(row) {
    if (row.input_tokens === null && row.output_tokens === null) return "";
    const parts = [row.input_tokens ?? "?", row.output_tokens ?? "?"];
    if (row.cached_tokens) parts.push(row.cached_tokens);
    return parts.join(" / ");
  }

  function pretty(value) {
    if (typeof value === "string") return value;
    return JSON.stringify(value, null, 2);
  }

  // A WebSocket that was relayed ends with a note of who closed it: only a close that is not a
  // normal one (1000, 1001 going away, 1005 none given) marks it failed.
  const NORMAL_CLOSES = [1000, 1001, 1005];

  function isFailed(row) {
    if (row.kind === "websocket" && row.status === 101) {
      const code = row.websocket && row.websocket.close_code;
      return Boolean(code) && !NORMAL_CLOSES.includes(code);
    }
    return row.refused || row.outcome !== "" || row.error !== "" || row.status >= 400 || (row.state === "done" && !row.status);
  }

  // What the recording of answers did (row.cache; README "Recorded answers"): a word for the
  // list, a sentence for the detail and the cell's tooltip.
  const CACHE_WORDS = {
    hit: "replayed",
    miss: "recorded",
    record: "recorded",
    "offline-miss": "not recorded",
    bypass: "not recorded",
    unkept: "not recorded",
  };
  const CACHE_SENTENCES = {
    hit: "answered from the recording: the target was not asked",
    miss: "not in the recording yet: sent to the target, and recorded if it ended cleanly",
    record: "sent to the target and recorded (record mode)",
    "offline-miss": "not in the recording, and offline: not sent to the target",
    bypass: "sent to the target and not recorded (Cache-Control: no-store, or a body that cannot be recorded)",
    unkept: "sent to the target to be recorded, but not recorded",
  };

  function cacheWord(row) {
    return row.cache ? CACHE_WORDS[row.cache] || row.cache : "";
  }

  function cacheSentence(row) {
    if (!row.cache) return "";
    const sentence = CACHE_SENTENCES[row.cache] || `cache: ${row.cache}`;
    return row.cache_note ? `${sentence}: ${row.cache_note}` : sentence;
  }

  function targetText(row) {
    const sent = [row.route ? `${row.route} → ` : "", row.target || "", row.attempts.length > 1 ? ` (${row.attempts.length} attempts)` : ""].join("");
    return [sent, cacheWord(row)].filter(Boolean).join(" · ");
  }

  // The list -----------------------------------------------------------------------------

  const COLUMNS = [
    ["time", (row) => clock(row.time)],
    ["method", (row) => row.method],
    ["path", (row) => row.path],
    ["target", targetText],
    ["status", (row) => (row.kind === "websocket" && row.status === 101 ? "101 ws" : row.status || (row.state === "open" ? "…" : ""))],
    ["ttfb", (row) => ms(row.ttfb_ms)],
    ["ttft", (row) => ms(row.ttft_ms)],
    ["duration", (row) => ms(row.duration_ms)],
    ["bytes", (row) => (row.bytes_up || row.bytes_down ? `${bytes(row.bytes_up) || "–"} / ${bytes(row.bytes_down) || "–"}` : "")],
    ["model", (row) => row.model || ""],
    ["tokens", tokens],
    ["rate", (row) => (row.tokens_per_s === null || row.tokens_per_s === undefined ? "" : row.tokens_per_s.toFixed(1))],
    ["outcome", (row) => row.outcome || row.error || ""],
  ];
  const NUMERIC = new Set(["ttfb", "ttft", "duration", "bytes", "tokens", "rate"]);

  function fill(tr, row) {
    tr.dataset.id = row.id;
    tr.dataset.state = row.state;
    tr.dataset.status = row.status;
    tr.classList.toggle("open", row.state === "open");
    tr.classList.toggle("failed", isFailed(row));
    tr.classList.toggle("selected", row.id === selected);
    COLUMNS.forEach(([name, text], index) => {
      let cell = tr.children[index];
      if (!cell) {
        cell = make("td", null, NUMERIC.has(name) ? "num" : "");
        cell.dataset.col = name;
        tr.appendChild(cell);
      }
      cell.textContent = text(row);
    });
    const attempts = row.attempts.join(", ");
    tr.children[3].title = [attempts ? `tried: ${attempts}` : "", cacheSentence(row)].filter(Boolean).join("; ");
    tr.children[2].title = row.path;
    tr.hidden = !matches(row);
  }

  function newRow(row) {
    const tr = make("tr");
    tr.addEventListener("click", () => select(row.id));
    elements.set(row.id, tr);
    addTargetOption(row.target);
    return tr;
  }

  function refreshDetail(row) {
    if (row.id === selected && row.state === "done" && $("detail").dataset.state !== "done") {
      showDetail(row.id);
    }
  }

  function upsert(row) {
    rows.set(row.id, row);
    let tr = elements.get(row.id);
    if (!tr) {
      tr = newRow(row);
      insertInOrder(tr, row.id);
    }
    fill(tr, row);
    refreshDetail(row);
  }

  function insertInOrder(tr, id) {
    // Newest first: ids grow, so a new one almost always goes on top.
    const body = $("row-body");
    let before = body.firstElementChild;
    while (before && Number(before.dataset.id) > id) before = before.nextElementSibling;
    body.insertBefore(tr, before);
  }

  // A row no longer held (cleared, or pushed out by newer ones); the caller counts again.
  function forget(id) {
    const tr = elements.get(id);
    if (tr) tr.remove();
    elements.delete(id);
    rows.delete(id);
    if (selected === id) closeDetail();
  }

  function rebuild(list) {
    // The list comes newest first, the order shown: each row is appended to one fragment and
    // the table takes them all at once. (Put in one by one in their place, each walked the
    // rows before it: 10,000 rows took 20 s.)
    rows.clear();
    elements.clear();
    const fragment = document.createDocumentFragment();
    for (const row of list) {
      rows.set(row.id, row);
      const tr = newRow(row);
      fill(tr, row);
      fragment.appendChild(tr);
    }
    $("row-body").replaceChildren(fragment);
    if (selected !== null && !rows.has(selected)) closeDetail();
    else if (selected !== null) refreshDetail(rows.get(selected));
    counted();
  }

  function counted() {
    let shown = 0;
    for (const tr of elements.values()) if (!tr.hidden) shown += 1;
    $("count").textContent = rows.size === shown ? `${rows.size} requests` : `${shown} of ${rows.size} requests`;
    $("empty").hidden = rows.size > 0;
  }

  // Filters ------------------------------------------------------------------------------

  function addTargetOption(target) {
    if (!target) return;
    const select = $("filter-target");
    for (const option of select.options) if (option.value === target) return;
    select.appendChild(make("option", target)).value = target;
  }

  function matches(row) {
    const target = $("filter-target").value;
    if (target && row.target !== target) return false;
    const status = $("filter-status").value;
    if (status === "errors" && !(row.refused || row.outcome || row.error)) return false;
    if (/^[245]xx$/.test(status) && String(row.status)[0] !== status[0]) return false;
    const text = $("filter-text").value.trim().toLowerCase();
    if (text) {
      const haystack = [row.method, row.path, row.target, row.route, row.model, row.outcome, row.error, String(row.status), cacheWord(row), ...row.attempts]
        .join(" ")
        .toLowerCase();
      if (!haystack.includes(text)) return false;
    }
    return true;
  }

  function refilter() {
    for (const [id, tr] of elements) tr.hidden = !matches(rows.get(id));
    counted();
  }

  // Talking to TrayProxy -----------------------------------------------------------------

  const ENDED = {
    403: "This inspector tab has no access any more (TrayProxy was restarted): open the inspector again from the tray menu, or run trayproxy inspect.",
    404: "The inspector is switched off ([inspector] enabled = false): nothing is listed, and what was listed is gone. The list comes back when it is switched on again.",
    0: "TrayProxy does not answer (stopped?). The list comes back when it runs again.",
  };

  // The list refused (403: another run's tab; 404: the inspector switched off) or TrayProxy
  // gone (0): say so. Refused, the rows shown go too: TrayProxy no longer holds them for
  // this tab, and they are prompts.
  function sessionEnded(status) {
    if (status === 403 || status === 404) {
      held = [];
      rebuild([]);
      closeDetail();
      for (const element of $("detail").querySelectorAll("h2, p, pre, tbody, #detail-messages, #detail-tool-calls, #detail-gaps-plot")) {
        element.replaceChildren();
      }
      $("copy-curl").dataset.curl = "";
    }
    const notice = $("notice-session");
    notice.textContent = ENDED[status] || ENDED[0];
    notice.hidden = false;
  }

  async function getJSON(path) {
    let response;
    try {
      response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    } catch (error) {
      sessionEnded(0);
      throw error;
    }
    if (response.status === 404) {
      const error = new Error(`${path}: no longer held`);
      error.gone = true;
      throw error;
    }
    if (!response.ok) {
      sessionEnded(response.status);
      throw new Error(`${path}: ${response.status}`);
    }
    return response.json();
  }

  function reset() {
    held = [];
    if (reading) readAgain = true;
    else reload().catch(() => {});
  }

  async function reload() {
    reading = true;
    try {
      let listing;
      do {
        readAgain = false;
        listing = await getJSON("api/exchanges");
      } while (readAgain);
      $("notice-bodies-off").hidden = listing.body_capture;
      $("notice-session").hidden = true;
      rebuild(listing.rows);
      for (const change of held) change();
      counted();
    } catch (error) {
      if (error.gone) sessionEnded(404); // the list itself: the inspector is switched off
      throw error;
    } finally {
      reading = false;
      held = [];
    }
  }

  // A change the push stream told: now, or once the list being read is in.
  function whenListed(change) {
    if (reading) {
      held.push(change);
    } else {
      change();
      counted();
    }
  }

  function live(state, text) {
    const badge = $("live");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function listen() {
    events = new EventSource("api/events");
    events.addEventListener("open", () => live("live", "live"));
    events.addEventListener("reset", reset);
    events.addEventListener("row", (event) => {
      const row = JSON.parse(event.data);
      whenListed(() => upsert(row));
    });
    // Rows pushed out of the list (max_rows, the refusals' short list): one still open would
    // otherwise say "open" forever, and a page's flood of refusals would grow the tab.
    events.addEventListener("gone", (event) => {
      const ids = JSON.parse(event.data).ids;
      whenListed(() => ids.forEach(forget));
    });
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) {
        live("closed", "not live");
        // Refused (a new session) or gone: say which, then try again in a while.
        fetch("api/exchanges", { credentials: "same-origin", cache: "no-store" })
          .then((response) => {
            if (!response.ok) sessionEnded(response.status);
          })
          .catch(() => sessionEnded(0));
        setTimeout(listen, 5000);
      } else {
        live("connecting", "reconnecting…");
      }
    });
  }

  // The detail pane ----------------------------------------------------------------------

  function select(id) {
    selected = id;
    for (const [other, tr] of elements) tr.classList.toggle("selected", other === id);
    showDetail(id);
  }

  function closeDetail() {
    selected = null;
    $("detail").hidden = true;
    for (const tr of elements.values()) tr.classList.remove("selected");
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  async function showDetail(id) {
    let detail;
    try {
      detail = await getJSON(`api/exchanges/${id}`);
    } catch (error) {
      if (error.gone) {
        forget(id); // cleared, or pushed out by newer ones
        counted();
      }
      return;
    }
    if (selected !== id) return;
    const pane = $("detail");
    pane.dataset.id = id;
    pane.dataset.state = detail.state;
    pane.hidden = false;
    $("detail-title").textContent = `${detail.method} ${detail.path}`;
    const summary = [`${detail.status || "…"}`, detail.target && `to ${detail.target}`, detail.route && `by ${detail.route}`];
    if (detail.attempts.length) summary.push(`tried: ${detail.attempts.join(", ")}`);
    if (detail.duration_ms !== null) summary.push(`in ${ms(detail.duration_ms)}`);
    if (detail.outcome) summary.push(`(${detail.outcome})`);
    if (detail.cache) summary.push(cacheSentence(detail));
    $("detail-summary").textContent = summary.filter(Boolean).join(" · ");
    $("detail-export-har").href = `export.har?id=${id}`;
    $("detail-export-jsonl").href = `export.jsonl?id=${id}`;
    $("copy-curl").dataset.curl = detail.curl || "";
    $("copy-result").textContent = "";
    $("detail-raw").hidden = true;
    $("detail-raw").textContent = "";

    const states = { off: "Body capture is off: no bodies were kept.", evicted: "The bodies were dropped to make room for newer ones.", cut: "The body was longer than the per-request cap: what is shown is its start." };
    const bodyState = states[detail.body_state];
    $("detail-body-state").textContent = bodyState || "";
    show("detail-body-state", Boolean(bodyState));

    const failedText = detail.error || (detail.status >= 400 && detail.response_body && detail.response_body.text) || (detail.answer && detail.answer.error && pretty(detail.answer.error));
    $("detail-error-text").textContent = failedText || "";
    show("detail-error", Boolean(failedText));

    answer(detail.answer);
    gaps(detail.chunk_gaps_ms || []);
    requestBody(detail.request_body);
    const responseText = detail.response_body ? detail.response_body.text : null;
    $("detail-response-body").textContent = responseText === null || responseText === undefined ? "(not shown: not UTF-8 text, or not kept)" : responseText;
    headers("detail-request-headers", detail.request_headers || []);
    headers("detail-response-headers", detail.response_headers || []);
    websocket(detail.websocket);
  }

  function answer(found) {
    show("detail-answer", Boolean(found));
    if (!found) return;
    $("detail-answer-api").textContent = `${found.api}${found.streamed ? ", streamed" : ""}`;
    $("detail-answer-text").textContent = found.text || "";
    $("detail-thinking").textContent = found.thinking || "";
    show("detail-thinking-box", Boolean(found.thinking));
    const calls = $("detail-tool-calls");
    calls.replaceChildren();
    for (const call of found.tool_calls || []) {
      const box = make("div", null, "tool-call");
      box.dataset.name = call.name || "";
      box.appendChild(make("h4", `Tool call: ${call.name || "?"}`));
      if (call.id) box.appendChild(make("small", call.id));
      let args = call.arguments;
      try {
        args = JSON.stringify(JSON.parse(call.arguments), null, 2);
      } catch (error) {
        // Not JSON (cut, or the model wrote something else): shown as it came.
      }
      box.appendChild(make("pre", args, "arguments"));
      calls.appendChild(box);
    }
    $("detail-finish").textContent = found.finish_reason ? `Finished: ${found.finish_reason}` : "";
    $("detail-usage").textContent = found.usage ? pretty(found.usage) : "—";
  }

  function gaps(values) {
    show("detail-gaps", values.length > 0);
    const plot = $("detail-gaps-plot");
    plot.replaceChildren();
    if (!values.length) return;
    const width = 600;
    const height = 80;
    const top = Math.max(...values, 1);
    const step = width / values.length;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "Gaps between chunks");
    values.forEach((value, index) => {
      const bar = document.createElementNS(SVG, "rect");
      const barHeight = Math.max(1, (value / top) * (height - 2));
      bar.setAttribute("x", String(index * step));
      bar.setAttribute("y", String(height - barHeight));
      bar.setAttribute("width", String(Math.max(step - (step > 3 ? 1 : 0), 0.5)));
      bar.setAttribute("height", String(barHeight));
      const title = document.createElementNS(SVG, "title");
      title.textContent = `chunk ${index + 2}: ${ms(value)} after the one before`;
      bar.appendChild(title);
      svg.appendChild(bar);
    });
    plot.appendChild(svg);
    const sorted = [...values].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    $("detail-gaps-summary").textContent = `${values.length + 1} chunks · median ${ms(median)} · longest ${ms(top)}`;
  }

  function contentText(content) {
    if (content === null || content === undefined) return "";
    if (typeof content === "string") return content;
    if (Array.isArray(content)) return content.map(contentText).join("\n");
    if (typeof content === "object") {
      if (typeof content.text === "string") return content.text;
      if (content.type === "tool_use") return `[tool call ${content.name}] ${JSON.stringify(content.input)}`;
      if (content.type === "tool_result") return `[tool result] ${contentText(content.content)}`;
      if (content.type === "image_url" || content.type === "image" || content.type === "input_image") return "[image]";
      return pretty(content);
    }
    return String(content);
  }

  function message(list, role, content, extra) {
    const box = make("div", null, `message role-${String(role).replace(/[^a-z_-]/gi, "")}`);
    box.dataset.role = role;
    box.appendChild(make("span", role, "role"));
    box.appendChild(make("pre", content));
    if (extra) box.appendChild(make("pre", extra, "extra"));
    list.appendChild(box);
  }

  function requestBody(body) {
    const list = $("detail-messages");
    list.replaceChildren();
    const text = body ? body.text : null;
    $("detail-request-body").textContent = body && body.json !== null && body.json !== undefined ? pretty(body.json) : text || "(none kept)";
    const json = body && body.json;
    if (!json || typeof json !== "object") return;
    if (json.system) message(list, "system", contentText(json.system));
    if (typeof json.instructions === "string") message(list, "instructions", json.instructions);
    const messages = Array.isArray(json.messages) ? json.messages : Array.isArray(json.input) ? json.input : null;
    if (messages) {
      for (const item of messages) {
        if (!item || typeof item !== "object") continue;
        const calls = Array.isArray(item.tool_calls)
          ? item.tool_calls.map((call) => `[tool call ${call.function ? call.function.name : "?"}] ${call.function ? call.function.arguments : ""}`).join("\n")
          : "";
        const role = item.role || item.type || "?";
        message(list, role, contentText(item.content ?? item.output ?? item.arguments), calls);
      }
    } else if (typeof json.input === "string") {
      message(list, "user", json.input);
    } else if (typeof json.prompt === "string") {
      message(list, "prompt", json.prompt);
    }
    if (Array.isArray(json.tools) && json.tools.length) {
      const names = json.tools.map((tool) => (tool.function ? tool.function.name : tool.name) || tool.type || "?");
      list.appendChild(make("p", `Tools offered: ${names.join(", ")}`, "tools"));
    }
  }

  function headers(id, pairs) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    for (const [name, value] of pairs) {
      const tr = make("tr");
      tr.appendChild(make("th", name));
      tr.appendChild(make("td", value));
      body.appendChild(tr);
    }
  }

  function websocket(ws) {
    show("detail-websocket", Boolean(ws));
    if (!ws) return;
    const closed = ws.close_code === null ? "" : ` · closed ${ws.close_code} by ${ws.closed_by || "?"}`;
    $("detail-websocket-text").textContent = `${ws.messages_up} messages up (${bytes(ws.bytes_up)}) · ${ws.messages_down} down (${bytes(ws.bytes_down)})${closed}`;
  }

  async function copyCurl() {
    const text = $("copy-curl").dataset.curl || "";
    try {
      await navigator.clipboard.writeText(text);
      $("copy-result").textContent = "Copied.";
    } catch (error) {
      $("detail-raw").hidden = false;
      $("detail-raw").textContent = text;
      $("copy-result").textContent = "The browser refused the clipboard: the command is shown below.";
    }
  }

  async function showRaw() {
    if (selected === null) return;
    const response = await fetch(`api/exchanges/${selected}/raw`, { credentials: "same-origin", cache: "no-store" });
    const raw = $("detail-raw");
    raw.hidden = false;
    raw.textContent = response.ok ? await response.text() : `(${response.status})`;
  }

  async function clearAll() {
    const response = await fetch("api/clear", { method: "POST", credentials: "same-origin" });
    if (!response.ok) sessionEnded(response.status);
    closeDetail();
  }

  function start() {
    $("filter-target").addEventListener("change", refilter);
    $("filter-status").addEventListener("change", refilter);
    $("filter-text").addEventListener("input", refilter);
    $("clear").addEventListener("click", clearAll);
    $("detail-close").addEventListener("click", closeDetail);
    $("copy-curl").addEventListener("click", copyCurl);
    $("show-raw").addEventListener("click", showRaw);
    counted();
    listen(); // its first event is "reset": the list is read then
  }

  start();
})();
