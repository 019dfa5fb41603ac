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

POSTs take and answer JSON and carry the CSRF token (`guard.py`, which also checks the
Host header and the optional auth token).

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

import functools
import json
from typing import TYPE_CHECKING, Any

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from worldflow.cli import shapes
from worldflow.cli.inspect import event_details, format_duration
from worldflow.cli.web.guard import Guard, new_csrf_token
from worldflow.cli.web.timeline import build_timeline, timeline_dict
from worldflow.errors import (
    HookNotFoundError,
    RunFinishedError,
    RunNotFoundError,
    WorldError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from starlette.requests import Request

    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["app"]

RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled", "continued")
MAX_LIMIT = 200
#: chunks of each stream shown on a run's page (the JSON endpoint pages through all)
PAGE_CHUNKS = 200
#: events shown on a run's page
PAGE_EVENTS = 2000
#: the largest JSON body a POST may carry
MAX_BODY = 1_000_000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("worldflow.cli.web", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_templates.filters["duration"] = format_duration
_templates.filters["time"] = lambda v: "-" if v is None else v[:23].replace("T", " ")
_templates.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False)
_templates.filters["chunk_text"] = shapes.chunk_text
_templates.filters["shown_name"] = shapes.shown_name


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _answers_errors(kind: str) -> Callable[..., Any]:
    """Turn HTTPError and world failures into a page (`kind="html"`) or JSON answer."""
    def decorate(handler: Any) -> Any:
        @functools.wraps(handler)
        async def wrapper(self: WebUI, request: Request) -> Response:
            try:
                response: Response = await handler(self, request)
                return response
            except HTTPError as exc:
                error = exc
            except WorldError as exc:
                error = HTTPError(503, f"the world failed: {exc}")
            if kind == "json":
                return JSONResponse({"error": error.status, "message": error.message},
                                    status_code=error.status, headers=SECURITY_HEADERS)
            return self.page(request, "error.html", {"status": error.status,
                                                     "message": error.message}, error.status)
        return wrapper
    return decorate


class WebUI:
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

    async def run_or_404(self, run_id: str) -> RunRecord:
        run = await self.world.get_run(run_id)
        if run is None:
            raise HTTPError(404, f"run not found: {run_id}")
        return run

    async def list_page(self, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        params = _list_params(request)
        try:
            page = await self.world.list_runs(
                status=params["status"], workflow_name=params["workflow"],
                limit=params["limit"], cursor=params["cursor"])
        except ValueError as exc:
            raise HTTPError(400, f"invalid cursor: {exc}") from exc
        runs = [shapes.run_summary(run, await shapes.listed_steps(self.world, run))
                for run in page.items]
        return {"runs": runs, "next_cursor": page.next_cursor}, params

    # -- pages ------------------------------------------------------------------
    @_answers_errors("html")
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

    @_answers_errors("html")
    async def run_page(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        events = await self.world.list_events(run.run_id)
        detail = shapes.run_detail(run, await self.world.list_steps(run.run_id), events)
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
            "hook_urls": {hook["token"]: str(request.url_for(
                "api_resume_hook", run_id=run.run_id, token=hook["token"]))
                for hook in hooks},
        })

    @_answers_errors("html")
    async def schedules_page(self, request: Request) -> Response:
        return self.page(request, "schedules.html", {
            "schedules": await self.schedule_list(),
            "api_url": str(request.url_for("api_schedules"))})

    async def schedule_list(self) -> list[dict[str, Any]]:
        from worldflow.cli.schedules import schedule_dict

        now = self.world.now()
        return [schedule_dict(s, now) for s in await self.world.list_schedules()]

    # -- JSON ---------------------------------------------------------------------
    @_answers_errors("json")
    async def api_runs(self, request: Request) -> Response:
        document, _ = await self.list_page(request)
        return JSONResponse(document, headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_schedules(self, request: Request) -> Response:
        return JSONResponse({"schedules": await self.schedule_list()},
                            headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_run(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        events = await self.world.list_events(run.run_id)
        detail = shapes.run_detail(run, await self.world.list_steps(run.run_id), events)
        detail["timeline"] = timeline_dict(build_timeline(run, events, self.world.now()))
        return JSONResponse(detail, headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_events(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        events = [shapes.event_dict(e) for e in await self.world.list_events(run.run_id)]
        return JSONResponse({"run_id": run.run_id, "events": events}, headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_hooks(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        hooks = [shapes.hook_dict(hook) for hook in await self.world.list_hooks(run.run_id)]
        return JSONResponse({"hooks": hooks}, headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_streams(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        streams = [shapes.stream_dict(*row) for row in await self.world.list_streams(run.run_id)]
        return JSONResponse({"run_id": run.run_id, "streams": streams},
                            headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_stream(self, request: Request) -> Response:
        return await self.stream_chunks(request, request.path_params["name"])

    @_answers_errors("json")
    async def api_stream_by_name(self, request: Request) -> Response:
        name = request.query_params.get("name")
        if name is None:
            raise HTTPError(400, "name the stream: ?name=...")
        return await self.stream_chunks(request, name)

    async def stream_chunks(self, request: Request, name: str) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        if name not in {row[0] for row in await self.world.list_streams(run.run_id)}:
            raise HTTPError(404, f"stream not found: {name}")
        start = _int_param(request, "start", 0, 0, 2**62)
        limit = _int_param(request, "limit", 1000, 1, 1000)
        chunks, closed = await self.world.read_stream(run.run_id, name, start, limit)
        return JSONResponse({"run_id": run.run_id, "name": name, "closed": closed,
                             "chunks": [shapes.chunk_dict(chunk) for chunk in chunks]},
                            headers=SECURITY_HEADERS)


    # -- actions ------------------------------------------------------------------
    @_answers_errors("json")
    async def api_cancel(self, request: Request) -> Response:
        await _json_body(request)
        run = await self.run_or_404(request.path_params["run_id"])
        try:
            cancelled = await self.world.request_cancel(run.run_id)
        except RunNotFoundError as exc:
            raise HTTPError(404, str(exc)) from exc
        return JSONResponse({"run_id": run.run_id, "cancelled": cancelled},
                            headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_retry(self, request: Request) -> Response:
        from worldflow.core.api import retry_run

        await _json_body(request)
        run = await self.run_or_404(request.path_params["run_id"])
        try:
            new = await retry_run(run.run_id, world=self.world)
        except RunFinishedError as exc:
            raise HTTPError(409, str(exc)) from exc
        return JSONResponse({"run_id": new.run_id, "retry_of": run.run_id},
                            headers=SECURITY_HEADERS)

    @_answers_errors("json")
    async def api_resume_hook(self, request: Request) -> Response:
        from worldflow.core.api import resume_hook

        body = await _json_body(request)
        if not isinstance(body, dict) or "payload" not in body:
            raise HTTPError(400, 'the body must be a JSON object {"payload": ...}')
        run = await self.run_or_404(request.path_params["run_id"])
        token = request.path_params["token"]
        hook = await self.world.get_hook(token)
        if hook is None or hook.run_id != run.run_id:
            raise HTTPError(404, f"run {run.run_id} has no hook {token!r}")
        try:
            await resume_hook(token, body["payload"], world=self.world)
        except HookNotFoundError as exc:
            raise HTTPError(404, str(exc)) from exc
        except RunFinishedError as exc:
            raise HTTPError(409, str(exc)) from exc
        except (TypeError, msgspec.ValidationError) as exc:
            raise HTTPError(400, f"payload rejected: {exc}") from exc
        return JSONResponse({"run_id": run.run_id, "token": token}, headers=SECURITY_HEADERS)


async def _json_body(request: Request) -> Any:
    """The POST's JSON body (empty: None); 400 for anything else."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPError(400, "send the body as application/json")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPError(400, f"the body is larger than {MAX_BODY} bytes")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HTTPError(400, f"the body is not valid JSON: {exc}") from exc


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204, headers=SECURITY_HEADERS)


def stream_url(request: Request, run_id: str, name: str) -> str:
    """The URL of a stream's chunks: its name goes in the query, percent-encoded."""
    url = request.url_for("api_stream_by_name", run_id=run_id)
    return str(url.include_query_params(name=name))


def _int_param(request: Request, key: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPError(400, f"{key} must be a whole number, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise HTTPError(400, f"{key} must be between {low} and {high}, got {value}")
    return value


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
    return {"status": status, "workflow": workflow, "cursor": cursor,
            "limit": _int_param(request, "limit", 50, 1, MAX_LIMIT)}


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
        # a browser showing a JSON answer asks for the site's icon: there is none
        Route("/favicon.ico", _no_icon, name="favicon"),
        Mount("/static", StaticFiles(packages=[("worldflow.cli.web", "static")]),
              name="static"),
    ])
    starlette.add_middleware(Guard, csrf_token=csrf, allowed_hosts=allowed_hosts,
                             auth_token=auth_token)
    return starlette
