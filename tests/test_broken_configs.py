"""A corpus of broken configuration files, each refused by ``kpi-monitor validate`` the way a
user needs: exit code 2, the file named, the invalid field's path and the problem, no traceback.

Each file in ``tests/broken_configs/`` starts with ``# expect: <field path>: <message fragment>``
(an empty fragment: any message, as long as it is at that field).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.cli import main

CORPUS = Path(__file__).with_name("broken_configs")
EXPECT = re.compile(r"^# expect: (?P<path>.+?):(?: (?P<fragment>.*))?$")
FILES = sorted(CORPUS.glob("*.yaml"))


def expectation(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    match = EXPECT.match(first)
    assert match, f"{path.name} must start with '# expect: <field path>: <fragment>'"
    return match["path"], (match["fragment"] or "").strip()


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 20


@pytest.mark.parametrize("config", FILES, ids=[f.stem for f in FILES])
def test_a_broken_config_is_refused_with_the_file_the_field_path_and_the_problem(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KPIMON_TEST_SURELY_UNSET", raising=False)
    monkeypatch.chdir(config.parent)
    field, fragment = expectation(config)
    code = main(["validate", "-c", str(config)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert err.startswith(f"invalid configuration {config}:"), err
    problems = [line.strip() for line in err.splitlines()[1:]]
    at_field = [p for p in problems if p.startswith(f"{field}: ") or p.startswith(f"{field}, ")]
    assert at_field, f"no problem reported at {field!r}: {problems}"
    assert any(fragment in p for p in at_field), f"{fragment!r} not in {at_field}"


def test_a_config_error_does_not_echo_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A state URL with a typo in its scheme still holds the password: the error names the
    field and the problem, not the value."""
    code = main(["validate", "-c", str(CORPUS / "state_url_not_postgres.yaml")])
    out, err = capsys.readouterr()
    assert code == 2
    assert "state.url" in err
    assert "hunter2-canary-password" not in out + err
