"""Every route of the web UI through httpx.ASGITransport, on the memory and SQLite worlds."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.cli.flows import (
    FAILED_RUN,
    HOOK_RUN,
    HOOK_TOKEN,
    OK_RUN,
    SECOND_HOOK_TOKEN,
    XSS,
)
from worldflow.cli.web import app
from worldflow.errors import WorldError


def _table_run_ids(html: str) -> list[str]:
    return re.findall(r'class="run-link" href="[^"]*">([^<]*)</a>', html)


async def test_runs_page_lists_runs_with_status_and_links(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert _table_run_ids(response.text) == [HOOK_RUN, FAILED_RUN, OK_RUN]
    assert f'href="http://ui.test/runs/{FAILED_RUN}"' in response.text
    assert 'class="status status-failed">failed<' in response.text
    assert "1/2" in response.text  # steps done/total of the failed run


async def test_runs_page_filters_by_status_and_workflow(client: httpx.AsyncClient) -> None:
    failed = await client.get("/", params={"status": "failed"})
    assert _table_run_ids(failed.text) == [FAILED_RUN]
    assert '<option value="failed" selected>' in failed.text
    report = await client.get("/", params={"workflow": "cli_report"})
    assert _table_run_ids(report.text) == [OK_RUN]
    none = await client.get("/", params={"workflow": "nope", "status": "running"})
    assert _table_run_ids(none.text) == [] and "no runs" in none.text


async def test_search_by_id_goes_to_the_run_or_says_none(client: httpx.AsyncClient) -> None:
    found = await client.get("/", params={"q": f"  {OK_RUN} "})
    assert found.status_code == 303
    assert found.headers["location"] == f"http://ui.test/runs/{OK_RUN}"
    missing = await client.get("/", params={"q": "<b>nope</b>"})
    assert missing.status_code == 404
    assert "no run with id &lt;b&gt;nope&lt;/b&gt;" in missing.text


async def test_pages_follow_the_cursor_without_duplicates(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    url: str | None = "/?limit=1"
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200
        seen += _table_run_ids(response.text)
        match = re.search(r'id="next-page" href="([^"]*)"', response.text)
        url = match.group(1).replace("&amp;", "&") if match else None
        assert len(seen) <= 3
    assert seen == [HOOK_RUN, FAILED_RUN, OK_RUN]
    api: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/runs", params=params)).json()
        api += [run["run_id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert api == seen


async def test_failed_run_page_shows_error_stack_retries_and_timeline(
        client: httpx.AsyncClient) -> None:
    response = await client.get(f"/runs/{FAILED_RUN}")
    assert response.status_code == 200
    html = response.text
    assert "StepFailedError: step &#39;cli_reserve&#39; failed after 3 attempt(s)" in html
    assert "inventory service refused sku &lt;b&gt;42&lt;/b&gt;" in html
    assert "<b>42</b>" not in html
    assert "raise ValueError" in html  # the step's stack
    assert '<td class="attempts">3</td>' in html
    assert '<td class="retries">2 retries</td>' in html
    assert html.count("<li>attempt ") == 2 and "retried after" in html
    assert html.count('class="tl-seg seg-attempt') == 4  # 1 + 3 attempts
    assert html.count('class="tl-seg seg-retry-wait') == 2
    assert 'class="tl-seg seg-attempt seg-failed"' in html
    assert html.count("<tr class=\"event ") == 11


async def test_completed_run_page_escapes_script_in_output(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/runs/{OK_RUN}")
    assert response.status_code == 200
    assert XSS not in response.text
    assert "&lt;script&gt;window.__xss = 1;" in response.text
    assert "weekly &lt;report&gt; [bold red]not markup[/]" in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert re.search(r"<script(?! src=)", response.text) is None  # no inline scripts at all
    assert response.text.count('class="tl-row tl-step"') == 2  # parallel steps: two rows
    assert response.text.count('class="tl-row tl-sleep"') == 1
    assert "raw bytes" in response.text and "{&#34;fetched&#34;:2}" in response.text


async def test_hook_run_page_shows_tokens_state_and_payloads(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/runs/{HOOK_RUN}")
    html = response.text
    assert response.status_code == 200
    assert f"<code>{HOOK_TOKEN}</code>" in html and f"<code>{SECOND_HOOK_TOKEN}</code>" in html
    assert html.count('class="status status-active">active<') == 2
    assert html.count('class="tl-row tl-hook"') == 2
    assert html.count('class="tl-mark"') == 1  # the one payload received
    assert 'data-live="true"' in html
    assert "&lt;i&gt;ann&lt;/i&gt;" in html


async def test_json_endpoints(client: httpx.AsyncClient) -> None:
    runs = (await client.get("/api/runs")).json()
    assert [run["run_id"] for run in runs["runs"]] == [HOOK_RUN, FAILED_RUN, OK_RUN]
    detail = (await client.get(f"/api/runs/{FAILED_RUN}")).json()
    assert detail["steps"][1]["attempts"] == 3
    assert len(detail["steps"][1]["retries"]) == 2
    reserve_row = next(row for row in detail["timeline"]["rows"] if row["key"] == "2")
    assert [(s["kind"], s["status"]) for s in reserve_row["segments"]] == [
        ("attempt", "retried"), ("retry-wait", "waiting"), ("attempt", "retried"),
        ("retry-wait", "waiting"), ("attempt", "failed")]
    events = (await client.get(f"/api/runs/{FAILED_RUN}/events")).json()
    assert len(events["events"]) == 11
    hooks = (await client.get(f"/api/runs/{HOOK_RUN}/hooks")).json()
    assert {hook["token"] for hook in hooks["hooks"]} == {HOOK_TOKEN, SECOND_HOOK_TOKEN}
    streams = (await client.get(f"/api/runs/{OK_RUN}/streams")).json()
    assert streams["streams"] == [{"name": "default", "chunks": 4, "closed": True}]
    page = (await client.get(f"/api/runs/{OK_RUN}/streams/default",
                             params={"start": 2, "limit": 1})).json()
    assert [chunk["index"] for chunk in page["chunks"]] == [2]
    assert page["closed"] is True


@pytest.mark.parametrize("path", [
    "/runs/nope", "/api/runs/nope", "/api/runs/nope/events", "/api/runs/nope/hooks",
    "/api/runs/nope/streams", "/api/runs/nope/streams/default",
    f"/api/runs/{OK_RUN}/streams/nope", "/no/such/page",
])
async def test_unknown_things_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    if path.startswith("/api/"):
        assert response.json()["error"] == 404


async def test_404_page_escapes_the_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/runs/<img src=x onerror=alert(1)>")
    assert response.status_code == 404
    assert "<img" not in response.text
    assert "run not found: &lt;img src=x onerror=alert(1)&gt;" in response.text


BAD_QUERIES = [
    {"limit": "abc"}, {"limit": "0"}, {"limit": "-1"}, {"limit": "1e3"}, {"limit": "201"},
    {"limit": "9" * 40}, {"status": "bogus"}, {"status": "<script>"}, {"cursor": "garbage"},
    {"cursor": "\x00"}, {"cursor": "x" * 5000}, {"cursor": "WyJ4Il0"},
    {"workflow": "w" * 1000}, {"q": "q" * 600},
]


@pytest.mark.parametrize("query", BAD_QUERIES)
@pytest.mark.parametrize("path", ["/", "/api/runs"])
async def test_bad_query_parameters_are_400_not_500(client: httpx.AsyncClient, path: str,
                                                    query: dict[str, str]) -> None:
    response = await client.get(path, params=query)
    assert response.status_code == 400, response.text
    if path == "/":  # JSON answers carry the value as data (application/json, nosniff)
        assert "<script>" not in response.text


@pytest.mark.parametrize("query", [{"start": "-1"}, {"start": "x"}, {"limit": "0"},
                                   {"limit": "5000"}, {"start": "9" * 30}])
async def test_bad_stream_parameters_are_400(client: httpx.AsyncClient,
                                             query: dict[str, str]) -> None:
    response = await client.get(f"/api/runs/{OK_RUN}/streams/default", params=query)
    assert response.status_code == 400


async def test_ignored_and_empty_parameters_are_fine(client: httpx.AsyncClient) -> None:
    response = await client.get("/", params={"foo": "bar", "status": "", "cursor": "",
                                             "limit": "", "q": "", "workflow": " "})
    assert response.status_code == 200
    assert len(_table_run_ids(response.text)) == 3


async def test_static_files_are_served(client: httpx.AsyncClient) -> None:
    script = await client.get("/static/app.js")
    assert script.status_code == 200 and "textContent" in script.text
    assert (await client.get("/static/style.css")).status_code == 200
    assert (await client.get("/static/../app.py")).status_code == 404


async def test_mounted_under_a_prefix_links_stay_under_it(ui_world: Any) -> None:
    outer = Starlette(routes=[Mount("/ops/workflows", app(ui_world))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        listing = await http.get("/ops/workflows/")
        assert listing.status_code == 200
        assert f'href="http://host/ops/workflows/runs/{OK_RUN}"' in listing.text
        assert 'href="http://host/ops/workflows/static/style.css"' in listing.text
        assert (await http.get(f"/ops/workflows/runs/{OK_RUN}")).status_code == 200
        assert (await http.get("/ops/workflows/static/app.js")).status_code == 200


class _BrokenWorld:
    """A world whose storage fails: the UI answers 503, one message, no traceback."""

    async def list_runs(self, **kwargs: Any) -> Any:
        raise WorldError("database is locked for good")

    async def get_run(self, run_id: str) -> Any:
        raise WorldError("database is locked for good")


@pytest.mark.parametrize("path", ["/", "/api/runs", f"/runs/{OK_RUN}", f"/api/runs/{OK_RUN}"])
async def test_a_failing_world_is_503(path: str) -> None:
    transport = httpx.ASGITransport(app=app(_BrokenWorld()))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        response = await http.get(path)
    assert response.status_code == 503
    assert "database is locked for good" in response.text
