"""The dashboard in a real browser on the real stack: Debian's Chromium driven by Playwright
against `pixelrelay up` (valkey, the collector under granian, relay workers, the fake Meta, the
dashboard). One stack and one browser for the whole module; the tests run in order, as an
operator's session would: log in, watch the flow, rescue dead letters, log out. Every page is
saved at 1280 px and 390 px into ``$PIXELRELAY_SCREENSHOTS`` (default ``var/screenshots``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

from tests.support import (
    DEMO_API_KEY,
    DEMO_PIXEL,
    ROOT,
    Process,
    free_port,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"  # Debian's package (ops/system-packages.txt), never downloaded
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-sync", "--no-first-run",
                 "--metrics-recording-only", "--disable-features=Translate,MediaRouter"]
OPERATOR, PASSWORD = "demo", "pixelrelay-demo"
SHOTS = Path(os.environ.get("PIXELRELAY_SCREENSHOTS", ROOT / "var" / "screenshots"))
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
# Makes the page believe its tab was hidden or shown (what a browser does on a tab switch).
VISIBILITY = """state => {
    Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
}"""
CONFIRMATIONS: list[str] = []  # what each confirmation said (the page fixture accepts them)
NO_REAL_SERVICES = {"REDIS_URL": "", "PIXELRELAY_GRAPH_URL": "", "PIXELRELAY_TEST_TOKEN": ""}


@dataclass
class Stack:
    dashboard: str
    collector: str
    fake_meta: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard-stack")
    ports = {n: free_port() for n in ("collector", "dashboard", "fake_meta", "redis")}
    example = (ROOT / "pixelrelay.example.toml").read_text()
    operators = example[example.index("[[operators]]"):]
    config = write_config(
        tmp, redis_url="", collector_port=ports["collector"],
        redis_lines=f'embedded_port = {ports["redis"]}\ndata_dir = "{tmp / "redis"}"',
        extra=f"\n[dashboard]\nport = {ports['dashboard']}\ncollector_url = "
              f"\"http://127.0.0.1:{ports['collector']}\"\n"
              f"\n[fake_meta]\nport = {ports['fake_meta']}\n\n{operators}")
    process = Process([sys.executable, "-m", "pixelrelay", "up", "--config", str(config)],
                      tmp / "up.log", env=NO_REAL_SERVICES).start()
    try:
        wait_for(lambda: "pixelrelay is up" in process.output(), 90, what="the stack")
        assert f"log in as '{OPERATOR}' with the password '{PASSWORD}'" in process.output()
        yield Stack(f"http://127.0.0.1:{ports['dashboard']}",
                    f"http://127.0.0.1:{ports['collector']}",
                    f"http://127.0.0.1:{ports['fake_meta']}")
    finally:
        process.stop(40)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    tab.on("dialog", lambda dialog: (CONFIRMATIONS.append(dialog.message), dialog.accept()))
    yield tab
    context.close()


def shoot(page: Page, name: str) -> None:
    """Screenshots of the page as it is, at both widths (full page); at each width the page
    itself must not scroll sideways (wide tables scroll inside their own box)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        assert (SHOTS / f"{name}-{width}.png").stat().st_size > 0, label
        page_width = page.evaluate("document.documentElement.scrollWidth")
        assert page_width <= width, f"{name} is {page_width} px wide at {width} px"
    page.set_viewport_size({"width": 1280, "height": 900})


def send(stack: Stack, *events: dict[str, object]) -> None:
    answer = httpx.post(f"{stack.collector}/v1/events", json=list(events),
                        headers={"Authorization": f"Bearer {DEMO_API_KEY}"}, timeout=10)
    assert 202 == answer.status_code, answer.text


def purchase(event_id: str) -> dict[str, object]:
    return {"event_name": "Purchase", "event_id": event_id, "pixel_id": DEMO_PIXEL,
            "event_source_url": "https://shop.example/thanks",
            "user_data": {"em": "joe@example.com", "external_id": "u-1",
                          "client_ip_address": "203.0.113.9",
                          "client_user_agent": "Mozilla/5.0 (browser test)"},
            "custom_data": {"value": 10, "currency": "EUR"}}


def faults(stack: Stack, **settings: object) -> None:
    assert 200 == httpx.post(f"{stack.fake_meta}/_fake/faults", json=settings,
                             timeout=5).status_code


def received_ids(stack: Stack) -> set[str]:
    body = httpx.get(f"{stack.fake_meta}/_fake/received", timeout=5).json()
    return set(body["pixels"].get(DEMO_PIXEL, {}).get("event_ids", []))


def stat(page: Page, name: str) -> int:
    return int(page.locator(f'#live [data-stat="{name}"]').inner_text().replace(",", ""))


def test_login_page_then_overview(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.dashboard}/dead-letters")
    assert page.url.startswith(f"{stack.dashboard}/login?next=/dead-letters")
    shoot(page, "login")
    page.fill("#name", OPERATOR)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.dashboard}/dead-letters")
    page.goto(f"{stack.dashboard}/")

    assert OPERATOR == page.locator("#who-name").inner_text()


def test_a_counter_moves_while_events_flow(page: Page, stack: Stack) -> None:
    before = stat(page, "delivered")

    httpx.get(f"{stack.collector}/go/demo?fbclid=abc", follow_redirects=False, timeout=5)
    send(stack, *(purchase(f"flow-{i}") for i in range(5)))

    # No reload: the live fragment polls every 2 s.
    page.wait_for_function(
        "n => Number(document.querySelector('#live [data-stat=delivered]')"
        ".textContent.replace(/,/g, '')) >= n", arg=before + 6, timeout=30_000)
    assert stat(page, "received") >= 6
    shoot(page, "overview")


def test_polling_pauses_in_a_hidden_tab_and_resumes_when_shown(page: Page) -> None:
    def is_poll(request: Request) -> bool:
        return "/fragments/overview" in request.url

    polls: list[float] = []
    page.on("request", lambda r: polls.append(time.monotonic()) if is_poll(r) else None)
    with page.expect_request(is_poll, timeout=10_000):
        pass  # polling while visible
    page.evaluate(VISIBILITY, "hidden")
    hidden_at = time.monotonic()
    page.wait_for_timeout(5_000)  # two and a half polling intervals: none may go out
    hidden = [t for t in polls if t > hidden_at + 0.5]

    with page.expect_request(is_poll, timeout=1_500):  # at once, not at the next 2 s tick
        page.evaluate(VISIBILITY, "visible")

    assert [] == hidden


def test_requeue_one_dead_letter_and_see_it_at_the_fake_meta(page: Page, stack: Stack) -> None:
    faults(stack, error_rates={"100": 1.0})
    send(stack, purchase("dead-1"))
    wait_for(lambda: "dead-1" in page.request.get(
        f"{stack.dashboard}/dead-letters").text(), 30, what="the dead letter")
    faults(stack, error_rates={})

    page.goto(f"{stack.dashboard}/dead-letters")
    shoot(page, "dead-letters")
    page.click("text=dead-1")
    assert "100" in page.locator("#reason").inner_text()
    shoot(page, "dead-letter")
    page.click("#requeue-one")
    page.wait_for_selector("#done")

    assert "1 of 1 requeued" == page.locator("#done").inner_text()
    wait_for(lambda: "dead-1" in received_ids(stack), 30, what="dead-1 at the fake Meta")


def test_filter_and_bulk_requeue(page: Page, stack: Stack) -> None:
    faults(stack, error_rates={"100": 1.0})
    send(stack, *(purchase(f"bulk-{i}") for i in range(12)))
    wait_for(lambda: page.request.get(
        f"{stack.dashboard}/dead-letters?event=Purchase&kind=rejected").text().count(
        "bulk-") >= 12, 30, what="twelve dead letters")
    faults(stack, error_rates={})

    page.goto(f"{stack.dashboard}/dead-letters")
    page.fill("#f-event", "Purchase")
    page.fill("#f-code", "100")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/dead-letters?*code=100*")
    assert "12" == page.locator('[data-stat="matching"]').inner_text()
    boxes = page.locator("#dead-table input[name=keys]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("button[value=requeue]")
    page.wait_for_selector("#done")
    assert ("2 of 2 requeued", "Requeue the 2 selected dead letters?", "10") == (
        page.locator("#done").inner_text(), CONFIRMATIONS[-1],
        page.locator('[data-stat="matching"]').inner_text())
    page.click("button[value=requeue-matching]")
    page.wait_for_selector('#job-card[data-state="done"]', timeout=30_000)
    shoot(page, "bulk-job")

    assert "10" == page.locator("#job-done").inner_text()
    assert CONFIRMATIONS[-1] == "Requeue 10 dead letters (event=Purchase, code=100)?"
    wait_for(lambda: {f"bulk-{i}" for i in range(12)} <= received_ids(stack), 30,
             what="the bulk-requeued events at the fake Meta")


def test_find_links_pixels_and_audit(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.dashboard}/find?q=dead-1")
    steps = [line.split("  ", 2)[-1] for line in
             page.locator("#timeline").inner_text().splitlines()]
    # dead, requeued by the operator (the same steps `pixelrelay trace` prints), delivered
    assert [f"requeued  (by={OPERATOR}, via=dashboard)", "delivered"] == [
        s.split("  (")[0] if s.startswith("delivered") else s for s in steps[-2:]], steps
    shoot(page, "find")
    page.goto(f"{stack.dashboard}/links")
    shoot(page, "links")
    page.goto(f"{stack.dashboard}/pixels")
    assert page.locator(f"#pixel-{DEMO_PIXEL} tr[data-event=Purchase]").count() == 1
    shoot(page, "pixels")
    page.goto(f"{stack.dashboard}/audit")
    actions = page.locator("#audit tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.action)")
    shoot(page, "audit")

    assert {"login", "requeue", "bulk_requeue"} <= set(actions)


def test_log_out(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.dashboard}/")
    page.click("text=Log out")
    page.wait_for_url("**/login")
    page.goto(f"{stack.dashboard}/pixels")

    assert "/login?next=/pixels" in page.url
