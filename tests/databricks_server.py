"""A local server that speaks the Databricks SQL protocol, backed by DuckDB (test code).

The real ``databricks-sql-connector`` talks Thrift (binary protocol) over HTTP POST to a SQL
warehouse's ``http_path`` with ``Authorization: Bearer <token>``. This server answers those calls
with the connector's own generated Thrift classes (``databricks.sql.thrift_api.TCLIService``) and
the ``thrift`` package's processor, and runs the statements on a DuckDB file:

* OpenSession (protocol ``SPARK_CLI_SERVICE_PROTOCOL_V7``) with session configuration
  (``STATEMENT_TIMEOUT``, ``TIMEZONE``), CloseSession;
* ExecuteStatement with native named parameters, inline "direct results" when the statement ends
  quickly, otherwise GetOperationStatus polling, GetResultSetMetadata and paged FetchResults;
* results as Arrow IPC batches (when the client says it can read Arrow) or column based
  (``TRowSet.columns``), or forced to either;
* CancelOperation and CloseOperation; ``STATEMENT_TIMEOUT`` enforced on running statements;
* SQL errors reported as Databricks reports them: the operation moves to ``ERROR_STATE`` with an
  error class, SQLSTATE and a display message;
* CloseSession stops the session's running statements, as Databricks does;
* GetOperationStatus long polls (``long_poll`` seconds, as Databricks holds it for seconds) and
  ExecuteStatement waits ``direct_results_wait`` seconds for inline results;
* a bearer token check (HTTP 403 with ``x-databricks-reason-phrase``), an OAuth machine-to-machine
  token endpoint (``/oidc/v1/token``) and per-call fault injection (HTTP status with
  ``Retry-After``, delays, dropped connections, requests held without an answer as on a hung
  network, hanging or failing statements). ``call_log`` has the time of every call.

DuckDB is not Databricks SQL. The few Databricks spellings that :class:`DatabricksDialect` emits
are translated here (backtick identifiers, ``:name`` parameters, ``from_utc_timestamp``,
``to_utc_timestamp``); the golden SQL tests in ``tests/test_dialects.py`` are what pin the
Databricks SQL text itself.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
import re
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from databricks.sql.thrift_api.TCLIService import TCLIService, ttypes
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TTransport

PROTOCOL_VERSION = ttypes.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V7
S = ttypes.TStatusCode
OS = ttypes.TOperationState

# How long GetOperationStatus waits for a running statement before answering "still running"
# (Databricks long-polls too; without it the connector would poll in a tight loop).
LONG_POLL_SECONDS = 0.2
# How long ExecuteStatement waits for the statement to end before answering without results.
DIRECT_RESULTS_WAIT_SECONDS = 1.0


# ---------------------------------------------------------------------------------------------
# SQL translation: Databricks SQL spellings the adapter emits -> DuckDB
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<string>'(?:[^']|'')*')            # string literal
  | (?P<dquoted>"(?:[^"]|"")*")           # double-quoted identifier (kept)
  | (?P<backtick>`(?:[^`]|``)*`)          # backtick identifier -> double quotes
  | (?P<comment>--[^\n]*|/\*.*?\*/)       # comments
  | (?P<cast>::)                          # cast operator, not a parameter
  | :(?P<param>[A-Za-z_][A-Za-z0-9_]*)    # named parameter marker
    """,
    re.VERBOSE | re.DOTALL,
)

# Functions DuckDB lacks, defined with Databricks' semantics on naive UTC timestamps.
_MACROS = (
    # from_utc_timestamp(ts, tz): the wall-clock time in tz of the UTC instant ts.
    "CREATE OR REPLACE MACRO from_utc_timestamp(ts, tz) AS "
    "timezone(tz, timezone('UTC', CAST(ts AS TIMESTAMP)))",
    # to_utc_timestamp(ts, tz): the UTC instant of the wall-clock time ts in tz.
    "CREATE OR REPLACE MACRO to_utc_timestamp(ts, tz) AS "
    "timezone('UTC', timezone(tz, CAST(ts AS TIMESTAMP)))",
)


def translate_sql(sql: str) -> tuple[str, list[str]]:
    """Databricks SQL text -> DuckDB text, and the names of the parameters it uses."""
    names: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group("backtick") is not None:
            inner = m.group("backtick")[1:-1].replace("``", "`")
            return '"' + inner.replace('"', '""') + '"'
        if m.group("param") is not None:
            names.append(m.group("param"))
            return "$" + m.group("param")
        return m.group(0)

    # Unity Catalog keeps every catalog's columns in system.information_schema; DuckDB has one
    translated = _TOKEN.sub(repl, sql).replace("system.information_schema.", "information_schema.")
    return translated, names


def _param_value(p: ttypes.TSparkParameter) -> object:
    """A Python value for one native parameter, from its Databricks type and string value."""
    if p.value is None:
        return None
    v = p.value
    if v.stringValue is None:
        return v.doubleValue if v.doubleValue is not None else v.booleanValue
    s = v.stringValue
    kind = (p.type or "STRING").upper()
    if kind in ("INT", "BIGINT", "SMALLINT", "TINYINT"):
        return int(s)
    if kind in ("DOUBLE", "FLOAT"):
        return float(s)
    if kind.startswith("DECIMAL"):
        return decimal.Decimal(s)
    if kind == "BOOLEAN":
        return s.lower() == "true"
    if kind == "DATE":
        return dt.date.fromisoformat(s)
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ"):
        ts = dt.datetime.fromisoformat(s)
        if ts.tzinfo is not None and kind == "TIMESTAMP":
            ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
        return ts.replace(tzinfo=None)
    return s


# ---------------------------------------------------------------------------------------------
# Results: Arrow table -> Thrift schema, Arrow batches or columns
# ---------------------------------------------------------------------------------------------


def _type_entry(t: pa.DataType) -> ttypes.TTypeEntry:
    T = ttypes.TTypeId
    quals = None
    if pa.types.is_boolean(t):
        tid = T.BOOLEAN_TYPE
    elif pa.types.is_int8(t):
        tid = T.TINYINT_TYPE
    elif pa.types.is_int16(t):
        tid = T.SMALLINT_TYPE
    elif pa.types.is_int32(t):
        tid = T.INT_TYPE
    elif pa.types.is_integer(t):
        tid = T.BIGINT_TYPE
    elif pa.types.is_float32(t):
        tid = T.FLOAT_TYPE
    elif pa.types.is_floating(t):
        tid = T.DOUBLE_TYPE
    elif pa.types.is_decimal(t):
        tid = T.DECIMAL_TYPE
        quals = ttypes.TTypeQualifiers(
            qualifiers={
                "precision": ttypes.TTypeQualifierValue(i32Value=t.precision),
                "scale": ttypes.TTypeQualifierValue(i32Value=t.scale),
            }
        )
    elif pa.types.is_timestamp(t):
        tid = T.TIMESTAMP_TYPE
    elif pa.types.is_date(t):
        tid = T.DATE_TYPE
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        tid = T.BINARY_TYPE
    else:
        tid = T.STRING_TYPE
    return ttypes.TTypeEntry(
        primitiveEntry=ttypes.TPrimitiveTypeEntry(type=tid, typeQualifiers=quals)
    )


def _databricks_arrow(table: pa.Table) -> pa.Table:
    """DuckDB's Arrow result reshaped the way Databricks sends it.

    TIMESTAMP is an instant in Databricks: it travels as ``timestamp[us, tz=Etc/UTC]``.
    Types Databricks lacks (unsigned, large strings, huge integers) are narrowed.
    """
    fields, columns = [], []
    for f, col in zip(table.schema, table.columns, strict=True):
        t = f.type
        if pa.types.is_timestamp(t):
            # naive values are UTC wall-clock times: attaching the zone keeps the instant.
            t = pa.timestamp("us", tz="Etc/UTC")
            col = col.cast(t)
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            col, t = col.cast(pa.string()), pa.string()
        elif pa.types.is_unsigned_integer(t):
            col, t = col.cast(pa.int64()), pa.int64()
        elif pa.types.is_null(t):
            col, t = col.cast(pa.string()), pa.string()
        fields.append(pa.field(f.name, t))
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _to_arrow(result: Any) -> pa.Table:
    """The Arrow table of a DuckDB result (the method was renamed in DuckDB 2)."""
    fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "extra copy" advice: irrelevant at test sizes
        table = fetch()
    return table.read_all() if isinstance(table, pa.RecordBatchReader) else table


def _schema(table: pa.Table) -> ttypes.TTableSchema:
    return ttypes.TTableSchema(
        columns=[
            ttypes.TColumnDesc(
                columnName=f.name,
                typeDesc=ttypes.TTypeDesc(types=[_type_entry(f.type)]),
                position=i + 1,
            )
            for i, f in enumerate(table.schema)
        ]
    )


def _nulls(values: list[Any]) -> bytes:
    bits = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v is None:
            bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def _text(v: object) -> str:
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        return v.isoformat(sep=" ")
    return str(v)


def _column(arr: pa.ChunkedArray) -> ttypes.TColumn:
    t = arr.type
    values = arr.to_pylist()
    nulls = _nulls(values)

    def filled(default: object) -> list[Any]:
        return [default if v is None else v for v in values]

    if pa.types.is_boolean(t):
        return ttypes.TColumn(boolVal=ttypes.TBoolColumn(values=filled(False), nulls=nulls))
    if pa.types.is_int8(t):
        return ttypes.TColumn(byteVal=ttypes.TByteColumn(values=filled(0), nulls=nulls))
    if pa.types.is_int16(t):
        return ttypes.TColumn(i16Val=ttypes.TI16Column(values=filled(0), nulls=nulls))
    if pa.types.is_int32(t):
        return ttypes.TColumn(i32Val=ttypes.TI32Column(values=filled(0), nulls=nulls))
    if pa.types.is_integer(t):
        return ttypes.TColumn(i64Val=ttypes.TI64Column(values=filled(0), nulls=nulls))
    if pa.types.is_floating(t):
        return ttypes.TColumn(doubleVal=ttypes.TDoubleColumn(values=filled(0.0), nulls=nulls))
    if pa.types.is_binary(t):
        return ttypes.TColumn(binaryVal=ttypes.TBinaryColumn(values=filled(b""), nulls=nulls))
    # Decimals, timestamps (session time zone UTC, no offset), dates, strings: as text.
    texts = ["" if v is None else _text(v) for v in values]
    return ttypes.TColumn(stringVal=ttypes.TStringColumn(values=texts, nulls=nulls))


def _row_set(table: pa.Table, offset: int, arrow: bool) -> ttypes.TRowSet:
    if arrow:
        batches = [
            ttypes.TSparkArrowBatch(batch=b.serialize().to_pybytes(), rowCount=b.num_rows)
            for b in table.to_batches()
            if b.num_rows
        ]
        return ttypes.TRowSet(startRowOffset=offset, rows=[], arrowBatches=batches)
    return ttypes.TRowSet(
        startRowOffset=offset, rows=[], columns=[_column(c) for c in table.columns]
    )


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault, applied to the next ``times`` calls of ``method`` ("*": any call)."""

    method: str
    times: int = 1
    http_status: int | None = None  # answer with this HTTP status instead of a Thrift reply
    retry_after: float | None = None  # Retry-After header with the status
    delay: float = 0.0  # sleep before handling (or before the status)
    drop: bool = False  # close the connection without any answer
    hang: bool = False  # hold the request unanswered until release_hangs() or close()


@dataclass
class StatementFault:
    """Makes the next ``times`` statements matching ``match`` hang or fail."""

    match: str | None = None  # substring of the statement text; None: any but SET statements
    times: int = 1
    hang: float | None = None  # seconds the statement stays running (until cancelled/timeout)
    error_class: str | None = None  # fail with this Databricks error class
    message: str = "injected failure"
    sql_state: str = "XX000"


@dataclass
class Operation:
    id: bytes
    session: bytes
    sql: str
    arrow: bool
    state: int = OS.RUNNING_STATE
    table: pa.Table | None = None
    error: tuple[str, str, str] | None = None  # (display message, error message, sqlstate)
    offset: int = 0
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    cursor: Any = None


@dataclass
class Session:
    id: bytes
    conf: dict[str, str]


class DatabricksProtocolServer:
    """The fixture object: a running server plus its DuckDB warehouse and fault controls."""

    def __init__(
        self,
        duckdb_path: Path,
        *,
        token: str | None = None,
        http_path: str = "/sql/1.0/warehouses/kpimon-test",
        host: str = "127.0.0.1",
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.duckdb_path = Path(duckdb_path)
        self.token = token or "dapi-" + secrets.token_hex(16)
        self.http_path = http_path
        self.host = host
        # OAuth M2M credentials accepted at /oidc/v1/token (tokens it issues are accepted too).
        self.client_id = "kpimon-sp"
        self.client_secret = "dose-" + secrets.token_hex(16)
        self.issued_tokens: set[str] = set()
        # Result knobs: "auto" follows the client's canReadArrowResult; or "arrow"/"columns".
        self.result_format = "auto"
        self.direct_results = True  # answer with inline results when the statement is quick
        self.max_rows_per_fetch: int | None = None  # cap rows per page (paging tests)
        self.calls: list[str] = []  # every Thrift method called, in order
        self.call_log: list[tuple[float, str]] = []  # (time.monotonic(), method) of each call
        self.long_poll = LONG_POLL_SECONDS
        self.direct_results_wait = DIRECT_RESULTS_WAIT_SECONDS
        self._released = threading.Event()  # ends requests held by a hang fault
        self.statements: list[str] = []  # every statement executed (as received)
        self.arrow_requested: list[bool] = []  # canReadArrowResult of each ExecuteStatement
        self.requests_headers: list[dict[str, str]] = []
        self._faults: list[Fault] = []
        self._statement_faults: list[StatementFault] = []
        self._lock = threading.RLock()
        self.sessions: dict[bytes, Session] = {}
        self.operations: dict[bytes, Operation] = {}
        self.cancelled: list[str] = []  # statements stopped by CancelOperation or CloseSession
        self._db = duckdb.connect(str(self.duckdb_path))
        self._db.execute("SET TimeZone = 'UTC'")
        # No "replacement scans": an unknown table name must not resolve to a Python variable.
        self._db.execute("SET python_enable_replacements = false")
        for macro in _MACROS:
            self._db.execute(macro)
        self._processor = TCLIService.Processor(_Handler(self))
        self._httpd = _QuietHTTPServer((host, 0), _make_http_handler(self))
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- what tests use ------------------------------------------------------------------------

    @property
    def connection_uri(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.http_path}"

    def execute(self, sql: str, params: object = None) -> list[tuple[Any, ...]]:
        """Run DuckDB SQL directly on the warehouse (to create and load test tables)."""
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute(sql, params)
                try:
                    return cur.fetchall()
                except duckdb.Error:
                    return []
            finally:
                cur.close()

    def load_rows(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows (Python values) into an existing DuckDB table."""
        if not rows:
            return
        marks = ", ".join("?" for _ in rows[0])
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            finally:
                cur.close()

    def inject(
        self,
        method: str = "*",
        *,
        times: int = 1,
        http_status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        drop: bool = False,
        hang: bool = False,
    ) -> None:
        """Make the next ``times`` calls of Thrift ``method`` fail or stall."""
        with self._lock:
            self._faults.append(Fault(method, times, http_status, retry_after, delay, drop, hang))

    def release_hangs(self) -> None:
        """End the requests held by hang faults (their connections are dropped)."""
        self._released.set()

    def hang_statement(self, match: str | None = None, *, seconds: float = 60.0) -> None:
        """The next statement (containing ``match``) keeps running for ``seconds``."""
        with self._lock:
            self._statement_faults.append(StatementFault(match=match, hang=seconds))

    def fail_statement(
        self,
        match: str | None = None,
        *,
        error_class: str = "INTERNAL_ERROR",
        message: str = "injected failure",
        sql_state: str = "XX000",
    ) -> None:
        """The next statement (containing ``match``) fails with a Databricks error."""
        with self._lock:
            self._statement_faults.append(
                StatementFault(
                    match=match, error_class=error_class, message=message, sql_state=sql_state
                )
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._statement_faults.clear()

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c == method)

    def running_operations(self) -> list[Operation]:
        with self._lock:
            return [o for o in self.operations.values() if o.state == OS.RUNNING_STATE]

    def close(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for op in self.operations.values():
                op.cancelled.set()
        self._db.close()

    # -- internals -----------------------------------------------------------------------------

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.method in (method, "*") and f.times > 0:
                    f.times -= 1
                    if f.times == 0:
                        self._faults.remove(f)
                    return f
        return None

    def _take_statement_fault(self, sql: str) -> StatementFault | None:
        with self._lock:
            for f in self._statement_faults:
                if (f.match is None and not sql.lstrip().upper().startswith("SET ")) or (
                    f.match is not None and f.match in sql
                ):
                    f.times -= 1
                    if f.times <= 0:
                        self._statement_faults.remove(f)
                    return f
        return None

    def _token_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        presented = header[len("Bearer ") :]
        with self._lock:
            return presented == self.token or presented in self.issued_tokens

    def _issue_token(self, basic: str | None, body: bytes) -> tuple[int, dict[str, object]]:
        form = dict(pair.split("=", 1) for pair in body.decode().split("&") if "=" in pair)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if basic and basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "bad client credentials"}
        token = "oauth-" + secrets.token_hex(16)
        with self._lock:
            self.issued_tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}

    def _run(self, op: Operation, sql: str, params: list[ttypes.TSparkParameter]) -> None:
        """Execute one statement on a DuckDB cursor (in a worker thread)."""
        session = self.sessions.get(op.session)
        timeout = float(session.conf.get("STATEMENT_TIMEOUT", "0")) if session else 0.0
        try:
            fault = self._take_statement_fault(sql)
            if fault is not None and fault.hang is not None:
                end = op.started + fault.hang
                while time.monotonic() < end and not op.cancelled.is_set():
                    if timeout and time.monotonic() - op.started >= timeout:
                        break
                    time.sleep(0.01)
            if op.cancelled.is_set():
                return
            if timeout and time.monotonic() - op.started >= timeout:
                self._timed_out(op, timeout)
                return
            if fault is not None and fault.error_class is not None:
                op.error = _error(fault.error_class, fault.message, fault.sql_state)
                op.state = OS.ERROR_STATE
                return
            set_match = re.fullmatch(
                r"\s*SET\s+([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*'?([^';]*)'?\s*;?\s*", sql, re.I
            )
            if set_match and session is not None:
                key, value = set_match.group(1).upper(), set_match.group(2).strip()
                session.conf[key] = value
                op.table = pa.table({"key": [key], "value": [value]})
                op.state = OS.FINISHED_STATE
                return
            duck_sql, names = translate_sql(sql)
            values = {p.name: _param_value(p) for p in params if p.name}
            missing = [n for n in names if n not in values]
            if missing:
                op.error = _error(
                    "UNBOUND_SQL_PARAMETER",
                    f"Found the unbound parameter: {missing[0]}. Please, fix `args` and provide "
                    "a mapping of the parameter to either a SQL literal or collection "
                    "constructor functions.",
                    "42P02",
                )
                op.state = OS.ERROR_STATE
                return
            cur = self._db.cursor()
            op.cursor = cur
            try:
                cur.execute("SET TimeZone = 'UTC'")
                cur.execute("SET python_enable_replacements = false")
                used = {n: values[n] for n in dict.fromkeys(names)}
                result = cur.execute(duck_sql, used or None)
                table = _to_arrow(result) if cur.description else pa.table({})
            finally:
                op.cursor = None
                cur.close()
            if op.cancelled.is_set():
                return
            if timeout and time.monotonic() - op.started >= timeout:
                self._timed_out(op, timeout)
                return
            op.table = _databricks_arrow(table)
            op.state = OS.FINISHED_STATE
        except duckdb.Error as e:
            if op.cancelled.is_set():
                return
            op.error = _duckdb_error(e)
            op.state = OS.ERROR_STATE
        except Exception as e:  # a bug here must still end the operation
            op.error = _error("INTERNAL_ERROR", f"{type(e).__name__}: {e}", "XX000")
            op.state = OS.ERROR_STATE
        finally:
            op.done.set()

    def _timed_out(self, op: Operation, timeout: float) -> None:
        op.error = _error(
            "QUERY_EXECUTION_TIMEOUT_EXCEEDED",
            f"Query execution was cancelled due to exceeding the timeout ({timeout:g}s). "
            "You can increase the limit in seconds by setting `STATEMENT_TIMEOUT`.",
            "57KD0",
        )
        op.state = OS.ERROR_STATE

    def _watch_timeout(self, op: Operation) -> None:
        """Enforce STATEMENT_TIMEOUT on statements DuckDB is busy with (interrupts them)."""
        session = self.sessions.get(op.session)
        timeout = float(session.conf.get("STATEMENT_TIMEOUT", "0")) if session else 0.0
        if not timeout:
            return
        if not op.done.wait(timeout):
            cur = op.cursor
            if cur is not None:
                with contextlib.suppress(duckdb.Error):
                    cur.interrupt()
            interrupted = op.state == OS.ERROR_STATE and op.error is not None
            if op.done.wait(1.0) and interrupted and "INTERRUPT" in str(op.error).upper():
                self._timed_out(op, timeout)


def _error(error_class: str, message: str, sql_state: str) -> tuple[str, str, str]:
    display = f"[{error_class}] {message} SQLSTATE: {sql_state}"
    full = f"org.apache.hive.service.cli.HiveSQLException: Error running query: {display}"
    return display, full, sql_state


def _duckdb_error(e: duckdb.Error) -> tuple[str, str, str]:
    msg = str(e).split("\n")[0]
    if isinstance(e, duckdb.CatalogException):
        m = re.search(r"Table with name (\S+) does not exist", msg)
        if m:
            return _error(
                "TABLE_OR_VIEW_NOT_FOUND",
                f"The table or view `{m.group(1)}` cannot be found. Verify the spelling and "
                "correctness of the schema and catalog.",
                "42P01",
            )
        return _error("TABLE_OR_VIEW_NOT_FOUND", msg, "42P01")
    if isinstance(e, duckdb.ParserException):
        return _error("PARSE_SYNTAX_ERROR", msg, "42601")
    if isinstance(e, duckdb.BinderException):
        return _error("UNRESOLVED_COLUMN.WITH_SUGGESTION", msg, "42703")
    if isinstance(e, duckdb.InterruptException):
        return _error("OPERATION_INTERRUPTED", msg, "HY008")
    return _error("INTERNAL_ERROR", msg, "XX000")


def _ok() -> ttypes.TStatus:
    return ttypes.TStatus(statusCode=S.SUCCESS_STATUS)


def _fail(message: str, code: int = S.ERROR_STATUS) -> ttypes.TStatus:
    return ttypes.TStatus(statusCode=code, errorMessage=message, displayMessage=message)


class _Handler:
    """TCLIService.Iface over the server's state."""

    def __init__(self, server: DatabricksProtocolServer) -> None:
        self.s = server

    # sessions

    def OpenSession(self, req: ttypes.TOpenSessionReq) -> ttypes.TOpenSessionResp:
        sid = uuid.uuid4().bytes
        conf = {k.upper(): str(v) for k, v in (req.configuration or {}).items()}
        with self.s._lock:
            self.s.sessions[sid] = Session(sid, conf)
        return ttypes.TOpenSessionResp(
            status=_ok(),
            serverProtocolVersion=PROTOCOL_VERSION,
            sessionHandle=ttypes.TSessionHandle(
                sessionId=ttypes.THandleIdentifier(guid=sid, secret=secrets.token_bytes(16))
            ),
            configuration={},
            initialNamespace=req.initialNamespace,
            canUseMultipleCatalogs=True,
        )

    def CloseSession(self, req: ttypes.TCloseSessionReq) -> ttypes.TCloseSessionResp:
        sid = req.sessionHandle.sessionId.guid
        with self.s._lock:
            gone = self.s.sessions.pop(sid, None)
            ops = [o for o in self.s.operations.values() if o.session == sid]
            for op in ops:
                if op.state in (OS.RUNNING_STATE, OS.PENDING_STATE):
                    op.state = OS.CANCELED_STATE
                    self.s.cancelled.append(op.sql)
        for op in ops:
            op.cancelled.set()
        if gone is None:
            return ttypes.TCloseSessionResp(
                status=_fail("Invalid SessionHandle", S.INVALID_HANDLE_STATUS)
            )
        return ttypes.TCloseSessionResp(status=_ok())

    # statements

    def ExecuteStatement(self, req: ttypes.TExecuteStatementReq) -> ttypes.TExecuteStatementResp:
        sid = req.sessionHandle.sessionId.guid
        with self.s._lock:
            session = self.s.sessions.get(sid)
            self.s.statements.append(req.statement)
            self.s.arrow_requested.append(bool(req.canReadArrowResult))
        if session is None:
            return ttypes.TExecuteStatementResp(
                status=_fail(
                    "Invalid SessionHandle: the session does not exist or has expired",
                    S.INVALID_HANDLE_STATUS,
                )
            )
        fmt = self.s.result_format
        arrow = bool(req.canReadArrowResult) if fmt == "auto" else fmt == "arrow"
        op = Operation(id=uuid.uuid4().bytes, session=sid, sql=req.statement, arrow=arrow)
        with self.s._lock:
            self.s.operations[op.id] = op
        worker = threading.Thread(
            target=self.s._run, args=(op, req.statement, list(req.parameters or [])), daemon=True
        )
        worker.start()
        threading.Thread(target=self.s._watch_timeout, args=(op,), daemon=True).start()
        handle = ttypes.TOperationHandle(
            operationId=ttypes.THandleIdentifier(guid=op.id, secret=secrets.token_bytes(16)),
            operationType=ttypes.TOperationType.EXECUTE_STATEMENT,
            hasResultSet=True,
        )
        resp = ttypes.TExecuteStatementResp(status=_ok(), operationHandle=handle)
        if req.getDirectResults is None or not self.s.direct_results:
            return resp  # the client polls GetOperationStatus, then fetches
        if not op.done.wait(self.s.direct_results_wait):
            resp.directResults = ttypes.TSparkDirectResults(operationStatus=self._status(op))
            return resp
        direct = ttypes.TSparkDirectResults(operationStatus=self._status(op))
        if op.state == OS.FINISHED_STATE:
            max_rows = req.getDirectResults.maxRows or None
            direct.resultSetMetadata = self._metadata(op)
            direct.resultSet = self._fetch(op, max_rows)
            if not direct.resultSet.hasMoreRows:
                direct.closeOperation = ttypes.TCloseOperationResp(status=_ok())
                with self.s._lock:
                    self.s.operations.pop(op.id, None)
        return ttypes.TExecuteStatementResp(
            status=_ok(), operationHandle=handle, directResults=direct
        )

    def _op(self, handle: ttypes.TOperationHandle) -> Operation | None:
        with self.s._lock:
            return self.s.operations.get(handle.operationId.guid)

    def _status(self, op: Operation) -> ttypes.TGetOperationStatusResp:
        resp = ttypes.TGetOperationStatusResp(
            status=_ok(), operationState=op.state, hasResultSet=True
        )
        if op.state == OS.ERROR_STATE and op.error is not None:
            display, full, sql_state = op.error
            resp.errorMessage = full
            resp.displayMessage = display
            resp.sqlState = sql_state
            resp.errorCode = 0
            resp.diagnosticInfo = full
        return resp

    def GetOperationStatus(
        self, req: ttypes.TGetOperationStatusReq
    ) -> ttypes.TGetOperationStatusResp:
        op = self._op(req.operationHandle)
        if op is None:
            return ttypes.TGetOperationStatusResp(
                status=_fail("Invalid OperationHandle", S.INVALID_HANDLE_STATUS)
            )
        op.done.wait(self.s.long_poll)
        return self._status(op)

    def CancelOperation(self, req: ttypes.TCancelOperationReq) -> ttypes.TCancelOperationResp:
        op = self._op(req.operationHandle)
        if op is None:
            return ttypes.TCancelOperationResp(
                status=_fail("Invalid OperationHandle", S.INVALID_HANDLE_STATUS)
            )
        with self.s._lock:
            if op.state in (OS.RUNNING_STATE, OS.PENDING_STATE):
                op.state = OS.CANCELED_STATE
                self.s.cancelled.append(op.sql)
            op.cancelled.set()
        cur = op.cursor
        if cur is not None:
            with contextlib.suppress(duckdb.Error):
                cur.interrupt()
        return ttypes.TCancelOperationResp(status=_ok())

    def CloseOperation(self, req: ttypes.TCloseOperationReq) -> ttypes.TCloseOperationResp:
        with self.s._lock:
            op = self.s.operations.pop(req.operationHandle.operationId.guid, None)
        if op is None:
            return ttypes.TCloseOperationResp(
                status=_fail("Invalid OperationHandle", S.INVALID_HANDLE_STATUS)
            )
        op.cancelled.set()
        return ttypes.TCloseOperationResp(status=_ok())

    # results

    def _metadata(self, op: Operation) -> ttypes.TGetResultSetMetadataResp:
        assert op.table is not None
        return ttypes.TGetResultSetMetadataResp(
            status=_ok(),
            schema=_schema(op.table),
            resultFormat=(
                ttypes.TSparkRowSetType.ARROW_BASED_SET
                if op.arrow
                else ttypes.TSparkRowSetType.COLUMN_BASED_SET
            ),
            lz4Compressed=False,
            arrowSchema=op.table.schema.serialize().to_pybytes() if op.arrow else None,
            isStagingOperation=False,
        )

    def _fetch(self, op: Operation, max_rows: int | None) -> ttypes.TFetchResultsResp:
        assert op.table is not None
        limit = max_rows or op.table.num_rows
        if self.s.max_rows_per_fetch:
            limit = min(limit, self.s.max_rows_per_fetch)
        start = op.offset
        chunk = op.table.slice(start, limit)
        op.offset = start + chunk.num_rows
        return ttypes.TFetchResultsResp(
            status=_ok(),
            hasMoreRows=op.offset < op.table.num_rows,
            results=_row_set(chunk, start, op.arrow),
            resultSetMetadata=self._metadata(op),
        )

    def GetResultSetMetadata(
        self, req: ttypes.TGetResultSetMetadataReq
    ) -> ttypes.TGetResultSetMetadataResp:
        op = self._op(req.operationHandle)
        if op is None or op.state != OS.FINISHED_STATE:
            state = "unknown" if op is None else OS._VALUES_TO_NAMES[op.state]
            return ttypes.TGetResultSetMetadataResp(
                status=_fail(f"Operation has no result set (state {state})")
            )
        return self._metadata(op)

    def FetchResults(self, req: ttypes.TFetchResultsReq) -> ttypes.TFetchResultsResp:
        op = self._op(req.operationHandle)
        if op is None or op.state != OS.FINISHED_STATE:
            return ttypes.TFetchResultsResp(status=_fail("Operation has no result set"))
        return self._fetch(op, req.maxRows)


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hung up (timeouts, dropped calls) are expected here: no traceback."""


def _make_http_handler(server: DatabricksProtocolServer) -> type[BaseHTTPRequestHandler]:
    class HTTPHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _reply(
            self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with server._lock:
                server.requests_headers.append(dict(self.headers.items()))
            path = self.path.split("?", 1)[0]
            if path == "/oidc/v1/token":
                status, payload = server._issue_token(self.headers.get("Authorization"), body)
                self._reply(status, json.dumps(payload).encode(), "application/json")
                return
            if path != server.http_path.split("?", 1)[0]:
                self._reply(404, b"Not Found", "text/plain")
                return
            if not server._token_ok(self.headers.get("Authorization")):
                self._reply(
                    403,
                    b"Invalid access token.",
                    "text/plain",
                    {"x-databricks-reason-phrase": "Invalid access token."},
                )
                return
            try:
                ibuf = TTransport.TMemoryBuffer(body)
                name, mtype, _ = TBinaryProtocol.TBinaryProtocol(ibuf).readMessageBegin()
            except Exception:
                self._reply(400, b"Bad Thrift request", "text/plain")
                return
            with server._lock:
                server.calls.append(name)
                server.call_log.append((time.monotonic(), name))
            fault = server._take_fault(name)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.hang:
                    server._released.wait()
                if fault.drop or fault.hang:
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault.http_status is not None:
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = f"{fault.retry_after:g}"
                    if fault.http_status in (429, 503):
                        headers["x-databricks-reason-phrase"] = "TEMPORARILY_UNAVAILABLE"
                    self._reply(fault.http_status, b"", "text/plain", headers)
                    return
            iprot = TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(body))
            obuf = TTransport.TMemoryBuffer()
            oprot = TBinaryProtocol.TBinaryProtocol(obuf)
            server._processor.process(iprot, oprot)
            assert mtype == TMessageType.CALL
            self._reply(200, obuf.getvalue(), "application/x-thrift")

    return HTTPHandler


@pytest.fixture
def databricks_server(tmp_path: Path) -> Iterator[DatabricksProtocolServer]:
    """A fresh Databricks protocol server over an empty DuckDB file, on loopback."""
    srv = DatabricksProtocolServer(tmp_path / "databricks.duckdb")
    try:
        yield srv
    finally:
        srv.close()


__all__ = [
    "DatabricksProtocolServer",
    "Fault",
    "StatementFault",
    "databricks_server",
    "translate_sql",
]
