"""report.html in a real browser: headless Chromium (Debian's) driven by Playwright.

The hostile run of ``test_untrusted_output`` (payloads that set ``window.__pwned``, open
dialogs or load remote resources if they ever execute) is opened from file://. Asserted:
no dialog, no payload script ran, no request but the page itself, no console error, no
page error; the case browser's kind / cohort / status filters and the search box show the
right cases; the 5 MB response is shown truncated with its note; flip links land.

Needs ``/usr/bin/chromium`` (Debian package ``chromium``) and the ``playwright`` Python
package; never downloads a browser (``playwright install`` is not used). Skipped with the
reason when either is missing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from test_untrusted_output import PAYLOADS, HostileRun, build_big_response_run, build_hostile_run

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

if shutil.which(CHROMIUM) is None:
    pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed: pip install playwright")

pytestmark = pytest.mark.slow


@dataclass
class Watch:
    """Everything the page did that it should not have."""

    url: str
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.page_errors == [], self.page_errors
        assert self.console_errors == [], self.console_errors
        assert self.blocked == [], f"network requests attempted: {self.blocked}"
        assert set(self.requests) == {self.url}, self.requests


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    with pytest.MonkeyPatch.context() as mp:
        return build_hostile_run(tmp_path_factory.mktemp("browser_hostile"), mp)


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_big_response_run(tmp_path_factory.mktemp("browser_big"))


@pytest.fixture(scope="module")
def browser(hostile: HostileRun, big_run: Path) -> Iterator[Any]:
    # The runs are made first: Playwright's sync API keeps an event loop running on this
    # thread, and a compare (asyncio.run) cannot start inside it.
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        except Exception as exc:  # a broken install is a skip with its reason, not an error
            pytest.skip(f"chromium did not start under playwright: {exc}")
        yield b
        b.close()


def open_report(browser: Any, path: Path) -> tuple[Any, Watch]:
    context = browser.new_context(java_script_enabled=True, offline=True)
    page = context.new_page()
    url = path.resolve().as_uri()
    watch = Watch(url)

    def route(r: Any) -> None:
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            watch.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("request", lambda req: watch.requests.append(req.url))
    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(str(dialog.message))
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.page_errors.append(str(e)))
    page.goto(url, wait_until="load")
    page.wait_for_selector("#case-list article.case", timeout=10_000)
    return page, watch


def visible_cases(page: Any) -> int:
    return int(page.locator("#case-list article.case").count())


def pager_text(page: Any) -> str:
    return str(page.locator("#pager-top span").inner_text())


def settle(page: Any) -> None:
    page.wait_for_timeout(350)  # the search box is debounced by 200 ms


def case_data(hostile: HostileRun) -> list[dict[str, Any]]:
    html = (hostile.run_dir / "report.html").read_text(encoding="utf-8")
    start = html.index('<script type="application/json" id="case-data">') + len('<script type="application/json" id="case-data">')
    blob: dict[str, Any] = json.loads(html[start : html.index("</script>", start)])
    return list(blob["cases"])


def test_payloads_stay_inert_in_chromium(browser: Any, hostile: HostileRun) -> None:
    page, watch = open_report(browser, hostile.run_dir / "report.html")
    try:
        # Expand everything and page through everything a reviewer could look at.
        page.eval_on_selector_all("details", "els => els.forEach(d => d.open = true)")
        page.fill("#f-text", "script")
        settle(page)
        page.fill("#f-text", "")
        settle(page)
        for link in page.locator("a[href^='#case-']").all()[:5]:
            link.click()
        page.wait_for_timeout(200)
        assert page.evaluate("typeof window.__pwned") == "undefined", "a payload script ran"
        assert page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
        watch.assert_clean()
        # The payloads are on the page as text, shown, not executed.
        text = page.locator("#case-list").inner_text()
        assert PAYLOADS[0] in text and PAYLOADS[1] in text
        assert "osc-link" in text and "\x1b" not in text
    finally:
        page.context.close()


def test_filters_and_search(browser: Any, hostile: HostileRun) -> None:
    cases = case_data(hostile)
    page, watch = open_report(browser, hostile.run_dir / "report.html")
    try:
        assert visible_cases(page) == len(cases)
        page.select_option("#f-kind", "known_bad")
        assert visible_cases(page) == sum(1 for c in cases if c["kind"] == "known_bad") == 3
        page.select_option("#f-kind", "")
        page.select_option("#f-status", "regressed")
        regressed = sum(1 for c in cases if c["st"] == "regressed")
        assert regressed > 0 and visible_cases(page) == regressed
        assert all("regressed" in t for t in page.locator("#case-list .case-head").all_inner_texts())
        page.select_option("#f-status", "errors")
        assert visible_cases(page) == sum(1 for c in cases if c["err"]) == 1
        page.select_option("#f-status", "")
        cohort = next(c["cohort"] for c in cases if c["id"] == "p05")
        page.select_option("#f-cohort", cohort)  # a cohort that is an <svg onload> payload
        assert visible_cases(page) == 1
        page.select_option("#f-cohort", "")
        page.fill("#f-text", "javascript:x/")
        settle(page)
        assert visible_cases(page) == 1
        assert page.locator("#case-list h3").first.inner_text() == "javascript:x/../@evil"
        page.fill("#f-text", "no-such-text-anywhere")
        settle(page)
        assert visible_cases(page) == 0 and pager_text(page) == "no case matches the filters"
        page.fill("#f-text", "")
        settle(page)
        assert visible_cases(page) == len(cases)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        watch.assert_clean()
    finally:
        page.context.close()


def test_flip_link_lands_on_its_case(browser: Any, hostile: HostileRun) -> None:
    page, watch = open_report(browser, hostile.run_dir / "report.html")
    try:
        page.select_option("#f-kind", "known_bad")  # the link must clear filters hiding its case
        link = page.locator("#flips a[href^='#case-']").first
        target = link.inner_text()
        link.click()
        page.wait_for_timeout(200)
        highlighted = page.locator("#case-list article.case.hl h3")
        assert highlighted.count() == 1 and highlighted.inner_text() == target
        watch.assert_clean()
    finally:
        page.context.close()


def test_five_mb_response_is_shown_truncated(browser: Any, big_run: Path) -> None:
    page, watch = open_report(browser, big_run / "report.html")
    try:
        page.fill("#f-text", "5mb")
        settle(page)
        assert visible_cases(page) == 1
        card = page.locator("#case-list article.case").first
        out = card.locator(".side.candidate pre.out").inner_text()
        assert len(out) == 20_000
        assert "(truncated: 4,980,000 more characters)" in card.locator(".side.candidate .trunc").inner_text()
        # "<b>5MB</b>" in the output stayed text: no element was made of it.
        assert page.evaluate("[...document.querySelectorAll('b')].some(b => b.textContent === '5MB')") is False
        assert out.startswith("<b>5MB</b> <b>5MB</b>")
        watch.assert_clean()
    finally:
        page.context.close()
