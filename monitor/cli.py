"""The ``kpi-monitor`` command: run, check, validate, demo.

Exit codes: 0 success (``check``: all normal), 1 an anomaly (``check``), 2 an error (bad config,
unreachable warehouse, failed check).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor import __version__, logs
from monitor.config import Config, json_schema, load_config
from monitor.durations import parse_duration
from monitor.errors import ConfigError, KpiMonitorError

EXIT_OK = 0
EXIT_ANOMALY = 1
EXIT_ERROR = 2

log = logging.getLogger("monitor.cli")


def _config_path(arg: str | None) -> str:
    path = arg or os.environ.get("KPIMON_CONFIG")
    if not path:
        raise ConfigError("(no file)", ["give the config file with -c PATH or KPIMON_CONFIG"])
    return path


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon

    daemon = Daemon(_load(args), host=args.host, port=args.port)
    base = f"http://127.0.0.1:{daemon.port}"
    print(
        f"kpi-monitor: page at {base}/ ; metrics at {base}/metrics",
        file=sys.stderr,
        flush=True,
    )
    daemon.run_forever()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor import demo

    directory = Path(args.dir).resolve()
    os.environ["KPIMON_DEMO_DIR"] = str(directory)
    times = demo.build(directory / "demo.duckdb")
    print(
        f"kpi-monitor demo: warehouse written to {directory / 'demo.duckdb'}"
        f" (incidents live as of {times.now:%Y-%m-%d %H:%M} UTC)",
        file=sys.stderr,
    )
    args.config = args.config or str(_demo_config())
    return cmd_run(args)


def _demo_config() -> Path:
    return Path(__file__).resolve().parent / "demo.yaml"


def cmd_check(args: argparse.Namespace) -> int:
    from monitor.engine import Engine
    from monitor.exporter import Metrics
    from monitor.report import render_table
    from monitor.store import StateStore
    from monitor.warehouse import open_warehouses

    config = _load(args)
    names = args.check or [c.name for c in config.checks]
    unknown = [n for n in names if config.check(n) is None]
    if unknown:
        raise ConfigError(config.source, [f"no check named {n!r}" for n in unknown])
    # a one-off pass: judged in memory, so it neither alerts nor disturbs a daemon's state
    engine = Engine(
        config, open_warehouses(config), StateStore(":memory:"), Metrics(), announce=False
    )
    results = [engine.run(name) for name in names]
    print(render_table(results, engine))
    if any(r.outcome == "error" for r in results):
        return EXIT_ERROR
    return EXIT_ANOMALY if any(r.outcome == "anomaly" for r in results) else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    config = _load(args)
    print(f"{config.source}: valid, {len(config.checks)} checks")
    if not args.connect:
        return EXIT_OK
    from monitor.warehouse import open_warehouse

    failed = False
    for name, settings in config.all_warehouses().items():
        try:
            warehouse = open_warehouse(name, settings)
            warehouse.ping()
            warehouse.close()
            print(f"warehouse {name} ({settings.kind}): ok")
        except KpiMonitorError as exc:
            failed = True
            print(f"warehouse {name} ({settings.kind}): FAILED: {exc}")
    return EXIT_ERROR if failed else EXIT_OK


EXIT_TIMEOUT = 3
_GRAINS = {"hour": 3600, "day": 86400}


def cmd_backtest(args: argparse.Namespace) -> int:
    """Replay history through the daemon's detection and alerting, causally."""
    if args.csv:
        return _backtest_csv(args)
    if not args.check:
        raise KpiMonitorError("give --csv PATH, or -c CONFIG with --check NAME")
    return _backtest_check(args)


def _backtest_csv(args: argparse.Namespace) -> int:
    import pandas as pd

    from monitor.alerts.state import AlertPolicy
    from monitor.backtest import infer_bucket_seconds, replay
    from monitor.detect import DetectorSpec

    if not args.out:
        raise KpiMonitorError("--csv needs --out OUT.csv for the scored rows")
    try:
        frame = pd.read_csv(args.csv)
    except (OSError, ValueError) as exc:
        raise KpiMonitorError(f"cannot read {args.csv}: {exc}") from None
    for column in (args.timestamp_column, args.value_column):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise KpiMonitorError(f"{args.csv} has no column {column!r} (columns: {found})")
    if args.grain == "auto":
        seconds = infer_bucket_seconds(frame[args.timestamp_column])
    elif args.grain in _GRAINS:
        seconds = _GRAINS[args.grain]
    else:
        seconds = int(parse_duration(args.grain).total_seconds())
    spec_args: dict[str, object] = {"bucket_seconds": seconds}
    if args.sensitivity is not None:
        spec_args["sensitivity"] = args.sensitivity
    result = replay(
        frame,
        DetectorSpec(**spec_args),  # type: ignore[arg-type]
        AlertPolicy(open_after=args.alert_after, resolve_after=args.resolve_after),
        timestamp_column=args.timestamp_column,
        value_column=args.value_column,
    )
    result.rows.to_csv(args.out, index=False)
    print(f"{len(result.rows)} rows in {seconds}s buckets -> {args.out}")
    _print_episodes("", result.episodes)
    return EXIT_OK


def _backtest_check(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import pandas as pd

    from monitor.backtest import replay
    from monitor.engine import alert_policy, detector_spec
    from monitor.queries import series_query
    from monitor.series import normalise
    from monitor.warehouse import open_warehouses

    config = _load(args)
    check = config.check(args.check)
    if check is None:
        raise ConfigError(config.source, [f"no check named {args.check!r}"])
    if check.kind == "freshness":
        raise KpiMonitorError(f"{check.name} is a freshness check: it has no series to replay")
    warehouse = open_warehouses(config)[config.warehouse_of(check)]
    now = datetime.now(UTC)
    query = series_query(check, warehouse.dialect, now - parse_duration(args.since))
    found = normalise(warehouse.query(query.sql, query.params), check, now)
    if not found:
        print(f"{check.name}: no data since {args.since} ago")
        return EXIT_OK
    replays = {}
    for segment, series in found.items():
        frame = pd.DataFrame({"timestamp": series.index, "value": series.to_numpy()})
        replays[segment] = replay(frame, detector_spec(check), alert_policy(check), aggregate="sum")
        _print_episodes(
            f"{check.name} [{segment}]" if segment else check.name, replays[segment].episodes
        )
    if args.plot:
        from monitor.alerts.charts import render_chart

        segment = args.segment if args.segment is not None else next(iter(replays))
        if segment not in replays:
            raise KpiMonitorError(f"no segment {segment!r}; segments: {', '.join(replays)}")
        buckets = replays[segment].buckets
        png = render_chart(buckets, title=f"{check.name} [{segment}]" if segment else check.name)
        Path(args.plot).write_bytes(png)
        print(f"chart of {len(buckets)} buckets -> {args.plot}")
    return EXIT_OK


def _print_episodes(name: str, episodes: list[Any]) -> None:
    label = f"{name}: " if name else ""
    if not episodes:
        print(f"{label}no alert would have fired")
    for episode in episodes:
        resolved = (
            f", resolved {episode.resolved:%Y-%m-%d %H:%M}"
            if episode.resolved is not None
            else ", still open"
        )
        print(
            f"{label}alert at {episode.opened:%Y-%m-%d %H:%M} "
            f"(deviating since {episode.since:%Y-%m-%d %H:%M}){resolved}"
        )


def cmd_deployment_record(args: argparse.Namespace) -> int:
    from monitor.client import DaemonClient, token_from_env
    from monitor.dbt import ArtifactError, compact_manifest, ran_nodes

    body: dict[str, object] = {
        "id": args.id,
        "environment": args.environment,
        "models": args.model or [],
    }
    for key in ("commit", "expect_change"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.link:
        body["url"] = args.link
    try:
        if args.dbt_manifest:
            body["manifest"] = {
                k: v.model_dump()
                for k, v in compact_manifest(_read_json(args.dbt_manifest)).items()
            }
        if args.dbt_run_results:
            body["ran"] = sorted(ran_nodes(_read_json(args.dbt_run_results)))
    except ArtifactError as exc:
        raise KpiMonitorError(f"{exc}") from None
    answer = DaemonClient(args.url, token_from_env()).call("POST", "/api/v1/deployments", body)
    watched = ", ".join(c["name"] for c in answer["checks"]) or "no check"
    print(
        f"deployment {answer['id']} recorded: {answer['status']}; "
        f"watching {watched} until {answer['watch_until']}"
    )
    if answer["status"] == "failed":
        print(f"failed: {answer['reason']}")
        return EXIT_ANOMALY
    return EXIT_OK


def _read_json(path: str) -> object:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise KpiMonitorError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise KpiMonitorError(f"{path} is not JSON: {exc}") from None


def cmd_deployment_verify(args: argparse.Namespace) -> int:
    from monitor.client import DaemonClient, token_from_env

    client = DaemonClient(args.url, token_from_env())
    deadline = time.monotonic() + parse_duration(args.timeout).total_seconds()
    while True:
        answer = client.call("GET", f"/api/v1/deployments/{urllib.parse.quote(args.id, safe='')}")
        if answer["status"] != "watching" or not args.wait or time.monotonic() >= deadline:
            break
        time.sleep(
            min(parse_duration(args.poll).total_seconds(), max(0.0, deadline - time.monotonic()))
        )
    print(
        f"deployment {answer['id']}: {answer['status']}"
        + (f" ({answer['reason']})" if answer["reason"] else "")
    )
    for deviation in answer["deviations"]:
        where = (
            f"{deviation['check']} [{deviation['segment']}]"
            if deviation["segment"]
            else deviation["check"]
        )
        tag = " (intended)" if deviation["intended"] else ""
        print(
            f"  deviation{tag}: {where} {deviation['value']:g} vs {deviation['expected']} "
            f"expected since {deviation['since']}"
        )
    for change in answer["schema_changes"]:
        print(
            f"  schema change in {change['table']}: removed {change['removed']}, "
            f"retyped {change['retyped']}, added {change['added']}"
        )
    if answer["status"] == "passed":
        return EXIT_OK
    if answer["status"] == "failed":
        return EXIT_ANOMALY
    return EXIT_TIMEOUT if args.wait else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpi-monitor", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"kpi-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", help="config file (default: $KPIMON_CONFIG)")

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)
    run.add_argument("--port", type=int, help="HTTP port (default: server.port, 9108)")
    run.add_argument("--host", help="listen address (default: server.host, 0.0.0.0)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo", help="build the embedded DuckDB demo warehouse and run the daemon on it"
    )
    demo.add_argument(
        "--dir",
        default="demo-data",
        help="where the demo warehouse and state go (default: ./demo-data)",
    )
    demo.add_argument("--port", type=int, help="HTTP port (default 9108)")
    demo.add_argument("--host", help="listen address (default 0.0.0.0)")
    demo.add_argument("-c", "--config", help="a config to run instead of the bundled demo config")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser(
        "check", help="run every check once and print a table (exit 1 on an anomaly)"
    )
    with_config(check)
    check.add_argument(
        "--check", action="append", metavar="NAME", help="only this check (repeatable)"
    )
    check.set_defaults(func=cmd_check)

    validate = sub.add_parser("validate", help="validate the config file")
    with_config(validate)
    validate.add_argument(
        "--connect", action="store_true", help="also check that each warehouse answers"
    )
    validate.add_argument(
        "--schema", action="store_true", help="print the config's JSON Schema and exit"
    )
    validate.set_defaults(func=cmd_validate)

    backtest = sub.add_parser(
        "backtest", help="replay history through the detector: what would have fired"
    )
    backtest.add_argument("--csv", metavar="PATH", help="a CSV of timestamp,value rows")
    backtest.add_argument("--timestamp-column", default="timestamp")
    backtest.add_argument("--value-column", default="value")
    backtest.add_argument(
        "--grain", default="auto", help="auto, hour, day or a duration such as 5m"
    )
    backtest.add_argument(
        "--sensitivity", type=float, help="band half-width in robust standard units"
    )
    backtest.add_argument(
        "--alert-after", type=int, default=1, help="anomalous buckets that open an alert (CSV)"
    )
    backtest.add_argument(
        "--resolve-after", type=int, default=2, help="normal buckets that resolve it (CSV)"
    )
    backtest.add_argument(
        "--out",
        metavar="OUT.csv",
        help="scored rows: timestamp,value,expected,lower,upper,score,alert",
    )
    backtest.add_argument("-c", "--config", help="config file (default: $KPIMON_CONFIG)")
    backtest.add_argument(
        "--check", metavar="NAME", help="replay a configured check's warehouse history"
    )
    backtest.add_argument("--since", default="90d", help="how far back (default 90d)")
    backtest.add_argument("--segment", help="the segment --plot draws (default: the first)")
    backtest.add_argument("--plot", metavar="OUT.png", help="draw the series, band and alerts")
    backtest.set_defaults(func=cmd_backtest)

    deployment = sub.add_parser(
        "deployment", help="tell a running daemon about a deployment, or ask its verdict"
    )
    actions = deployment.add_subparsers(dest="action", required=True, metavar="ACTION")
    record = actions.add_parser("record", help="record a deployment (token from KPIMON_API_TOKEN)")
    record.add_argument("--url", required=True, help="the daemon, e.g. http://kpi-monitor:9108")
    record.add_argument("--id", required=True, help="a unique deployment id, e.g. the CI run id")
    record.add_argument("--environment", required=True, help="e.g. staging or production")
    record.add_argument(
        "--model", action="append", metavar="M", help="a changed model or table (repeatable)"
    )
    record.add_argument("--commit", help="the commit deployed")
    record.add_argument("--link", help="a link to the change or CI run")
    record.add_argument(
        "--expect-change",
        action="append",
        metavar="CHECK",
        help="a check expected to move (repeatable)",
    )
    record.add_argument(
        "--dbt-manifest", metavar="PATH", help="target/manifest.json: changed models are worked out"
    )
    record.add_argument(
        "--dbt-run-results", metavar="PATH", help="target/run_results.json: the models that ran"
    )
    record.set_defaults(func=cmd_deployment_record)
    verify = actions.add_parser(
        "verify", help="print a deployment's verdict; exit 0 passed, 1 failed, 3 timeout"
    )
    verify.add_argument("--url", required=True, help="the daemon, e.g. http://kpi-monitor:9108")
    verify.add_argument("--id", required=True)
    verify.add_argument("--wait", action="store_true", help="wait for the verdict")
    verify.add_argument("--timeout", default="2h", help="how long --wait waits (default 2h)")
    verify.add_argument("--poll", default="15s", help="how often --wait asks (default 15s)")
    verify.set_defaults(func=cmd_deployment_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_ERROR
    except KpiMonitorError as exc:
        print(f"kpi-monitor: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
