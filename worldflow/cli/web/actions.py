"""The web UI's actions: POSTs that cancel, retry, resume a hook or send a message,
and the live event stream of a run's page (`live.py`). Each POST takes and answers JSON
and carries the CSRF token (checked by `guard.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from starlette.responses import JSONResponse, StreamingResponse

from worldflow.cli.web.http import (
    SECURITY_HEADERS,
    HTTPError,
    answers_errors,
    int_param,
    json_body,
    value_of,
)
from worldflow.cli.web.live import run_changes
from worldflow.errors import HookNotFoundError, RunFinishedError, RunNotFoundError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["RunActions"]


class RunActions:
    """The action routes of `WebUI` (a base class, so both share the world)."""

    world: World
    #: set when the server stops: live streams end at their next poll
    stopping: bool = False

    async def run_or_404(self, run_id: str) -> RunRecord:
        run = await self.world.get_run(run_id)
        if run is None:
            raise HTTPError(404, f"run not found: {run_id}")
        return run

    @answers_errors("json")
    async def api_cancel(self, request: Request) -> Response:
        await json_body(request)
        run = await self.run_or_404(request.path_params["run_id"])
        try:
            cancelled = await self.world.request_cancel(run.run_id)
        except RunNotFoundError as exc:
            raise HTTPError(404, str(exc)) from exc
        return JSONResponse({"run_id": run.run_id, "cancelled": cancelled},
                            headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_retry(self, request: Request) -> Response:
        from worldflow.core.api import retry_run

        await json_body(request)
        run = await self.run_or_404(request.path_params["run_id"])
        try:
            new = await retry_run(run.run_id, world=self.world)
        except RunFinishedError as exc:
            raise HTTPError(409, str(exc)) from exc
        return JSONResponse({"run_id": new.run_id, "retry_of": run.run_id},
                            headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_resume_hook(self, request: Request) -> Response:
        from worldflow.core.api import resume_hook

        body = await json_body(request)
        payload = value_of(body, "payload")
        run = await self.run_or_404(request.path_params["run_id"])
        token = request.path_params["token"]
        hook = await self.world.get_hook(token)
        if hook is None or hook.run_id != run.run_id:
            raise HTTPError(404, f"run {run.run_id} has no hook {token!r}")
        try:
            await resume_hook(token, payload, world=self.world)
        except HookNotFoundError as exc:
            raise HTTPError(404, str(exc)) from exc
        except RunFinishedError as exc:
            raise HTTPError(409, str(exc)) from exc
        except (TypeError, msgspec.ValidationError) as exc:
            raise HTTPError(400, f"payload rejected: {exc}") from exc
        return JSONResponse({"run_id": run.run_id, "token": token}, headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_send_message(self, request: Request) -> Response:
        from worldflow.core.messages import send

        body = await json_body(request)
        message = value_of(body, "message")
        topic = body.get("topic", "default")
        if not isinstance(topic, str) or not topic.strip():
            raise HTTPError(400, "topic must be a non-empty string")
        run = await self.run_or_404(request.path_params["run_id"])
        try:
            await send(run.run_id, message, topic=topic, world=self.world)
        except RunNotFoundError as exc:
            raise HTTPError(404, str(exc)) from exc
        except RunFinishedError as exc:
            raise HTTPError(409, str(exc)) from exc
        except (TypeError, ValueError) as exc:
            raise HTTPError(400, f"message rejected: {exc}") from exc
        return JSONResponse({"run_id": run.run_id, "topic": topic}, headers=SECURITY_HEADERS)

    @answers_errors("json")
    async def api_live(self, request: Request) -> Response:
        run = await self.run_or_404(request.path_params["run_id"])
        after = int_param(request, "after", -1, -1, 2**62)

        async def gone() -> bool:
            return self.stopping or await request.is_disconnected()

        return StreamingResponse(
            run_changes(self.world, run.run_id, after, gone),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store",
                     "X-Accel-Buffering": "no"})
