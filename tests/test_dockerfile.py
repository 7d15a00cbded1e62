"""The Dockerfile: hadolint with no finding at all, and the properties the chart relies on.

No Docker engine runs here, so the image is not built by the tests: what a build would show
(dependencies resolve, `kpi-monitor --help` runs in the build stage) is left to a machine with one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import k8s_tools as kt

TEXT = kt.DOCKERFILE.read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in TEXT.splitlines() if not line.lstrip().startswith("#")),
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def build_args() -> dict[str, str]:
    args = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def test_hadolint_reports_nothing() -> None:
    hadolint = kt.require_binary("hadolint", "HADOLINT")
    result = subprocess.run(
        [
            hadolint,
            "--no-color",
            "--failure-threshold",
            "style",
            "--format",
            "json",
            str(kt.DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and not findings, json.dumps(findings, indent=2) + result.stderr


def test_multi_stage_on_a_pinned_slim_python() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "multi-stage: build, then a runtime without build leftovers"
    args = build_args()
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.(1[1-9])\.\d+-slim(-\w+)?", image), (
            f"base image {image!r} must be python:<major.minor.patch>-slim[-<debian>]"
        )
    project = tomllib.loads((kt.REPO_ROOT / "pyproject.toml").read_text())["project"]
    minimum = re.search(r">=\s*3\.(\d+)", project["requires-python"])
    assert minimum
    base = re.search(r"python:3\.(\d+)", args["PYTHON_IMAGE"])
    assert base
    base_minor = int(base.group(1))
    assert base_minor >= int(minimum.group(1))


def test_dependencies_are_a_cached_layer_before_the_source() -> None:
    build = stages()[0]
    copies = [(i, rest) for i, (keyword, rest) in enumerate(build) if keyword == "COPY"]
    runs = [(i, rest) for i, (keyword, rest) in enumerate(build) if keyword == "RUN"]
    pyproject_copy = next(i for i, rest in copies if rest.split()[0] == "pyproject.toml")
    source_copy = next(i for i, rest in copies if rest.split()[0] == "monitor")
    deps_install = next(i for i, rest in runs if "-r /tmp/requirements.txt" in rest)
    assert pyproject_copy < deps_install < source_copy
    package_install = next(i for i, rest in runs if "--no-deps ." in rest)
    assert package_install > source_copy


def test_runtime_stage() -> None:
    runtime = stages()[-1]
    keywords = [keyword for keyword, _ in runtime]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "non-root numeric UID"
    assert users[-1].split(":")[0] == "10001"  # values.yaml podSecurityContext.runAsUser
    entrypoint = [rest for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["kpi-monitor", "run"]
    assert "CMD" not in keywords or keywords.index("CMD") < keywords.index("ENTRYPOINT")
    assert ("EXPOSE", "9108") in runtime
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies and all(rest.startswith("--from=") for rest in copies), (
        "runtime copies only build output"
    )
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    for setting in (
        "HOME=/tmp",
        "TMPDIR=/tmp",
        "PYTHONDONTWRITEBYTECODE=1",
        "KPIMON_LOG_FORMAT=json",
    ):
        assert setting in env, f"{setting}: the root filesystem is read-only, logs are JSON"
    assert "/var/lib/kpi-monitor" in " ".join(rest for keyword, rest in runtime if keyword == "RUN")


@pytest.mark.parametrize(
    "label",
    [
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.base.name",
    ],
)
def test_oci_labels(label: str) -> None:
    labels = " ".join(rest for keyword, rest in stages()[-1] if keyword == "LABEL")
    assert re.search(rf"{re.escape(label)}=\S", labels)


def test_licence_label_matches_the_project() -> None:
    project = tomllib.loads((kt.REPO_ROOT / "pyproject.toml").read_text())["project"]
    licence = project["license"]
    licence = licence["text"] if isinstance(licence, dict) else licence
    assert f'org.opencontainers.image.licenses="{licence}"' in TEXT


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = [
        line.strip()
        for line in (kt.REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**", "ignore everything, then allow what the image needs"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from="):
            copied.update(shlex.split(rest)[:-1])
    for source in copied:
        assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"


# ---- the read-only root filesystem, without an engine -------------------------------------------

WRITE_SYSCALLS = (
    "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,"
    "link,linkat,symlink,symlinkat,truncate,chmod,fchmodat"
)
SYSCALL_RE = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)(?:\s+(\w+))?")


def written_paths(trace: str, cwd: Path) -> set[str]:
    """Paths an strace log shows the process creating, changing or removing."""
    paths = set()
    for line in trace.splitlines():
        match = SYSCALL_RE.match(line)
        if not match:
            continue
        syscall, args, _, errno = match.groups()
        if syscall in ("open", "openat"):
            if not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", args):
                continue
        elif syscall in ("mkdir", "mkdirat") and errno == "EEXIST":
            continue  # an existing directory is not written to
        for path in re.findall(r'"((?:[^"\\]|\\.)*)"', args):
            relative = not path.startswith("/")
            at_syscall = syscall in ("openat", "mkdirat", "unlinkat", "fchmodat")
            if relative and at_syscall and not args.startswith("AT_FDCWD"):
                paths.add(f"<relative to a directory fd> {path}")
                continue
            paths.add(str((cwd / path).resolve()) if not path.startswith("/") else path)
    return paths


def test_daemon_writes_only_to_tmp_and_its_state_directory(tmp_path: Path) -> None:
    """What a read-only root filesystem needs, checked with strace instead of an engine: the
    daemon (here `kpi-monitor demo`, whose warehouse also lives in the state directory) writes
    nothing outside /tmp and its state directory, which is its working directory as in the
    image (WORKDIR /var/lib/kpi-monitor)."""
    strace = kt.require_binary("strace", "STRACE")
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KPIMON_", "SLACK_"))}
    env.update(
        {
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "KPIMON_LOG_FORMAT": "json",
            "PYTHONPATH": str(kt.REPO_ROOT),
        }
    )
    trace_file = tmp_path / "strace.log"
    log_file = tmp_path / "daemon.log"
    command = [
        strace,
        "-f",
        "-qq",
        "-e",
        f"trace={WRITE_SYSCALLS}",
        "-o",
        str(trace_file),
        *kt.daemon_command(),
        "demo",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--dir",
        str(state),
    ]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        ran_every_check = False
        while time.monotonic() < deadline and not ran_every_check:
            assert process.poll() is None, log_file.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    metrics = r.read().decode()
            except OSError:
                time.sleep(0.5)
                continue
            runs: dict[str, float] = {}
            for check, value in re.findall(
                r'^kpimon_check_runs_total\{check="([^"]+)",outcome="[^"]+"\} (\S+)$', metrics, re.M
            ):
                runs[check] = runs.get(check, 0.0) + float(value)
            ran_every_check = bool(runs) and all(count >= 1 for count in runs.values())
            time.sleep(0.5)
        assert ran_every_check, "the checks did not all run: " + log_file.read_text()[-3000:]
    finally:
        stop_traced(process, trace_file)
    allowed = ("/tmp/", str(state) + "/", "/dev/null", "/dev/shm/")
    written = written_paths(trace_file.read_text(), state)
    outside = sorted(
        p for p in written if not p.startswith(allowed) and p not in ("/tmp", str(state))
    )
    assert not outside, f"writes outside /tmp and the state directory: {outside}"
    assert any(p.startswith(str(state) + "/") for p in written), "the trace saw no state write"


def stop_traced(process: subprocess.Popen[bytes], trace_file: Path) -> None:
    """SIGTERM the traced daemon (a clean shutdown writes state too), not strace: strace would
    detach and leave it running. Its pid starts the first line of the trace."""
    first = trace_file.read_text().split(maxsplit=1) if trace_file.exists() else []
    daemon_pid = int(first[0]) if first and first[0].isdigit() else None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if daemon_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon_pid, sig)
        else:
            process.send_signal(sig)
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_written_paths_reads_strace_output() -> None:
    trace = "\n".join(
        [
            '10 openat(AT_FDCWD, "/usr/lib/x.so", O_RDONLY|O_CLOEXEC) = 3',
            '10 openat(AT_FDCWD, "/opt/venv/cache.bin", O_WRONLY|O_CREAT|O_TRUNC, 0644) = -1 EROFS',
            '11 openat(AT_FDCWD, "state.db", O_RDWR|O_CREAT|O_CLOEXEC, 0644) = 4',
            '11 mkdir("/var/lib/kpi-monitor", 0777) = -1 EEXIST (File exists)',
            '11 rename("/tmp/a", "/etc/b") = 0',
            '12 openat(7, "rel", O_WRONLY|O_CREAT, 0644) = 5',
        ]
    )
    assert written_paths(trace, Path("/var/lib/kpi-monitor")) == {
        "/opt/venv/cache.bin",
        "/var/lib/kpi-monitor/state.db",
        "/tmp/a",
        "/etc/b",
        "<relative to a directory fd> rel",
    }


def test_package_data_reaches_the_image() -> None:
    """The image installs the package from a wheel (not editable): every non-Python file under
    monitor/ must be declared in [tool.setuptools.package-data], or `kpi-monitor demo` and
    friends miss it there while every test from the source tree passes."""
    tool = tomllib.loads((kt.REPO_ROOT / "pyproject.toml").read_text()).get("tool", {})
    patterns: list[str] = tool.get("setuptools", {}).get("package-data", {}).get("monitor", [])
    package = kt.REPO_ROOT / "monitor"
    missing_files = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*"))
        if path.is_file()
        and path.suffix not in (".py", ".pyc")
        and "__pycache__" not in path.parts
        and not any(path.relative_to(package).match(p) for p in patterns)
    ]
    assert not missing_files, (
        f"monitor/ files not installed by `pip install .`: {missing_files}; "
        "add them to [tool.setuptools.package-data] monitor = [...]"
    )
