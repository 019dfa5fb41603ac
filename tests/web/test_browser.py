"""The web UI in a real headless browser: Playwright driving Debian's Chromium against
`worldflow inspect runs --web` serving a SQLite file of real runs on a localhost socket.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``); Playwright's own browser
download is not used.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.cli import flows
from tests.cli.flows import FAILED_RUN, OK_RUN
from tests.cli.helpers import cli_env, run_async

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, Dialog

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" else None)

    def on_dialog(dialog: Dialog) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield page
    finally:
        context.close()
    assert problems == []  # no script errors, CSP violations, alerts


@pytest.fixture
def serve_ui() -> Iterator[Callable[[str], str]]:
    """Start `worldflow inspect runs --web --port 0` on a SQLite file; returns its URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(db_path: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worldflow.cli.main", "inspect", "runs", "--web", "--port",
             "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_env(db_path))
        procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the web UI did not start within 30s"
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, f"no URL in {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        return match.group(1)

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, err  # SIGTERM: a clean stop that closes the world


def _line_of(text: str) -> int:
    """The line number in tests/cli/flows.py holding `text`."""
    source = flows.__file__
    with open(source) as file:
        return next(number for number, line in enumerate(file, 1) if text in line)


def _box(locator: Any) -> dict[str, float]:
    box = locator.bounding_box()
    assert box is not None
    return box  # type: ignore[no-any-return]


def test_click_into_failed_run_shows_error_retries_and_timeline(
        populated_db: str, serve_ui: Callable[[str], str], page: Page, tmp_path: Path) -> None:
    base = serve_ui(populated_db)
    page.goto(base)
    expect(page.locator("#runs-body tr")).to_have_count(3)
    page.get_by_role("link", name=FAILED_RUN, exact=True).click()
    page.wait_for_url(f"{base}runs/{FAILED_RUN}")

    expect(page.locator("#run-status")).to_have_text("failed")
    # textContent holding the tags proves they were escaped, not parsed as HTML
    expect(page.locator("#run-error .error-message")).to_contain_text(
        "ValueError: inventory service refused sku <b>42</b>")
    expect(page.locator("#failed-step-trace")).to_contain_text("Traceback (most recent call")
    # at the top, open: the failed step's traceback, starting at the user's line
    trace = page.locator("#failed-step-trace")
    expect(trace).to_be_visible()
    lines = trace.inner_text().splitlines()
    frames = [line for line in lines if line.startswith("  File ")]
    assert frames[0].endswith(f'tests/cli/flows.py", line {_line_of("raise ValueError(FAILURE")}'
                              f', in reserve'), frames
    assert not any("worldflow/" in frame for frame in frames)
    assert lines[-1].startswith("ValueError: inventory service refused sku <b>42</b>")
    assert page.locator("#failed-step").bounding_box()["y"] < \
        page.locator("#timeline").bounding_box()["y"]  # type: ignore[index]
    reserve = page.locator("tr.step-row[data-step='cli_reserve']")
    expect(reserve.locator("td.attempts")).to_have_text("3")
    expect(reserve.locator("td.retries")).to_have_text("2 retries")
    expect(page.locator(".retry-history li")).to_have_count(2)
    expect(page.locator(".retry-history li").first).to_contain_text("retried after")

    step_rows = page.locator("#timeline .tl-row.tl-step")
    expect(step_rows).to_have_count(2)
    fetch_bar = _box(step_rows.nth(0).locator(".seg-attempt"))
    attempts = step_rows.nth(1).locator(".seg-attempt")
    expect(attempts).to_have_count(3)
    boxes = [_box(attempts.nth(i)) for i in range(3)]
    assert all(box["width"] > 0 and box["height"] > 0 for box in boxes)
    assert fetch_bar["x"] < boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]  # on one time axis
    expect(attempts.nth(2)).to_have_class(re.compile(r"\bseg-failed\b"))
    expect(step_rows.nth(1).locator(".seg-retry-wait")).to_have_count(2)
    expect(page.locator("#events-table tbody tr")).to_have_count(11)

    screenshot = tmp_path / "failed-run.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot of the failed run: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_script_in_a_run_output_is_shown_as_text_not_run(
        populated_db: str, serve_ui: Callable[[str], str], page: Page) -> None:
    base = serve_ui(populated_db)
    page.goto(f"{base}runs/{OK_RUN}")
    expect(page.locator("#run-output")).to_contain_text("<script>window.__xss = 1;")
    assert page.evaluate("window.__xss") is None
    expect(page.locator("#timeline .tl-row.tl-step")).to_have_count(2)
    first, second = (_box(page.locator("#timeline .tl-row.tl-step").nth(i).locator(".tl-seg"))
                     for i in range(2))
    assert first["y"] != second["y"]  # parallel steps: side by side on their own rows
    assert first["x"] < second["x"] + second["width"] and second["x"] < first["x"] + first[
        "width"]  # ...overlapping in time
    expect(page.locator("#streams .chunks li")).to_have_count(4)


def test_filters_and_search_in_the_browser(
        populated_db: str, serve_ui: Callable[[str], str], page: Page) -> None:
    base = serve_ui(populated_db)
    page.goto(base)
    page.select_option("#filter-status", "failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#runs-body tr")).to_have_count(1)
    expect(page.locator("#runs-body")).to_contain_text(FAILED_RUN)
    page.get_by_label("search by run id").fill(OK_RUN)
    page.get_by_label("search by run id").press("Enter")
    page.wait_for_url(f"{base}runs/{OK_RUN}")
    expect(page.locator("#run-status")).to_have_text("completed")


def test_runs_list_refreshes_live_without_reloading(
        scratch_db: str, serve_ui: Callable[[str], str], page: Page) -> None:
    base = serve_ui(scratch_db)
    page.goto(base)
    expect(page.locator("#runs-body tr")).to_have_count(3)
    expect(page.locator("#live-indicator")).to_be_visible()
    page.evaluate("window.__same_document = true")
    run_async(flows.add_pending_runs, scratch_db, 1, prefix="cli-live")
    expect(page.locator("#runs-body")).to_contain_text("cli-live-0000", timeout=10_000)
    expect(page.locator("#runs-body tr")).to_have_count(4)
    assert page.evaluate("window.__same_document") is True


BROWSER_STREAM_NAMES = [".", "..", "a/../b?c#d%2Fe", "ünï ✓ 名前", "  ", "<i>x</i>&amp;"]


async def _write_streams(path: str) -> str:
    from tests.web.test_stream_names import many_streams
    from worldflow import create_world, start

    async with create_world("sqlite", path=path) as world:
        run = await start(many_streams, BROWSER_STREAM_NAMES, world=world)
        await run.result(timeout=60)
        return run.run_id


def test_every_stream_link_opens_its_stream_whatever_its_name(
        tmp_path: Path, serve_ui: Callable[[str], str], page: Page) -> None:
    path = str(tmp_path / "streams.db")
    run_id = run_async(_write_streams, path)
    base = serve_ui(path)
    page.goto(f"{base}runs/{run_id}")
    links = page.locator("#streams a.stream-link")
    expect(links).to_have_count(len(BROWSER_STREAM_NAMES))
    opened = []
    for i in range(len(BROWSER_STREAM_NAMES)):
        page.locator("#streams a.stream-link").nth(i).click()
        page.wait_for_load_state()
        document = json.loads(page.locator("body").inner_text())
        assert document["run_id"] == run_id
        assert document["chunks"][0]["data"] == {"name": document["name"]}
        opened.append(document["name"])
        page.go_back()
        page.wait_for_url(f"{base}runs/{run_id}")
    assert sorted(opened) == sorted(BROWSER_STREAM_NAMES)


@pytest.fixture
def live_ui() -> Iterator[str]:
    """`tests/web/live_ui.py`: a UI whose world has an engine and a sleeping run; its
    URL (the sleeping run's page)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.web.live_ui"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the live web UI did not start within 30s"
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/runs/\S+)", line)
        assert match, f"no URL in {line!r}"
        yield match.group(1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err


def test_cancel_button_cancels_a_sleeping_run_and_the_status_changes_in_place(
        live_ui: str, page: Page) -> None:
    page.goto(live_ui)
    expect(page.locator("#run-status")).to_have_text("running")
    page.evaluate("window.notReloaded = true")
    cancel = page.locator("#cancel-run")
    expect(cancel).to_be_visible()
    expect(page.locator("#retry-run")).to_be_hidden()
    cancel.click()
    expect(page.locator("#action-message")).to_have_text("cancel requested")
    expect(page.locator("#run-status")).to_have_text("cancelled", timeout=10_000)
    expect(page.locator("#run-status")).to_have_class(re.compile(r"\bstatus-cancelled\b"))
    assert page.evaluate("window.notReloaded") is True  # the same document: no reload
    expect(cancel).to_be_hidden()
    expect(page.locator("#retry-run")).to_be_visible()
    expect(page.locator("#send-message")).to_be_hidden()


def test_hook_payload_is_checked_as_json_in_the_page_then_delivered(
        live_ui: str, page: Page) -> None:
    from tests.web.live_ui import HOOK_RUN

    page.goto(live_ui.split("/runs/")[0] + f"/runs/{HOOK_RUN}")
    expect(page.locator("#run-status")).to_have_text("running")
    form = page.locator(".hook-form")
    expect(form).to_have_count(1)
    form.locator("textarea").fill('{"approved": tru')
    form.get_by_role("button", name="Send payload").click()
    expect(form.locator(".json-error")).to_contain_text("not valid JSON")
    expect(page.locator("#run-status")).to_have_text("running")
    form.locator("textarea").fill('{"approved": true, "by": "<b>ada</b>"}')
    form.get_by_role("button", name="Send payload").click()
    expect(form.locator(".hook-message")).to_have_text("payload sent")
    expect(page.locator("#run-status")).to_have_text("completed", timeout=10_000)
    page.reload()
    expect(page.locator("#run-output")).to_contain_text('"by": "<b>ada</b>"')


def test_a_foreign_host_header_is_refused_by_the_served_ui(live_ui: str) -> None:
    import httpx

    base = live_ui.split("/runs/")[0]
    assert httpx.get(f"{base}/api/runs", timeout=10).status_code == 200
    refused = httpx.get(f"{base}/api/runs", headers={"Host": "evil.example"}, timeout=10)
    assert refused.status_code == 400


def test_runs_list_and_run_page_say_what_a_running_run_waits_for(
        live_ui: str, page: Page) -> None:
    from tests.web.live_ui import HOOK_RUN, HOOK_TOKEN, MESSAGE_RUN, SLEEPING_RUN

    base = live_ui.split("/runs/")[0] + "/"
    page.goto(base)

    def badge(run_id: str) -> Any:
        return page.locator("#runs-body tr", has=page.get_by_role(
            "link", name=run_id, exact=True)).locator(".status")

    expect(badge(SLEEPING_RUN)).to_have_text("sleeping")
    expect(badge(SLEEPING_RUN)).to_have_attribute("title", re.compile(r"^running: sleeping "
                                                                      r"until 20\d\d-"))
    expect(badge(HOOK_RUN)).to_have_text("waiting for hook")
    expect(badge(HOOK_RUN)).to_have_attribute("title", f"running: waiting for hook (token "
                                                       f"{HOOK_TOKEN})")
    expect(badge(MESSAGE_RUN)).to_have_text("waiting for message")
    # the list refreshes itself: the labels stay
    page.wait_for_timeout(2500)
    expect(badge(SLEEPING_RUN)).to_have_text("sleeping")
    page.goto(live_ui)
    expect(page.locator("#run-waiting")).to_have_text(re.compile(r"^sleeping until 20\d\d-"))


def test_message_form_checks_json_and_the_run_completes_without_reloading(
        live_ui: str, page: Page) -> None:
    from tests.web.live_ui import MESSAGE_RUN, MESSAGE_TOPIC

    page.goto(live_ui.split("/runs/")[0] + f"/runs/{MESSAGE_RUN}")
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator("#run-waiting")).to_have_text(
        f"waiting for message (topic '{MESSAGE_TOPIC}')")
    page.evaluate("window.notReloaded = true")
    form = page.locator("#message-form")
    form.get_by_label("Topic").fill(MESSAGE_TOPIC)
    form.locator("textarea").fill('{"id": 7,')
    expect(form.locator(".json-error")).to_contain_text("not valid JSON")
    expect(form.locator("textarea")).to_have_attribute("aria-invalid", "true")
    form.get_by_role("button", name="Send message").click()
    expect(form.locator(".form-message")).to_have_text("")
    page.wait_for_timeout(1000)
    expect(page.locator("#run-status")).to_have_text("running")  # nothing was sent
    form.locator("textarea").fill('{"id": 7, "note": "<b>fragile</b>"}')
    expect(form.locator(".json-error")).to_have_text("")
    form.get_by_role("button", name="Send message").click()
    expect(form.locator(".form-message")).to_have_text("message sent")
    expect(page.locator("#run-status")).to_have_text("completed", timeout=10_000)
    # the output, the log and the facts came in live
    expect(page.locator("#run-output")).to_contain_text('"note": "<b>fragile</b>"')
    expect(page.locator("#events-table")).to_contain_text("message_received")
    expect(page.locator("#send-message")).to_be_hidden()
    expect(page.locator("#run-waiting")).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True


def test_a_step_appears_live_while_it_runs_then_completes(live_ui: str, page: Page) -> None:
    from tests.web.live_ui import STEP_RUN

    page.goto(live_ui.split("/runs/")[0] + f"/runs/{STEP_RUN}")
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator("#steps")).to_contain_text("no steps")
    page.evaluate("window.notReloaded = true")
    form = page.locator("#message-form")
    form.get_by_label("Topic").fill("go")
    form.locator("textarea").fill('{"id": 3}')
    form.get_by_role("button", name="Send message").click()
    step_row = page.locator("tr.step-row[data-step='browser_slow_step']")
    expect(step_row).to_have_attribute("data-status", "running", timeout=5_000)
    expect(page.locator("#run-waiting")).to_have_text(
        re.compile(r"^running step \(browser_slow_step #\d+\)$"))
    expect(page.locator("#timeline .tl-row.tl-step")).to_have_count(1)
    expect(page.locator("#run-steps")).to_have_text("0/1 completed")
    expect(step_row).to_have_attribute("data-status", "completed", timeout=15_000)
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#run-output")).to_contain_text('"packed 3"')
    expect(page.locator("#run-steps")).to_have_text("1/1 completed")
    assert page.evaluate("window.notReloaded") is True


def test_stopping_the_server_ends_open_live_streams_at_once() -> None:
    import time

    import httpx

    from tests.web.live_ui import SLEEPING_RUN

    proc = subprocess.Popen([sys.executable, "-m", "tests.web.live_ui"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the live web UI did not start within 30s"
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", proc.stdout.readline())
        assert match
        url = f"{match.group(1)}api/runs/{SLEEPING_RUN}/live"
        with httpx.stream("GET", url, timeout=30) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            assert next(lines) == ""
            assert next(lines) == "event: change"  # the log so far
            began = time.monotonic()
            proc.terminate()
            rest = list(lines)  # the server ends the stream
        _, err = proc.communicate(timeout=15)
        assert time.monotonic() - began < 10
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "ERROR" not in err, err
        assert not any(line.startswith("event:") for line in rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
