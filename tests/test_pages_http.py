"""The pages over real sockets, from a daemon running the demo in this process: status codes,
headers, what each page lists, and what it must never show."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.demo import INCIDENTS
from tests.conftest import demo_document
from tests.slack_server import SlackServer
from tests.test_server import call

TOKEN = "s3cret-api-token"
TENANT = "tenant-7f3a9c"  # an environment value interpolated into a check's filter


@pytest.fixture
def daemon(
    tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch, slack: SlackServer
) -> Iterator[Daemon]:
    monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
    monkeypatch.setenv("DEMO_TENANT", TENANT)
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path, token=slack.token, api_url=slack.url, group_wait="0s")
    rows = next(c for c in document["checks"] if c["name"] == "orders_rows")
    rows["where"] = "status <> '${DEMO_TENANT}'"
    running = Daemon(parse_config(document), host="127.0.0.1", port=0)
    running.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        checks = json.loads(call(running, "GET", "/api/v1/checks")[2])["checks"]
        if all(c["last_run"] is not None for c in checks):
            break
        time.sleep(0.2)
    yield running
    running.stop()


def page(daemon: Daemon, path: str) -> tuple[int, dict[str, str], str]:
    status, headers, body = call(daemon, "GET", path)
    return status, dict(headers.items()), body.decode()


def test_the_overview_lists_every_check_with_its_state_under_a_strict_policy(
    daemon: Daemon,
) -> None:
    status, headers, html = page(daemon, "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    states = dict(re.findall(r'<tr data-check="([a-z0-9_]+)" data-state="([a-z_]+)">', html))
    assert set(states) == {c.name for c in daemon.config.checks}
    assert {n for n, s in states.items() if s == "firing"} == {c for c, _ in INCIDENTS}


def test_filters_narrow_the_overview_and_a_bad_one_is_a_clear_400(daemon: Daemon) -> None:
    _, _, html = page(daemon, "/?team=platform&sort=name")
    assert 'data-check="orders_rows"' in html and 'data-check="revenue"' not in html
    status, headers, html = page(daemon, "/?state=exploded")
    assert status == 400 and headers["Content-Type"].startswith("text/html")
    assert "state: expected one of firing, error, muted" in html


def test_a_check_page_shows_every_series_the_sql_and_the_alert_history(daemon: Daemon) -> None:
    status, _, html = page(daemon, "/checks/revenue")
    assert status == 200
    for segment in ("DE", "US", "__other__"):
        assert f'data-segment="{segment}"' in html
    assert 'data-status="firing"' in html
    revenue = json.loads(page(daemon, "/api/v1/checks/revenue")[2])
    episode = next(s for s in revenue["series"] if s["segment"] == "DE")["alert"]["episode"]
    # the alert history, without any channel needed (the replayed history may hold earlier
    # episodes of the demo's noisier series: the live one is the newest)
    assert f"episode {episode} opened" in html
    # where revenue's drop came from, above the charts
    where = html.index('<p class="explanation">Where: DE -')
    assert "drop in revenue" in html[where : where + 200] and where < html.index("data-segment=")
    assert "FROM &#34;analytics&#34;.&#34;fct_orders&#34;" in html  # the SQL it sends
    for name in (c.name for c in daemon.config.checks):
        assert page(daemon, f"/checks/{name}")[0] == 200


def test_a_check_page_never_shows_a_secret_or_an_interpolated_environment_value(
    daemon: Daemon, slack: SlackServer
) -> None:
    _, _, html = page(daemon, "/checks/orders_rows")
    assert TENANT not in html
    assert "${DEMO_TENANT}" in html  # in the config and in the SQL, as written
    every_page = "".join(page(daemon, p)[2] for p in ("/", "/deployments", "/checks/revenue"))
    for secret in (slack.token, TOKEN, TENANT):
        assert secret not in every_page + html


def test_unknown_checks_and_bad_windows_answer_in_html(daemon: Daemon) -> None:
    status, headers, html = page(daemon, "/checks/no_such_check")
    assert status == 404 and "no check named &#39;no_such_check&#39;" in html
    assert headers["Content-Type"].startswith("text/html")
    assert page(daemon, "/checks/revenue?days=0")[0] == 400
    assert page(daemon, "/checks/revenue?days=abc")[0] == 400
    assert page(daemon, "/checks/revenue?days=7")[0] == 200


def test_the_pages_are_read_only(daemon: Daemon) -> None:
    for path in ("/", "/checks/revenue", "/deployments"):
        status, _, _ = call(daemon, "POST", path, b"{}", token=TOKEN)
        assert status == 405


def test_deployments_are_listed_and_each_has_its_page(daemon: Daemon) -> None:
    body = {"id": "ci/build:42", "environment": "prod", "models": ["fct_orders"],
            "commit": "0123456789abcdef", "url": "https://ci.example.com/builds/42"}  # fmt: skip
    status, _, _ = call(daemon, "POST", "/api/v1/deployments", json.dumps(body).encode(), TOKEN)
    assert status == 201
    _, _, listing = page(daemon, "/deployments")
    href = "/deployments/" + urllib.parse.quote("ci/build:42", safe="")
    assert f'href="{href}"' in listing
    status, _, html = page(daemon, href)
    assert status == 200
    assert 'href="/checks/revenue"' in html and "0123456789abcdef" in html
    _, _, check = page(daemon, "/checks/revenue")
    assert f'<a class="marker" href="{href}">' in check  # the deployment on the check's charts
    assert page(daemon, "/deployments/nope")[0] == 404


def test_the_stylesheet_is_served_by_the_daemon_itself(daemon: Daemon) -> None:
    status, headers, css = page(daemon, "/static/page.css")
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8"
    assert "url(" not in css and "@import" not in css  # nothing fetched from elsewhere
