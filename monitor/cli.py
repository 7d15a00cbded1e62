"""The kpi-monitor command line: run, demo, check, validate, backtest, deployment.

Exit codes: 0 success (``check``: all normal), 1 an anomaly (``check``), 2 an error (bad config,
unreachable warehouse, failed check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from monitor import __version__, logs
from monitor.config import Config, json_schema, load_config
from monitor.durations import parse_duration
from monitor.errors import ConfigError, KpiMonitorError, WarehouseError

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
    watch = getattr(args, "watch_config", None)
    daemon.run_forever(watch_config=parse_duration(watch) if watch else None)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor import demo

    directory = Path(args.dir).resolve()
    os.environ["KPIMON_DEMO_DIR"] = str(directory)
    times = demo.build(directory / "demo.duckdb", campaign=True)
    # config/demo.yaml's campaign event
    start, end = times.campaign
    os.environ["KPIMON_DEMO_CAMPAIGN_START"] = start.isoformat()
    os.environ["KPIMON_DEMO_CAMPAIGN_END"] = end.isoformat()
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
    from monitor.report import render_sql, render_table
    from monitor.store import StateStore
    from monitor.warehouse import open_warehouse

    config = _load(args)
    checks = config.checks_named(args.check or [c.name for c in config.checks])
    if args.show_sql:
        print("\n\n".join(render_sql(config, check, datetime.now(UTC)) for check in checks))
        return EXIT_OK
    # a one-off pass: judged in memory, so it neither alerts nor disturbs a daemon's state
    with contextlib.ExitStack() as opened:
        # entered one by one: those opened before one that fails to open are closed too
        warehouses = {
            name: opened.enter_context(open_warehouse(name, settings))
            for name, settings in config.all_warehouses().items()
        }
        store = opened.enter_context(StateStore(":memory:"))
        engine = Engine(config, warehouses, store, Metrics(), announce=False)
        results = [engine.run(check.name) for check in checks]
        table = render_table(results, engine)
    print(table)
    if any(r.outcome == "error" for r in results):
        return EXIT_ERROR
    return EXIT_ANOMALY if any(r.outcome == "anomaly" for r in results) else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    config = _load(args)
    print(f"{config.source}: valid, {len(config.checks)} checks")
    for check in config.checks:
        print(f"  {check.name} ({check.kind}): {config.origin(check.name)}")
    if not args.connect:
        return EXIT_OK
    from monitor.queries import probe_query
    from monitor.warehouse import open_warehouse

    failed = False
    now = datetime.now(UTC)
    for name, settings in config.all_warehouses().items():
        with open_warehouse(name, settings) as warehouse:
            try:
                warehouse.ping()
            except KpiMonitorError as exc:
                failed = True
                print(f"warehouse {name} ({settings.kind}): FAILED: {_problem(exc)}")
                for check in config.checks:
                    if config.warehouse_of(check) == name:
                        print(f"check {check.name}: not tried: its warehouse is unreachable")
                continue
            print(f"warehouse {name} ({settings.kind}): ok")
            for check in config.checks:
                if config.warehouse_of(check) != name:
                    continue
                # the check's own query, made to return no rows: a missing table or column, a
                # typo in `expression` or `where`, or a missing grant fails here, not at 3 am
                query = probe_query(check, warehouse.dialect, now)
                try:
                    warehouse.query(query.sql, query.params)
                    print(f"check {check.name}: ok")
                except KpiMonitorError as exc:
                    failed = True
                    print(f"check {check.name}: FAILED: {_problem(exc)}")
    return EXIT_ERROR if failed else EXIT_OK


def _problem(exc: KpiMonitorError) -> str:
    """An error for a line that names its warehouse already."""
    return exc.detail if isinstance(exc, WarehouseError) else str(exc)


EXIT_TIMEOUT = 3


def cmd_backtest(args: argparse.Namespace) -> int:
    """Replay history through the daemon's detection and alerting, causally."""
    from monitor import cli_backtest

    if args.csv:
        return cli_backtest.backtest_csv(args)
    if not args.check:
        raise KpiMonitorError("give --csv PATH, or -c CONFIG with --check NAME")
    config = _load(args)
    [check] = config.checks_named([args.check])
    return cli_backtest.backtest_check(config, check, args)


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
    except RecursionError:
        raise KpiMonitorError(f"{path} is not a dbt artifact: JSON nested too deeply") from None


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
        prog="kpi-monitor",
        description=(
            "KPI anomaly monitor: learns a seasonal baseline per warehouse metric, exports "
            "Prometheus metrics and sends one alert per episode."
        ),
        epilog=(
            "The config file is -c PATH or $KPIMON_CONFIG. Exit codes: 0 ok, 1 an anomaly "
            "(check) or a failed deployment, 2 an error, 3 no deployment verdict in time. "
            "`kpi-monitor COMMAND --help` describes a command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"kpi-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", help="config file (default: $KPIMON_CONFIG)")

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)
    run.add_argument("--port", type=int, help="HTTP port (default: server.port, 9108)")
    run.add_argument("--host", help="listen address (default: server.host, 0.0.0.0)")
    run.add_argument(
        "--watch-config",
        metavar="INTERVAL",
        help="reload when the config file or its dbt manifest changes, looked for this often "
        "(e.g. 10s; a Kubernetes ConfigMap update). SIGHUP and POST /-/reload always reload",
    )
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
    check.add_argument(
        "--show-sql",
        action="store_true",
        help="print the SQL each check sends (its first, full-lookback run) and run nothing",
    )
    check.set_defaults(func=cmd_check)

    validate = sub.add_parser("validate", help="validate the config file")
    with_config(validate)
    validate.add_argument(
        "--connect",
        action="store_true",
        help="also check that each warehouse answers and that each check's query runs there "
        "(as a query returning no rows)",
    )
    validate.add_argument(
        "--schema", action="store_true", help="print the config's JSON Schema and exit"
    )
    validate.set_defaults(func=cmd_validate)

    backtest = sub.add_parser(
        "backtest", help="replay history through the detector: what would have fired"
    )
    source = backtest.add_argument_group("what to replay")
    source.add_argument("--csv", metavar="PATH", help="a CSV of timestamp,value rows")
    source.add_argument("-c", "--config", help="config file (default: $KPIMON_CONFIG)")
    source.add_argument(
        "--check", metavar="NAME", help="replay a configured check's warehouse history"
    )
    source.add_argument(
        "--since",
        default="90d",
        help="the window reported for --check (default 90d); the model learns from the "
        "check's lookback before it",
    )
    source.add_argument("--segment", help="only this segment in --plot (default: those alerted)")
    source.add_argument(
        "--answers",
        action="store_true",
        help="replay the answers given to the check's alerts from Slack (read from the state "
        "store): what the detector would have done with them, against what it does without",
    )
    csv = backtest.add_argument_group("CSV options")
    csv.add_argument("--timestamp-column", default="timestamp")
    csv.add_argument("--value-column", default="value")
    csv.add_argument("--grain", default="auto", help="auto, hour, day or a duration such as 5m")
    csv.add_argument("--sensitivity", type=float, help="band half-width in robust standard units")
    csv.add_argument(
        "--alert-after",
        type=int,
        help="anomalous buckets that open an alert (default: the daemon's, 2 below daily grain, "
        "else 1)",
    )
    csv.add_argument(
        "--resolve-after",
        type=int,
        help="normal buckets that resolve it (default: the daemon's, 2, and two hours below an "
        "hourly grain)",
    )
    csv.add_argument(
        "--timezone", default="UTC", help="the series' business time zone (default UTC)"
    )
    csv.add_argument(
        "--country", help="mark this country's public holidays (ISO code: US, DE...)"
    )
    csv.add_argument("--subdivision", help="with --country: a state or region (CA, BY...)")
    csv.add_argument(
        "--on-holiday",
        choices=("compare", "widen", "mute"),
        default="compare",
        help="how a holiday is judged (a check's `on_holiday`; default compare)",
    )
    csv.add_argument("--min", type=float, help="a fixed lower bound (a check's `min`)")
    csv.add_argument("--max", type=float, help="a fixed upper bound (a check's `max`)")
    output = backtest.add_argument_group("output")
    output.add_argument(
        "--out",
        metavar="OUT.csv",
        help="scored rows: [segment,]timestamp,value,expected,lower,upper,score,alert",
    )
    output.add_argument(
        "--plot",
        metavar="OUT.png",
        help="draw what alerted: values, band, anomalies, alert episodes, deployments, "
        "holidays, events and exclusion windows",
    )
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
