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
    const error = cell(tr, run.error ? run.error.type + ": " + run.error.message : "");
    error.className = "error-cell";
    rows.push(tr);
  }
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    cell(tr, "no runs").colSpan = 7;
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

function pollRun() {
  if (document.body.dataset.live !== "true") return;
  const seen = document.body.dataset.updated;
  const tick = async () => {
    try {
      const response = await fetch(document.body.dataset.api, { cache: "no-store" });
      if (response.ok) {
        const data = await response.json();
        if (data.updated_at !== seen || !ACTIVE.has(data.status)) {
          window.location.reload();
          return;
        }
      }
    } catch (err) {
      // keep trying
    }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "runs") pollRuns();
  if (document.body.dataset.page === "run") pollRun();
});
