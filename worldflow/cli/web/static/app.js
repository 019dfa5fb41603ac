// worldflow web UI: live refresh. Every value is set with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const ACTIVE = new Set(["pending", "running"]);

function formatDuration(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return Math.round(ms) + "ms";
  const seconds = ms / 1000;
  if (seconds < 60) return seconds.toFixed(2) + "s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + "m " + Math.floor(seconds % 60) + "s";
  return Math.floor(minutes / 60) + "h " + (minutes % 60) + "m";
}

function formatTime(value) {
  return value ? value.slice(0, 23).replace("T", " ") : "-";
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function renderRuns(body, runs, base) {
  const rows = [];
  for (const run of runs) {
    const tr = document.createElement("tr");
    tr.dataset.status = run.status;
    const link = document.createElement("a");
    link.className = "run-link";
    link.href = base + "runs/" + encodeURIComponent(run.run_id);
    link.textContent = run.run_id;
    cell(tr, "").appendChild(link);
    cell(tr, run.workflow_name);
    const badge = document.createElement("span");
    badge.className = "status status-" + run.status;
    badge.textContent = run.status;
    if (run.waiting) {  // a running run says what it waits for
      badge.textContent = run.waiting.label;
      badge.classList.add("substatus");
      badge.dataset.waiting = run.waiting.kind;
      badge.title = run.status + ": " + run.waiting.label +
        (run.waiting.detail ? " " + run.waiting.detail : "");
    }
    cell(tr, "").appendChild(badge);
    cell(tr, formatTime(run.started_at));
    cell(tr, formatDuration(run.duration_ms));
    cell(tr, run.step_counts.completed + "/" + run.step_counts.total);
    const tags = cell(tr, "");
    tags.className = "tags-cell";
    for (const [key, value] of Object.entries(run.tags || {})) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = key + "=" + value;
      tags.append(tag, " ");
    }
    const error = cell(tr, run.error ? run.error.type + ": " + run.error.message : "");
    error.className = "error-cell";
    rows.push(tr);
  }
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    cell(tr, "no runs").colSpan = 8;
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function hasActive(body) {
  return Array.from(body.querySelectorAll("tr[data-status]"))
    .some((tr) => ACTIVE.has(tr.dataset.status));
}

function pollRuns() {
  const body = document.getElementById("runs-body");
  if (!body) return;
  const params = new URLSearchParams(document.body.dataset.query || "");
  params.delete("q");
  const firstPage = !params.get("cursor");
  const indicator = document.getElementById("live-indicator");
  const url = document.body.dataset.api + "?" + params.toString();
  const tick = async () => {
    if (!firstPage && !hasActive(body)) {
      if (indicator) indicator.hidden = true;
      return;
    }
    if (indicator) indicator.hidden = false;
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) return;
      const data = await response.json();
      renderRuns(body, data.runs, document.body.dataset.base);
    } catch (err) {
      // the server went away: try again on the next tick
    }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
  if (indicator) indicator.hidden = !(firstPage || hasActive(body));
}

function setStatus(status) {
  const badge = document.getElementById("run-status");
  if (badge) {
    badge.textContent = status;
    badge.className = "status status-" + status;
  }
  const active = ACTIVE.has(status);
  const cancel = document.getElementById("cancel-run");
  if (cancel) cancel.hidden = !active;
  const retry = document.getElementById("retry-run");
  if (retry) retry.hidden = !(status === "failed" || status === "cancelled");
  const indicator = document.getElementById("live-indicator");
  if (indicator) indicator.hidden = !active;
  if (!active) {
    for (const form of document.querySelectorAll(".hook-form")) form.hidden = true;
    const messages = document.getElementById("send-message");
    if (messages) messages.hidden = true;
    const waiting = document.getElementById("run-waiting");
    if (waiting) waiting.hidden = true;
  }
}

// A live run's page follows its log: the server sends an event-stream message when the
// run's log grows (/api/runs/ID/live), and the page fetches itself again and swaps in
// the parts that changed (the HTML is rendered and escaped by the server; nothing from
// it runs: DOMParser documents execute no script). Forms being typed in are kept.
const LIVE_SECTIONS = ["run-facts", "run-error", "io", "timeline", "steps", "hooks",
  "streams", "events"];
let refreshing = false;
let refreshAgain = false;

async function refreshRun() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    do {
      refreshAgain = false;
      const response = await fetch(window.location.href, { cache: "no-store" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      swapRun(fresh);
    } while (refreshAgain);
  } catch (err) {
    // the server went away: the next change message (or reconnect) tries again
  } finally {
    refreshing = false;
  }
}

function swapRun(fresh) {
  const status = fresh.getElementById("run-status");
  if (status) setStatus(status.textContent);
  const waiting = document.getElementById("run-waiting");
  const freshWaiting = fresh.getElementById("run-waiting");
  if (waiting && freshWaiting) {
    waiting.textContent = freshWaiting.textContent;
    waiting.hidden = freshWaiting.hidden;
  }
  for (const id of LIVE_SECTIONS) {
    const current = document.getElementById(id);
    const replacement = fresh.getElementById(id);
    if (!current || !replacement) continue;
    if (current.contains(document.activeElement) && current.querySelector("form")) {
      continue;  // someone is typing in it: swap it on a later change
    }
    // a form still on the page keeps its node (what was typed, its messages)
    for (const form of replacement.querySelectorAll("form[data-url]")) {
      const kept = Array.from(current.querySelectorAll("form[data-url]"))
        .find((old) => old.dataset.url === form.dataset.url);
      if (kept) form.replaceWith(kept);
    }
    current.replaceWith(document.adoptNode(replacement));
  }
  setUpJsonForms();
}

function followRun() {
  if (document.body.dataset.live !== "true" || !window.EventSource) return;
  let lastSeq = document.body.dataset.lastSeq || "-1";
  let retryMs = 1000;
  const connect = () => {
    const source = new EventSource(document.body.dataset.liveUrl + "?after=" + lastSeq);
    const onChange = (message) => {
      const data = JSON.parse(message.data);
      lastSeq = String(data.seq);
      retryMs = 1000;
      refreshRun();
    };
    source.addEventListener("open", () => { retryMs = 1000; });
    source.addEventListener("change", onChange);
    source.addEventListener("end", (message) => {
      source.close();
      onChange(message);
    });
    source.addEventListener("error", () => {
      // the server closed the stream (it lasts a minute) or went away: reconnect
      // from the last change seen, less and less often while it stays away
      source.close();
      if (ACTIVE.has(document.getElementById("run-status").textContent)) {
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 30000);
      }
    });
  };
  connect();
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
    cache: "no-store",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    throw new Error((data && data.message) || ("the server answered " + response.status));
  }
  return data;
}

function say(element, text, bad) {
  element.textContent = text;
  element.classList.toggle("bad", Boolean(bad));
}

function setUpActions() {
  const message = document.getElementById("action-message");
  const cancel = document.getElementById("cancel-run");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        const data = await post(cancel.dataset.url, {});
        say(message, data.cancelled ? "cancel requested" : "the run had already ended");
      } catch (err) {
        say(message, "cancel failed: " + err.message, true);
      } finally {
        cancel.disabled = false;
      }
    });
  }
  const retry = document.getElementById("retry-run");
  if (retry) {
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        const data = await post(retry.dataset.url, {});
        message.replaceChildren();
        message.classList.remove("bad");
        message.append("retried as ");
        const link = document.createElement("a");
        link.id = "retry-link";
        link.href = document.body.dataset.base + "runs/" + encodeURIComponent(data.run_id);
        link.textContent = data.run_id;
        message.append(link);
      } catch (err) {
        say(message, "retry failed: " + err.message, true);
      } finally {
        retry.disabled = false;
      }
    });
  }
  setUpJsonForms();
}

// JSON typed in a form (a hook payload, a message) is checked as it is typed and
// before sending; the server checks it again and its answer is shown in the same place
function jsonError(text) {
  try {
    JSON.parse(text);
    return null;
  } catch (err) {
    return "not valid JSON: " + err.message;
  }
}

function checkJson(form) {
  const area = form.elements.json;
  const problem = jsonError(area.value);
  say(form.querySelector(".json-error"), problem || "", true);
  area.setAttribute("aria-invalid", problem ? "true" : "false");
  return problem === null;
}

function setUpJsonForms() {
  for (const form of document.querySelectorAll("form.json-form")) {
    if (form.dataset.ready) continue;
    form.dataset.ready = "true";
    const status = form.querySelector(".form-message");
    form.elements.json.addEventListener("input", () => checkJson(form));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      say(status, "");
      if (!checkJson(form)) return;
      const body = { json: form.elements.json.value };
      if (form.elements.topic) body.topic = form.elements.topic.value;
      try {
        await post(form.dataset.url, body);
        say(status, form.classList.contains("hook-form") ? "payload sent" : "message sent");
      } catch (err) {
        say(form.querySelector(".json-error"), "not sent: " + err.message, true);
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "runs") pollRuns();
  if (document.body.dataset.page === "run") {
    setUpActions();
    followRun();
  }
});
