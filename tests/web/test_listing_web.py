"""The web UI's runs list filtered by tag (``?tag=k=v``), tags on the run page, and a
listing that asks the world for no run's steps; on memory, SQLite and Postgres."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.cli.tagged import (
    BILLING,
    OPS_DEV,
    OPS_PROD,
    UNTAGGED,
    CountingWorld,
    populate_tagged,
    tagged_db,
    tagged_postgres,
)
from tests.web.conftest import populated_world
from worldflow.cli.web import app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["tagged_db", "tagged_postgres"]  # fixtures


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def tagged_world(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with populated_world(request, populate_tagged, "tagged_db",
                               "tagged_postgres") as world:
        yield world


@pytest.fixture
async def counted(tagged_world: Any) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                            CountingWorld]]:
    counting = CountingWorld(tagged_world)
    transport = httpx.ASGITransport(app=app(counting))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        yield http, counting


def _table_run_ids(html: str) -> list[str]:
    return re.findall(r'class="run-link" href="[^"]*">([^<]*)</a>', html)


async def test_runs_page_filters_by_tag(counted: Any) -> None:
    http, _ = counted
    page = await http.get("/", params={"tag": "team=ops"})
    assert page.status_code == 200
    assert _table_run_ids(page.text) == [OPS_PROD, OPS_DEV]
    assert 'value="team=ops"' in page.text  # the filter input keeps it
    assert '<span class="tag">env=prod</span>' in page.text
    both = await http.get("/?tag=team%3Dops&tag=env%3Ddev")
    assert _table_run_ids(both.text) == [OPS_DEV]
    everything = await http.get("/", params={"tag": ""})  # an empty filter input
    assert _table_run_ids(everything.text) == [OPS_PROD, OPS_DEV, BILLING, UNTAGGED]
    # the next page keeps the filter
    first = await http.get("/", params={"tag": "team=ops", "limit": 1})
    assert _table_run_ids(first.text) == [OPS_PROD]
    [next_url] = re.findall(r'id="next-page" href="([^"]*)"', first.text)
    second = await http.get(html.unescape(next_url))
    assert _table_run_ids(second.text) == [OPS_DEV]
    assert 'id="next-page"' not in second.text


async def test_api_runs_filters_by_tag_and_pages(counted: Any) -> None:
    http, _ = counted
    first = (await http.get("/api/runs", params={"tag": "team=ops", "limit": 1})).json()
    assert [run["run_id"] for run in first["runs"]] == [OPS_PROD]
    assert first["runs"][0]["tags"] == {"team": "ops", "env": "prod"}
    rest = (await http.get("/api/runs", params={"tag": "team=ops", "limit": 1,
                                                "cursor": first["next_cursor"]})).json()
    assert [run["run_id"] for run in rest["runs"]] == [OPS_DEV]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("path", ["/", "/api/runs"])
async def test_a_malformed_tag_is_a_400_naming_it(counted: Any, path: str) -> None:
    http, counting = counted
    response = await http.get(path, params={"tag": "team"})
    assert response.status_code == 400
    assert "tag 'team' is not key=value" in html.unescape(response.text)
    assert counting.calls["list_runs"] == 0


async def test_run_page_shows_tags_linking_to_the_filtered_list(counted: Any) -> None:
    http, _ = counted
    page = await http.get(f"/runs/{OPS_DEV}")
    assert page.status_code == 200
    assert 'id="run-tags"' in page.text
    assert 'href="http://ui.test/?tag=team%3Dops">team=ops</a>' in page.text
    detail = (await http.get(f"/api/runs/{OPS_DEV}")).json()
    assert detail["tags"] == {"team": "ops", "env": "dev"}


async def test_listing_runs_asks_for_no_steps(counted: Any) -> None:
    http, counting = counted
    page = await http.get("/")
    assert _table_run_ids(page.text) == [OPS_PROD, OPS_DEV, BILLING, UNTAGGED]
    document = (await http.get("/api/runs")).json()
    assert counting.calls["list_runs"] == 2
    assert counting.calls["list_steps"] == 0
    billing = next(run for run in document["runs"] if run["run_id"] == BILLING)
    assert billing["step_counts"] == {"total": 2, "completed": 1, "failed": 1,
                                      "running": 0, "pending": 0}
