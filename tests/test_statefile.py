"""The SQLite state file on a real volume: a directory the daemon cannot write, a second daemon
on the same file, the file deleted under a running daemon, a full volume and a file-size limit.

Each is a real condition, not a mock: a directory without write permission (as root, the daemon
runs without the capabilities that bypass permissions), a tiny tmpfs of its own (in a private
mount namespace), and the kernel's RLIMIT_FSIZE on the daemon process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.errors import StateStoreError
from monitor.store import StateStore
from tests.conftest import demo_document, free_port, in_ci, write_config
from tests.daemon_process import KPI_MONITOR, DaemonProcess
from tests.test_faults import http_get, wait_until

TOKEN = "state-file-token-0123"
# as root, run without the capabilities that let root write where permissions say no
UNPRIVILEGED = (
    ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    if os.geteuid() == 0
    else []
)


def readiness(port: int) -> tuple[int, dict[str, Any]]:
    status, body = http_get(port, "/readyz")
    return status, json.loads(body)


@pytest.fixture
def state_config(tmp_path: Path, live_demo_warehouse: Path) -> Path:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path)
    document["state"]["path"] = str(tmp_path / "state" / "kpimon-state.db")
    return write_config(tmp_path / "kpi.yaml", document)


def start(config: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """``kpi-monitor run`` that is expected to stop at once."""
    return subprocess.run(
        [*prefix, KPI_MONITOR, "run", "-c", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KPIMON_LOG_FORMAT": "json"},
    )


# === a state directory the daemon cannot write ===================================================


@pytest.mark.parametrize("existing", [True, False], ids=["existing store", "first start"])
def test_a_read_only_state_directory_stops_the_start_naming_it_and_keeping_the_file(
    existing: bool, state_config: Path, tmp_path: Path
) -> None:
    if UNPRIVILEGED and shutil.which("setpriv") is None:
        if in_ci():
            pytest.fail("setpriv (util-linux) is needed to drop root's capabilities")
        pytest.skip("setpriv is not installed")
    directory = tmp_path / "state"
    directory.mkdir()
    if existing:
        StateStore(directory / "kpimon-state.db").close()
    before = sorted(p.name for p in directory.iterdir())
    directory.chmod(0o555)
    try:
        done = start(state_config, *UNPRIVILEGED)
    finally:
        directory.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert f"{directory} is not writable by this process" in done.stderr
    assert "keep the file, it holds the open alerts" in done.stderr
    assert "corrupt" not in done.stderr and "move it aside" not in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in directory.iterdir()) == before


# === one daemon per state file ===================================================================


def test_a_second_daemon_on_the_same_state_file_is_refused_with_exit_2_until_the_first_stops(
    state_config: Path, tmp_path: Path
) -> None:
    first = DaemonProcess(["run", "-c", str(state_config)], free_port(), log=tmp_path / "a.log")
    try:
        first.wait_ready()
        second = start(state_config)
        assert second.returncode == 2, second.stderr
        state = tmp_path / "state" / "kpimon-state.db"
        assert f"state store {state} is in use by another kpi-monitor" in second.stderr
        assert f"pid {first.process.pid} on " in second.stderr
        assert "would each send every alert" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.get("/readyz")[0] == 200, "the first daemon goes on"
    finally:
        assert first.stop()[0] == 0
    # the lock goes with the process that held it
    after = DaemonProcess(["run", "-c", str(state_config)], free_port(), log=tmp_path / "b.log")
    try:
        after.wait_ready()
    finally:
        after.stop()


def test_a_state_store_used_in_a_with_block_gives_its_lock_back_as_the_block_ends(
    tmp_path: Path,
) -> None:
    config = parse_config(demo_document(tmp_path)).state
    with StateStore.open(config) as store:
        store.ping()
        with pytest.raises(StateStoreError, match="in use by another kpi-monitor"):
            StateStore.open(config)
    with StateStore.open(config) as again:  # the lock went with the block
        again.ping()


# === a state file deleted under a running daemon =================================================


@pytest.fixture
def daemon(state_config: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
    running = Daemon(
        parse_config(yaml.safe_load(state_config.read_text())), host="127.0.0.1", port=0
    )
    running.start()
    yield running
    running.stop()


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_state_file_deleted_while_running_makes_readyz_503_and_writes_are_refused(
    daemon: Daemon, tmp_path: Path
) -> None:
    port = daemon.port
    wait_until(lambda: readiness(port)[0] == 200, 15, "/readyz to say ready")
    state = tmp_path / "state" / "kpimon-state.db"
    for name in ("kpimon-state.db", "kpimon-state.db-wal", "kpimon-state.db-shm"):
        (tmp_path / "state" / name).unlink()
    status, answer = readiness(port)
    assert status == 503, answer
    assert [p for p in answer["problems"] if f"state store {state} was deleted" in p], answer
    assert http_get(port, "/healthz")[0] == 200
    mute = {"until": "2030-01-01T00:00:00Z", "reason": "backfill"}
    status, answer = post(port, "/api/v1/checks/revenue/mute", mute)
    assert status == 503 and "was deleted while the daemon ran" in answer["error"]
    deployment = {"id": "d1", "environment": "staging", "models": ["fct_orders"]}
    status, answer = post(port, "/api/v1/deployments", deployment)
    assert status == 503 and "was deleted while the daemon ran" in answer["error"]
    assert http_get(port, "/api/v1/deployments/d1")[0] == 404
    assert not state.exists(), "nothing recreated a file that would miss the state"


# === no room to grow ==============================================================================


def test_a_file_size_limit_that_leaves_no_room_makes_readyz_503_until_it_is_raised(
    state_config: Path, tmp_path: Path
) -> None:
    if shutil.which("prlimit") is None:
        if in_ci():
            pytest.fail("prlimit (util-linux) is needed")
        pytest.skip("prlimit is not installed")
    limit = 512 * 1024  # less than 1 MiB above what the state files take after the first runs
    port = free_port()
    daemon = DaemonProcess(["run", "-c", str(state_config)], port, log=tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        pid = str(daemon.process.pid)
        subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={limit}:unlimited"], check=True)
        _, answer = wait_until(
            lambda: (r := readiness(port))[0] == 503 and r, 15, "/readyz to say 503"
        )
        assert [p for p in answer["problems"] if "file-size limit (ulimit -f, 512 KiB)" in p], (
            answer
        )
        assert http_get(port, "/healthz")[0] == 200
        subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited"], check=True)
        wait_until(lambda: readiness(port)[0] == 200, 15, "/readyz to recover")
    finally:
        daemon.stop()


# The daemon on a 16 MiB tmpfs of its own (a private mount namespace, so no privilege is
# needed where user namespaces are allowed), filled to half a MiB; a line on stdin frees it.
ON_A_SMALL_VOLUME = """
set -e
dir="$1"
shift
mount -t tmpfs -o size=16m kpimon-state "$dir"
head -c 15872k /dev/zero > "$dir/filler"
"$@" &
echo "$!"
read _
rm "$dir/filler"
wait
"""


def test_a_full_state_volume_makes_readyz_503_and_more_room_makes_it_ready(
    state_config: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    port = free_port()
    daemon = [KPI_MONITOR, "run", "-c", str(state_config), "--port", str(port)]
    shell = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount",
         "sh", "-c", ON_A_SMALL_VOLUME, "sh", str(directory), *daemon],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KPIMON_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert shell.stdin is not None and shell.stdout is not None and shell.stderr is not None
    first = shell.stdout.readline().strip()
    if not first.isdigit():
        shell.wait(timeout=10)
        reason = shell.stderr.read().strip()
        if in_ci():
            pytest.fail(f"cannot mount a private tmpfs: {reason}")
        pytest.skip(f"cannot mount a private tmpfs here: {reason}")
    try:
        wait_until(lambda: _answers(port), 30, "the daemon to answer")
        _, answer = wait_until(
            lambda: (r := readiness(port))[0] == 503 and r, 15, "/readyz to say 503"
        )
        assert [p for p in answer["problems"] if "KiB free on its volume" in p], answer
        assert http_get(port, "/healthz")[0] == 200
        shell.stdin.write("more room\n")
        shell.stdin.flush()
        wait_until(lambda: readiness(port)[0] == 200, 15, "/readyz to recover")
    finally:
        os.kill(int(first), signal.SIGTERM)
        shell.wait(timeout=20)
        for stream in (shell.stdin, shell.stdout, shell.stderr):
            stream.close()


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/healthz")[0] == 200
    except OSError:
        return False
