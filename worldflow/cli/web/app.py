"""The web UI's routes: HTML pages rendered on the server, JSON for live refresh.

    GET /                                  runs list (?status, ?workflow, ?q, ?cursor, ?limit)
    GET /runs/{run_id}                     run detail: timeline, steps, hooks, streams, log
    GET /api/runs                          {"runs": [RunSummary], "next_cursor"}
    GET /api/runs/{run_id}                 RunDetail (+ "timeline")
    GET /api/runs/{run_id}/events          {"run_id", "events": [Event]}
    GET /api/runs/{run_id}/hooks           {"hooks": [Hook]}
    GET /api/runs/{run_id}/streams         {"run_id", "streams": [...]}
    GET /api/runs/{run_id}/stream?name=N   {"run_id", "name", "closed", "chunks"} (?start, ?limit)
    GET /api/runs/{run_id}/streams/{name}  the same, the name percent-encoded in the path
    GET /favicon.ico                       204 (there is no icon)
    POST /api/runs/{run_id}/cancel         {"run_id", "cancelled"}: ask the run to stop
    POST /api/runs/{run_id}/retry          {"run_id"}: the new run (a failed or cancelled run)
    POST /api/runs/{run_id}/hooks/{token}  {"run_id", "token"}: body {"payload": JSON}
                                           or {"json": "JSON text"}
    POST /api/runs/{run_id}/messages       {"run_id", "topic"}: body {"topic": str,
                                           "message": JSON} or {"topic", "json": text}
    GET /api/runs/{run_id}/live?after=SEQ  server-sent events: the run's new events
                                           (`live.py`); the run page refreshes on them

The POSTs and the live stream are in `actions.py` (and `live.py`); errors, bodies and
parameters in `http.py`. POSTs take and answer JSON and carry the CSRF token
(`guard.py`, which also checks the Host header and the optional auth token).

A stream name may hold any printable text. The run page links to the `?name=` form,
which works for every name: in a path, a name of ``.`` or ``..`` would be taken as a
dot-segment (even encoded, browsers remove ``%2E``), and ``/`` must be encoded as
``%2F``; the path form accepts the rest.

Shapes as in `worldflow.cli.inspect`. Unknown runs answer 404, bad query parameters 400
(never 500), a failing world 503. Everything shown is escaped (Jinja autoescape on the
server, `textContent` in the script) and a Content-Security-Policy forbids inline
scripts, so a run whose data holds ``<script>`` shows it as text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from worldflow.cli import shapes
from worldflow.cli.render import event_details, format_duration
from worldflow.cli.tracebacks import user_frames
from worldflow.cli.waiting import run_waiting, waiting_for, waiting_text
from worldflow.cli.web.actions import RunActions
from worldflow.cli.web.guard import Guard, new_csrf_token
from worldflow.cli.web.http import SECURITY_HEADERS, HTTPError, answers_errors, int_param
from worldflow.cli.web.timeline import build_timeline, timeline_dict
from worldflow.core.listing import parse_tag

if TYPE_CHECKING:
    from collections.abc import Collection

    from starlette.requests import Request

    from worldflow.core.world import World

__all__ = ["app"]

RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled", "continued")
MAX_LIMIT = 200
#: chunks of each stream shown on a run's page (the JSON endpoint pages through all)
PAGE_CHUNKS = 200
#: events shown on a run's page
PAGE_EVENTS = 2000
_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("worldflow.cli.web", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_templates.filters["duration"] = format_duration
_templates.filters["time"] = lambda v: "-" if v is None else v[:23].replace("T", " ")
_templates.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False)
_templates.filters["chunk_text"] = shapes.chunk_text
_templates.filters["shown_name"] = shapes.shown_name
_templates.filters["user_frames"] = user_frames
_templates.filters["waiting_text"] = waiting_text


class WebUI(RunActions):
    def __init__(self, world: World, csrf_token: str) -> None:
        self.world = world
        self.csrf_token = csrf_token

    def page(self, request: Request, template: str, context: dict[str, Any],
             status: int = 200) -> HTMLResponse:
        base = str(request.url_for("runs"))
        html = _templates.get_template(template).render(
            request=request, base=base, static=str(request.url_for("static", path="")),
            csrf_token=self.csrf_token, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def list_page(self, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        params = _list_params(request)
        try:
            page = await self.world.list_runs(
                status=params["status"], workflow_name=params["workflow"],
                limit=params["limit"], cursor=params["cursor"],
                tags=params["tags"] or None)
        except ValueError as exc:
            raise HTTPError(400, f"invalid cursor: {exc}") from exc
        # step counts come with the run rows (no list_steps per run); only a running
        # run's log is read, for its sub-status
        runs = [{**shapes.run_summary(run), "waiting": await run_waiting(self.world, run)}
                for run in page.items]
        return {"runs": runs, "next_cursor": page.next_cursor}, params

    # -- pages ------------------------------------------------------------------
    @answers_errors("html")
    async def runs_page(self, request: Request) -> Response:
        search = request.query_params.get("q", "").strip()
        notice = None
        if search:
            if await self.world.get_run(search) is not None:
                return RedirectResponse(request.url_for("run", run_id=search), status_code=303)
            notice = f"no run with id {search}"
        document, params = await self.list_page(request)
        next_url = None
        if document["next_cursor"] is not None:
            next_url = str(request.url.remove_query_params("q").include_query_params(
                cursor=document["next_cursor"]))
        first_url = (str(request.url.remove_query_params(["cursor", "q"]))
                     if params["cursor"] else None)
        return self.page(request, "runs.html", {
            **document, "params": params, "statuses": RUN_STATUSES, "search": search,
            "notice": notice, "next_url": next_url, "first_url": first_url,
            "api_url": str(request.url_for("api_runs")),
        }, 404 if notice else 200)

    @answers_errors("html")
    async def run_page(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        events = await self.world.list_events(run.run_id)
        detail = shapes.run_detail(run, await self.world.list_steps(run.run_id), events)
        detail["waiting"] = waiting_for(run, events)
        counts = shapes.hook_payload_counts(events)
        hooks = [{**shapes.hook_dict(hook), **counts.get(hook.token, shapes.NO_PAYLOADS)}
                 for hook in await self.world.list_hooks(run.run_id)]
        streams = []
        for name, count, closed in await self.world.list_streams(run.run_id):
            chunks, _ = await self.world.read_stream(run.run_id, name, 0, PAGE_CHUNKS)
            streams.append({**shapes.stream_dict(name, count, closed),
                            "shown": [shapes.chunk_dict(chunk) for chunk in chunks],
                            "url": stream_url(request, run.run_id, name)})
        event_rows = [shapes.event_dict(record) for record in events[:PAGE_EVENTS]]
        for row in event_rows:
            row["details"] = event_details(row)
        return self.page(request, "run.html", {
            "run": detail, "timeline": build_timeline(run, events, self.world.now()),
            "hooks": hooks, "streams": streams, "events": event_rows,
            "events_total": len(events), "live": not run.status.is_terminal,
            "api_url": str(request.url_for("api_run", run_id=run.run_id)),
            "cancel_url": str(request.url_for("api_cancel", run_id=run.run_id)),
            "retry_url": str(request.url_for("api_retry", run_id=run.run_id)),
            "retryable": run.status.value in ("failed", "cancelled"),
            "failed_step": _failed_step(detail),
            "last_seq": events[-1].seq if events else -1,
            "live_url": str(request.url_for("api_live", run_id=run.run_id)),
            "message_url": str(request.url_for("api_send_message", run_id=run.run_id)),
            "hook_urls": {hook["token"]: str(request.url_for(
                "api_resume_hook", run_id=run.run_id, token=hook["token"]))
                for hook in hooks},
        })

    @answers_errors("html")
    async def schedules_page(self, request: Request) -> Response:
        return self.page(request, "schedules.html", {
            "schedules": await self.schedule_list(),
            "api_url": str(request.url_for("api_schedules"))})

    async def schedule_list(self) -> list[dict[str, Any]]:
        from worldflow.cli.schedules import schedule_dict

        now = self.world.now()
        return [schedule_dict(s, now) for s in await self.world.list_schedules()]

    # -- JSON ---------------------------------------------------------------------
    @answers_errors("json")
    async def api_runs(self, request: Request) -> Response:
        document, _ = await self.list_page(request)
        return JSONResponse(document, headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_schedules(self, request: Request) -> Response:
        return JSONResponse({"schedules": await self.schedule_list()},
                            headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_run(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        events = await self.world.list_events(run.run_id)
        detail = shapes.run_detail(run, await self.world.list_steps(run.run_id), events)
        detail["waiting"] = waiting_for(run, events)
        detail["timeline"] = timeline_dict(build_timeline(run, events, self.world.now()))
        return JSONResponse(detail, headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_events(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        events = [shapes.event_dict(e) for e in await self.world.list_events(run.run_id)]
        return JSONResponse({"run_id": run.run_id, "events": events}, headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_hooks(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        hooks = [shapes.hook_dict(hook) for hook in await self.world.list_hooks(run.run_id)]
        return JSONResponse({"hooks": hooks}, headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_streams(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        streams = [shapes.stream_dict(*row) for row in await self.world.list_streams(run.run_id)]
        return JSONResponse({"run_id": run.run_id, "streams": streams},
                            headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_stream(self, request: Request) -> Response:
        return await self.stream_chunks(request, request.path_params["name"])

    @answers_errors("json")
    async def api_stream_by_name(self, request: Request) -> Response:
        name = request.query_params.get("name")
        if name is None:
            raise HTTPError(400, "name the stream: ?name=...")
        return await self.stream_chunks(request, name)

    async def stream_chunks(self, request: Request, name: str) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        if name not in {row[0] for row in await self.world.list_streams(run.run_id)}:
            raise HTTPError(404, f"stream not found: {name}")
        start = int_param(request, "start", 0, 0, 2**62)
        limit = int_param(request, "limit", 1000, 1, 1000)
        chunks, closed = await self.world.read_stream(run.run_id, name, start, limit)
        return JSONResponse({"run_id": run.run_id, "name": name, "closed": closed,
                             "chunks": [shapes.chunk_dict(chunk) for chunk in chunks]},
                            headers=SECURITY_HEADERS)


def _failed_step(detail: dict[str, Any]) -> dict[str, Any] | None:
    """The step whose failure failed the run (the last failed step), for the top of
    a failed run's page."""
    if detail["status"] != "failed":
        return None
    failed = [step for step in detail["steps"] if step["status"] == "failed"]
    message = (detail["error"] or {}).get("message", "")
    named = [step for step in failed if f"'{step['step_name']}'" in message]
    chosen: dict[str, Any] | None = (named or failed or [None])[-1]
    return chosen


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204, headers=SECURITY_HEADERS)


def stream_url(request: Request, run_id: str, name: str) -> str:
    """The URL of a stream's chunks: its name goes in the query, percent-encoded."""
    url = request.url_for("api_stream_by_name", run_id=run_id)
    return str(url.include_query_params(name=name))


def _list_params(request: Request) -> dict[str, Any]:
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        raise HTTPError(400, f"status must be one of {', '.join(RUN_STATUSES)}, "
                             f"got {status[:40]!r}")
    workflow = query.get("workflow", "").strip() or None
    if workflow is not None and len(workflow) > 500:
        raise HTTPError(400, "workflow name too long")
    if len(query.get("q", "")) > 500:
        raise HTTPError(400, "a run id has at most 500 characters")
    cursor = query.get("cursor") or None
    if cursor is not None and len(cursor) > 2000:
        raise HTTPError(400, "invalid cursor: too long")
    tag_texts = [text.strip() for text in query.getlist("tag") if text.strip()]
    tags: dict[str, str] = {}
    for text in tag_texts:
        try:
            key, value = parse_tag(text)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        tags[key] = value
    return {"status": status, "workflow": workflow, "cursor": cursor,
            "limit": int_param(request, "limit", 50, 1, MAX_LIMIT),
            "tags": tags, "tag_texts": tag_texts}


def app(world: World, *, allowed_hosts: Collection[str] | None = None,
        auth_token: str | None = None, csrf_token: str | None = None) -> Starlette:
    """The web UI for `world` as an ASGI app (mount it anywhere, e.g. under ``/runs-ui``).

    The caller owns the world: open it (``await world.open()``, storage only) or start
    it before serving requests, and close it afterwards. `allowed_hosts` (the values
    the ``Host`` header may take; None: any) and `auth_token` (None: no token needed)
    are checked on every request; POSTs need `csrf_token` (default: a new random one,
    shown in every page).
    """
    csrf = csrf_token or new_csrf_token()
    ui = WebUI(world, csrf)
    starlette = Starlette(routes=[
        Route("/", ui.runs_page, name="runs"),
        Route("/runs/{run_id}", ui.run_page, name="run"),
        Route("/api/runs", ui.api_runs, name="api_runs"),
        Route("/api/runs/{run_id}", ui.api_run, name="api_run"),
        Route("/api/runs/{run_id}/events", ui.api_events, name="api_events"),
        Route("/api/runs/{run_id}/hooks", ui.api_hooks, name="api_hooks"),
        Route("/api/runs/{run_id}/streams", ui.api_streams, name="api_streams"),
        Route("/api/runs/{run_id}/stream", ui.api_stream_by_name, name="api_stream_by_name"),
        Route("/api/runs/{run_id}/streams/{name:path}", ui.api_stream, name="api_stream"),
        Route("/api/runs/{run_id}/cancel", ui.api_cancel, methods=["POST"], name="api_cancel"),
        Route("/api/runs/{run_id}/retry", ui.api_retry, methods=["POST"], name="api_retry"),
        Route("/api/runs/{run_id}/hooks/{token}", ui.api_resume_hook, methods=["POST"],
              name="api_resume_hook"),
        Route("/schedules", ui.schedules_page, name="schedules"),
        Route("/api/schedules", ui.api_schedules, name="api_schedules"),
        Route("/api/runs/{run_id}/messages", ui.api_send_message, methods=["POST"],
              name="api_send_message"),
        Route("/api/runs/{run_id}/live", ui.api_live, name="api_live"),
        # a browser showing a JSON answer asks for the site's icon: there is none
        Route("/favicon.ico", _no_icon, name="favicon"),
        Mount("/static", StaticFiles(packages=[("worldflow.cli.web", "static")]),
              name="static"),
    ])
    starlette.add_middleware(Guard, csrf_token=csrf, allowed_hosts=allowed_hosts,
                             auth_token=auth_token)
    starlette.state.web_ui = ui  # the server tells it when it stops (`ui.stopping`)
    return starlette
