"""Stream names with any printable characters: written in a step, read with
`run.stream(name)`, shown and linked on the run page, served by the stream routes;
names that cannot work are refused at `get_writable()`."""

from __future__ import annotations

import html
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from worldflow import get_writable, start, step, workflow
from worldflow.cli.shapes import shown_name
from worldflow.cli.web import app
from worldflow.core.streams import check_stream_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: one name per character class that goes wrong in a URL or on a page
NAMES = {
    "slash": "a/b",
    "slashes and dots": "a/../b/./c",
    "question mark": "what?",
    "hash": "#top",
    "percent": "100%",
    "encoded-looking": "a%2Fb%00",
    "space": "with space",
    "edge spaces": "  both ends  ",
    "only a space": " ",
    "plus and ampersand": "a+b&c=d;e",
    "html": "<b>\"bold\" & 'x'</b>",
    "unicode": "ünïcödé ✓ 名前",
    "emoji with joiner": "👩‍💻",
    "right-to-left": "שלום",
    "dot": ".",
    "dot dot": "..",
    "backslash": "a\\b",
    "longest": "x" * 200,
}


@step(name="sn_write_all", max_retries=0)
async def write_all(names: list[str]) -> None:
    for name in names:
        async with get_writable(name) as writer:
            await writer.write({"name": name})
            await writer.write(name.encode())


@workflow(name="sn_streams")
async def many_streams(names: list[str]) -> int:
    await write_all(names)
    return len(names)


@step(name="sn_refused", max_retries=0)
async def refused(names: list[str]) -> list[str]:
    messages = []
    for name in names:
        try:
            get_writable(name)
        except ValueError as exc:
            messages.append(str(exc))
        else:
            messages.append("accepted")
    return messages


@workflow(name="sn_refusals")
async def refusals(names: list[str]) -> list[str]:
    return await refused(names)


@pytest.fixture
async def written(world: Any) -> AsyncIterator[tuple[Any, Any, httpx.AsyncClient]]:
    """(world, run, web UI client) after a run wrote one stream for each of `NAMES`."""
    run = await start(many_streams, list(NAMES.values()), world=world)
    assert await run.result(timeout=60) == len(NAMES)
    transport = httpx.ASGITransport(app=app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as client:
        yield world, run, client


def expected_chunks(name: str) -> list[dict[str, Any]]:
    return [{"encoding": "json", "data": {"name": name}},
            {"encoding": "base64", "data": _b64(name.encode())}]


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


async def test_any_printable_name_is_written_and_read_back(
        written: tuple[Any, Any, httpx.AsyncClient]) -> None:
    world, run, _ = written
    assert {row[0] for row in await world.list_streams(run.run_id)} == set(NAMES.values())
    for name in NAMES.values():
        assert [c async for c in run.stream(name)] == [{"name": name}, name.encode()]


async def test_run_page_shows_and_links_every_stream(
        written: tuple[Any, Any, httpx.AsyncClient]) -> None:
    _, run, client = written
    page = await client.get(f"/runs/{run.run_id}")
    assert page.status_code == 200, page.text
    shown = [html.unescape(h) for h in re.findall(r'<h3 class="stream-name">([^<]*) <span',
                                                   page.text)]
    assert sorted(shown) == sorted(shown_name(name) for name in NAMES.values())
    links = [html.unescape(h) for h in re.findall(r'class="stream-link" href="([^"]*)"',
                                                   page.text)]
    assert len(links) == len(NAMES)
    served = {}
    for link in links:
        assert urllib.parse.urlsplit(link).fragment == ""  # a "#" would cut the link
        response = await client.get(link)
        assert response.status_code == 200, (link, response.text)
        document = response.json()
        served[document["name"]] = [{k: c[k] for k in ("encoding", "data")}
                                    for c in document["chunks"]]
        assert document["closed"] is True
    assert served == {name: expected_chunks(name) for name in NAMES.values()}


@pytest.mark.parametrize("key", sorted(set(NAMES) - {"dot", "dot dot"}))
async def test_stream_route_takes_the_percent_encoded_name_in_the_path(
        written: tuple[Any, Any, httpx.AsyncClient], key: str) -> None:
    _, run, client = written
    name = NAMES[key]
    path = f"/api/runs/{run.run_id}/streams/{urllib.parse.quote(name, safe='')}"
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == name
    assert [{k: c[k] for k in ("encoding", "data")} for c in response.json()["chunks"]] \
        == expected_chunks(name)


async def test_stream_route_by_query_needs_a_name_and_a_known_stream(
        written: tuple[Any, Any, httpx.AsyncClient]) -> None:
    _, run, client = written
    assert (await client.get(f"/api/runs/{run.run_id}/stream")).status_code == 400
    missing = await client.get(f"/api/runs/{run.run_id}/stream", params={"name": "nope/?#"})
    assert missing.status_code == 404
    found = await client.get(f"/api/runs/{run.run_id}/stream", params={"name": ".."})
    assert found.status_code == 200 and found.json()["name"] == ".."


@pytest.mark.parametrize(("name", "why"), [
    ("", "empty"),
    ("a\x00b", "control character"),
    ("tab\there", "control character"),
    ("new\nline", "control character"),
    ("bell\x07", "control character"),
    ("del\x7f", "control character"),
    ("c1\x85", "control character"),
    ("x" * 201, "201 characters"),
])
async def test_names_that_cannot_work_are_refused_with_a_clear_error(
        memory_world: Any, name: str, why: str) -> None:
    run = await start(refusals, [name], world=memory_world)
    [message] = await run.result(timeout=30)
    assert "name" in message and why in message
    assert await memory_world.list_streams(run.run_id) == []


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValueError, match=r"name=.*control character"):
        check_stream_name("lone\ud800")
    with pytest.raises(TypeError, match="name="):
        check_stream_name(5)


async def test_names_at_the_limits_are_accepted(memory_world: Any) -> None:
    names = ["x" * 200, " ", "👩‍💻", "\u200b"]  # length 200, blank, joiner, zero width
    run = await start(refusals, names, world=memory_world)
    assert await run.result(timeout=30) == ["accepted"] * len(names)
