"""report.html in a real browser: headless Chromium (Debian's) driven by Playwright.

The hostile run of ``test_untrusted_output`` (payloads that set ``window.__pwned``, open
dialogs or load remote resources if they ever execute) is opened from file://. Asserted:
no dialog, no payload script ran, no request but the page itself, no console error, no
page error; the case browser's kind / cohort / status filters and the search box show the
right cases; the 5 MB response is shown truncated with its note; flip links land.

The reviewer's view, at 1440 px and 390 px, on runs shaped like the shipped example
(``reviewkit``: FAIL, PASS, INCONCLUSIVE): no horizontal page scroll (wide tables scroll in
their own box), the first screen holds the verdict, each failing / inconclusive rule with
its flip counts, the worst regressed examples and the degraded cohorts, and anchors land
below the sticky navigation.

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

from reviewkit import Flavour, build_review_run
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
def review_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    flavours: tuple[Flavour, ...] = ("fail", "pass", "inconclusive")
    return {f: build_review_run(tmp_path_factory.mktemp(f"review_{f}"), f) for f in flavours}


@pytest.fixture(scope="module")
def browser(hostile: HostileRun, big_run: Path, review_runs: dict[str, Path]) -> Iterator[Any]:
    # The runs are made first: Playwright's sync API keeps an event loop running on this
    # thread, and a compare (asyncio.run) cannot start inside it.
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        except Exception as exc:  # a broken install is a skip with its reason, not an error
            pytest.skip(f"chromium did not start under playwright: {exc}")
        yield b
        b.close()


def open_report(browser: Any, path: Path, viewport: tuple[int, int] | None = None) -> tuple[Any, Watch]:
    size = {"width": viewport[0], "height": viewport[1]} if viewport else None
    context = browser.new_context(java_script_enabled=True, offline=True, viewport=size)
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


# --------------------------------------------------------------------------- the reviewer's view

VIEWPORTS = [pytest.param((1440, 900), id="1440px"), pytest.param((390, 844), id="390px")]


def box(page: Any, selector: str) -> dict[str, float]:
    """The first match's bounding box in viewport coordinates (after any scrolling)."""
    result: dict[str, float] = page.evaluate(
        "s => { const r = document.querySelector(s).getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; }",
        selector,
    )
    return result


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize("flavour", ["fail", "pass", "inconclusive"])
def test_no_horizontal_page_scroll(browser: Any, review_runs: dict[str, Path], flavour: str,
                                   viewport: tuple[int, int]) -> None:
    page, watch = open_report(browser, review_runs[flavour] / "report.html", viewport)
    try:
        page.eval_on_selector_all("details", "els => els.forEach(d => d.open = true)")
        width = viewport[0]
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        # Anything wider than the page sits in a box that scrolls by itself.
        escaping = page.evaluate(
            """w => [...document.querySelectorAll('main *')].filter(e => {
                 const r = e.getBoundingClientRect();
                 if (r.right <= w + 1) return false;
                 for (let p = e.parentElement; p; p = p.parentElement) {
                   const o = getComputedStyle(p).overflowX;
                   if ((o === 'auto' || o === 'scroll') && p.getBoundingClientRect().right <= w + 1) return false;
                 }
                 return true;
               }).map(e => e.tagName + '.' + e.className).slice(0, 5)""",
            width,
        )
        assert escaping == []
        # ...and a table keeps readable columns rather than squeezing words to a letter a line.
        narrow = page.evaluate(
            """() => [...document.querySelectorAll('main table td:first-child')]
                 .filter(td => td.textContent.trim().length > 3 && td.getBoundingClientRect().width < 48)
                 .map(td => td.textContent.trim().slice(0, 20))"""
        )
        assert narrow == []
        watch.assert_clean()
    finally:
        page.context.close()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_first_screen_answers_the_review(browser: Any, review_runs: dict[str, Path],
                                         viewport: tuple[int, int]) -> None:
    width, height = viewport
    page, watch = open_report(browser, review_runs["fail"] / "report.html", viewport)
    try:
        assert page.locator("#verdict .badge.big").inner_text() == "FAIL"
        rules = page.locator("#verdict .deciding li")
        assert rules.count() == 2
        assert rules.first.inner_text().startswith("FAIL Over-refusal")
        assert "22 cases worse, 2 better" in rules.first.inner_text()
        assert rules.nth(1).inner_text().startswith("INCONCLUSIVE Pass rate")
        # On a phone the verdict and the failing rule fit the first screen; on a desktop the
        # examples (both outputs) and the degraded cohorts do too.
        assert page.evaluate(
            "() => document.querySelector('#verdict .deciding li:last-child').getBoundingClientRect().bottom"
        ) <= height
        examples = page.locator("#glance article.ex")
        assert examples.count() == 3
        assert box(page, "#glance")["top"] < box(page, "#rules")["top"]  # before any full table
        if width >= 1000:
            for sel in ("#glance article.ex .side.baseline pre", "#glance article.ex .side.candidate pre",
                        "#glance .cohort-list li"):
                assert box(page, sel)["bottom"] <= height, sel
            # Side by side: the candidate's output is to the right of the baseline's.
            assert box(page, "#glance .side.candidate pre")["left"] > box(page, "#glance .side.baseline pre")["right"]
        else:
            assert box(page, "#glance article.ex")["top"] < 3 * height
        # Cohorts that got worse are red whether or not significant.
        colours = page.eval_on_selector_all(
            "#glance .cohort-list li.d-worse", "els => els.map(e => getComputedStyle(e).color)")
        assert colours and len(set(colours)) == 1 and colours[0] == "rgb(207, 34, 46)"
        assert page.locator("#glance .sig.no").count() > 0 and page.locator("#glance .sig.yes").count() > 0
        watch.assert_clean()
    finally:
        page.context.close()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_anchors_land_below_the_sticky_nav(browser: Any, review_runs: dict[str, Path],
                                           viewport: tuple[int, int]) -> None:
    height = viewport[1]
    page, watch = open_report(browser, review_runs["fail"] / "report.html", viewport)
    try:
        for target in ("#rules", "#slices", "#flips", "#cases"):
            page.locator(f"nav.top a[href='{target}']").click()
            page.wait_for_timeout(150)
            nav = box(page, "nav.top")
            heading = box(page, f"{target} h2")
            assert nav["bottom"] <= heading["top"] < height, (target, nav, heading)
        # An example's link opens its case card, fully below the navigation.
        link = page.locator("#glance article.ex a[href^='#case-']").first
        case_id = link.inner_text()
        link.click()
        page.wait_for_timeout(250)
        card = page.locator("#case-list article.case.hl")
        assert card.count() == 1 and card.locator("h3").inner_text() == case_id
        nav = box(page, "nav.top")
        top = box(page, "#case-list article.case.hl")["top"]
        assert nav["bottom"] <= top < height, (nav, top)
        watch.assert_clean()
    finally:
        page.context.close()
