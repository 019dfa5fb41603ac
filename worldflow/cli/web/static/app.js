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
  }
}

// the run's status and step counts change in place; the rest of the page (timeline,
// log) says it is stale and offers a reload, never reloading by itself
let pollDelay = POLL_MS;

function pollRun() {
  if (document.body.dataset.live !== "true") return;
  const seen = document.body.dataset.updated;
  const tick = async () => {
    try {
      const response = await fetch(document.body.dataset.api, { cache: "no-store" });
      if (response.ok) {
        const data = await response.json();
        setStatus(data.status);
        const steps = document.getElementById("run-steps");
        if (steps) {
          const counts = data.step_counts;
          steps.textContent = counts.completed + "/" + counts.total + " completed" +
            (counts.failed ? ", " + counts.failed + " failed" : "");
        }
        if (data.updated_at !== seen) document.getElementById("reload-link").hidden = false;
        if (!ACTIVE.has(data.status)) return;
      }
    } catch (err) {
      // keep trying
    }
    setTimeout(tick, pollDelay);
  };
  setTimeout(tick, pollDelay);
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
        pollDelay = 300;  // show the outcome soon
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
  for (const form of document.querySelectorAll(".hook-form")) {
    const status = form.querySelector(".hook-message");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let payload;
      try {
        payload = JSON.parse(form.elements.payload.value);
      } catch (err) {
        say(status, "not valid JSON: " + err.message, true);
        return;
      }
      try {
        await post(form.dataset.url, { payload: payload });
        say(status, "payload sent");
        pollDelay = 300;
      } catch (err) {
        say(status, "not sent: " + err.message, true);
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "runs") pollRuns();
  if (document.body.dataset.page === "run") {
    setUpActions();
    pollRun();
  }
});
