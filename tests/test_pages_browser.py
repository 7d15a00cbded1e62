"""The pages in a real browser: headless Chromium (the Debian package) drives `kpi-monitor demo`
run as a subprocess, through the DevTools protocol (benchmarks/browser.py).

- the overview lists every demo check with the state the API reports, the incidents firing;
- the firing Germany series' chart has one vertex per bucket the daemon keeps, and the band;
- hostile segment values, owner and team (`<script>`, `"><img src=x onerror=...>`) execute
  nothing: no dialog opens, no element is injected, the text shows as text;
- with JavaScript off the overview is fully usable: filters and sorting are links and a form.

Without Chromium the tests skip, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from benchmarks.browser import Browser, Page, chromium
from monitor.demo import INCIDENTS
from tests.conftest import demo_document, free_port, in_ci, write_config
from tests.daemon_process import DaemonProcess
from tests.duckdb_writes import write

pytestmark = pytest.mark.slow

HOSTILE = ["<script>alert('segment')</script>", '"><img src=x onerror=alert(document.domain)>']
HOSTILE_CHECK = {
    "name": "hostile_labels",
    "kind": "row_count",
    "table": "analytics.hostile_events",
    "timestamp_column": "ts",
    "dimensions": ["label"],
    "owner": '"><img src=x onerror=alert("owner")>',
    "labels": {"team": "<script>alert('team')</script>"},
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium() is None:
        message = "headless Chromium not installed (apt-get install chromium)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with Browser() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    tab = browser.page()
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, live_demo_warehouse: Path) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("pages-browser")
    warehouse = directory / "demo.duckdb"
    shutil.copy(live_demo_warehouse, warehouse)
    # a table whose values are attacks: they reach the page as segment names
    write(
        warehouse,
        "CREATE TABLE analytics.hostile_events AS SELECT ts, label FROM"
        " (SELECT unnest(generate_series(now()::TIMESTAMP - INTERVAL 8 WEEK, now()::TIMESTAMP,"
        " INTERVAL 7 MINUTE)) AS ts), (SELECT unnest(?::VARCHAR[]) AS label)",
        [HOSTILE],
    )
    document = demo_document(directory)
    document["checks"].append(HOSTILE_CHECK)
    config = write_config(directory / "config.yaml", document)
    process = DaemonProcess(["run", "-c", str(config)], free_port(), log=directory / "daemon.log")
    try:
        process.wait_ready(60)
        process.wait_all_ran(120)
        yield process
    finally:
        process.stop()


def url(daemon: DaemonProcess, path: str) -> str:
    return f"http://127.0.0.1:{daemon.port}{path}"


def rows(page: Page) -> dict[str, str]:
    found = page.evaluate(
        "[...document.querySelectorAll('tr[data-check]')].map(r => [r.dataset.check, r.dataset.state])"
    )
    return dict(found)


def test_the_overview_lists_every_demo_check_with_its_state(daemon: DaemonProcess, page: Page) -> None:
    firing = {check for check, _ in INCIDENTS}
    page.open(url(daemon, "/"))
    shown = rows(page)
    assert set(shown) == {c["name"] for c in daemon.checks()}
    assert {name for name, state in shown.items() if state == "firing"} == firing
    assert {state for name, state in shown.items() if name not in firing} == {"ok"}
    # the counts above the table agree
    assert page.evaluate("document.querySelector('.counts').innerText").startswith(f"all {len(shown)}")


def test_the_firing_germany_chart_has_a_vertex_per_bucket_and_the_band(
    daemon: DaemonProcess, page: Page
) -> None:
    page.open(url(daemon, "/checks/revenue?days=56"))
    chart = "document.querySelector('section[data-segment=\"DE\"]')"
    assert page.evaluate(f"{chart}.dataset.status") == "firing"
    vertices = page.evaluate(f"{chart}.querySelector('polyline.value').points.numberOfItems")
    band = page.evaluate(f"[...{chart}.querySelectorAll('polygon.band')].map(p => p.points.numberOfItems)")
    # the buckets the daemon keeps for DE (its whole lookback), read from its state store
    state = sqlite3.connect(daemon_state(daemon))
    (kept,) = state.execute(
        "SELECT count(*) FROM series_history WHERE check_name = 'revenue' AND segment = 'DE'"
    ).fetchone()
    assert vertices == kept > 24 * 7 * 7
    assert band and sum(band) >= 2 * (kept - 24 * 7)  # upper and lower edge, judged buckets
    # the band is drawn where the value lies, and the outage's buckets are red dots
    box = page.evaluate(f"{chart}.querySelector('polygon.band').getBBox().height")
    assert box > 20
    assert page.evaluate(f"{chart}.querySelectorAll('circle.anomaly').length") >= 2


def daemon_state(daemon: DaemonProcess) -> Path:
    assert daemon.log_path is not None
    document = yaml.safe_load((daemon.log_path.parent / "config.yaml").read_text())
    return Path(document["state"]["path"])


def test_hostile_values_execute_nothing_and_show_as_text(daemon: DaemonProcess, page: Page) -> None:
    for path in ("/", "/checks/hostile_labels", "/?team=<script>alert('team')</script>"):
        page.open(url(daemon, path))
        assert page.dialogs() == []
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.evaluate("[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
                             ".some(a => a.name.startsWith('on'))).length") == 0  # fmt: skip
    text = page.evaluate("document.body.innerText")
    assert "<script>alert('team')</script>" in text  # as text, in the team filter
    page.open(url(daemon, "/checks/hostile_labels"))
    segments = page.evaluate(
        "[...document.querySelectorAll('section.series')].map(s => s.dataset.segment)"
    )
    assert set(segments) == {"", *HOSTILE}  # "" is the check's total
    headings = page.evaluate("[...document.querySelectorAll('section.series h3')].map(h => h.innerText)")
    assert all(any(value in h for h in headings) for value in HOSTILE)
    assert page.dialogs() == []


def test_the_overview_works_with_javascript_off(daemon: DaemonProcess, page: Page) -> None:
    page.scripts(False)
    try:
        page.open(url(daemon, "/"))
        # a click on the "firing" count filters, a click on a column sorts, the form submits
        page.click("a.count:nth-child(2)")
        assert page.evaluate("location.search") == "?state=firing"
        assert set(rows(page).values()) == {"firing"}
        page.click("th:nth-child(2) a")
        assert page.evaluate("location.search") == "?state=firing&sort=name"
        names = list(rows(page))
        assert names == sorted(names)
        page.open(url(daemon, "/?team=platform"))
        page.click("form.filters button")
        assert set(rows(page)) == {"orders_rows", "orders_freshness", "events_freshness"}
        page.click('a[href="/checks/orders_rows"]')
        assert page.evaluate("document.querySelectorAll('section.series svg.chart').length") == 1
    finally:
        page.scripts(True)
