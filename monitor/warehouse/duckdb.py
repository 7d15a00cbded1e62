"""DuckDB, the embedded default warehouse: a file opened read-only while checks read it."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

import duckdb
import pandas as pd

from monitor.config import DuckDBWarehouseConfig
from monitor.dialects import DuckDBDialect
from monitor.errors import QueryFailed, QueryTimeout, WarehouseUnavailable
from monitor.warehouse.base import DriverErrors, Warehouse, driver_error

_FileId = tuple[int, int, int, int]

# Every adapter's idle handle is closed before the interpreter shuts down: a closer timer firing
# during finalisation would run DuckDB's C++ code in a thread being torn down, which aborts.
# A query's failure: the check's own (the file was read; a query interrupted at its statement
# timeout is a timeout). Opening the file fails as WarehouseUnavailable whatever the class.
DRIVER_ERRORS: DriverErrors = {
    duckdb.InterruptException: QueryTimeout,
    **dict.fromkeys(
        (
            duckdb.Error,
            duckdb.DatabaseError,
            duckdb.DataError,
            duckdb.IntegrityError,
            duckdb.InternalError,
            duckdb.NotSupportedError,
            duckdb.OperationalError,
            duckdb.ProgrammingError,
            duckdb.BinderException,
            duckdb.CatalogException,
            duckdb.ConnectionException,
            duckdb.ConstraintException,
            duckdb.ConversionException,
            duckdb.DependencyException,
            duckdb.FatalException,
            duckdb.HTTPException,
            duckdb.IOException,
            duckdb.InternalException,
            duckdb.InvalidInputException,
            duckdb.InvalidTypeException,
            duckdb.NotImplementedException,
            duckdb.OutOfMemoryException,
            duckdb.OutOfRangeException,
            duckdb.ParserException,
            duckdb.PermissionException,
            duckdb.ResourceInUseException,
            duckdb.SequenceException,
            duckdb.SerializationException,
            duckdb.SyntaxException,
            duckdb.TransactionException,
            duckdb.TypeMismatchException,
        ),
        QueryFailed,
    ),
}

_OPEN: weakref.WeakSet[DuckDBWarehouse] = weakref.WeakSet()


class _Handle:
    """One read-only open of the file, shared by the queries running on it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, file_id: _FileId) -> None:
        self.con = con
        self.file_id = file_id
        self.users = 0
        self.closer: threading.Timer | None = None


class DuckDBWarehouse(Warehouse):
    """Reads the file through one read-only handle, shared by concurrent queries and closed
    ``keep_open`` seconds after the last one: opening costs tens of milliseconds (the catalog
    and a cold buffer cache) against a few for a query, yet a loader process can take the
    file's write lock between runs. A file rewritten or replaced is opened afresh; ``sql``
    checks cannot modify data."""

    dialect = DuckDBDialect()

    def __init__(self, name: str, config: DuckDBWarehouseConfig) -> None:
        super().__init__(name)
        self.path = Path(config.path)
        self.statement_timeout = config.statement_timeout
        self.keep_open = config.keep_open
        self._lock = threading.Lock()
        self._current: _Handle | None = None
        self._closing = False  # close() was called: no lingering until the next query
        self._running: set[duckdb.DuckDBPyConnection] = set()
        _OPEN.add(self)

    def _file_id(self) -> _FileId:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise WarehouseUnavailable(f"DuckDB file {self.path} does not exist") from None
        except OSError as exc:
            raise WarehouseUnavailable(f"cannot read DuckDB file {self.path}: {exc}") from None
        return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _acquire(self) -> tuple[_Handle, duckdb.DuckDBPyConnection]:
        file_id = self._file_id()
        with self._lock:
            self._closing = False
            handle = self._current
            if handle is None or handle.file_id != file_id:
                if handle is not None and handle.users == 0:
                    self._close(handle)
                try:
                    con = duckdb.connect(str(self.path), read_only=True)
                except duckdb.Error as exc:
                    raise WarehouseUnavailable(
                        f"cannot open DuckDB file {self.path}: {exc}"
                    ) from None
                # a handle still in use by queries on the old file closes when they finish
                handle = self._current = _Handle(con, file_id)
            if handle.closer is not None:
                handle.closer.cancel()
                handle.closer = None
            handle.users += 1
            try:
                cursor = handle.con.cursor()
                cursor.execute("SET TimeZone = 'UTC'")
            except duckdb.Error as exc:
                self._release_locked(handle)
                raise WarehouseUnavailable(f"cannot read DuckDB file {self.path}: {exc}") from None
            self._running.add(cursor)
        return handle, cursor

    def _release(self, handle: _Handle, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._running.discard(cursor)
            cursor.close()
            self._release_locked(handle)

    def _release_locked(self, handle: _Handle) -> None:
        handle.users -= 1
        if handle.users:
            return
        if handle is not self._current or self.keep_open <= 0 or self._closing:
            self._close(handle)
            return
        handle.closer = threading.Timer(self.keep_open, self._close_idle, (handle,))
        handle.closer.daemon = True
        handle.closer.start()

    def _close_idle(self, handle: _Handle) -> None:
        with self._lock:
            if handle.users == 0 and handle.closer is not None:
                self._close(handle)

    def _close(self, handle: _Handle) -> None:
        if handle.closer is not None:
            handle.closer.cancel()
            handle.closer = None
        handle.con.close()
        if self._current is handle:
            self._current = None

    def _query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None
    ) -> pd.DataFrame:
        handle, cursor = self._acquire()
        limit = timeout if timeout is not None else self.statement_timeout
        timer = threading.Timer(limit, cursor.interrupt)
        timer.start()
        try:
            return cursor.execute(sql, dict(params)).df()
        except duckdb.Error as exc:
            kind = driver_error(exc, DRIVER_ERRORS) or QueryFailed
            if kind is QueryTimeout:
                raise QueryTimeout(f"query ran past {limit:g}s and was cancelled") from exc
            raise kind(str(exc).strip()) from exc
        finally:
            timer.cancel()
            self._release(handle, cursor)

    def ping(self) -> None:
        self.query("SELECT 1", {})

    def close(self) -> None:
        """Cancel the statements running; the file closes as soon as they end."""
        with self._lock:
            self._closing = True
            for cursor in self._running:
                cursor.interrupt()
            handle = self._current
            if handle is not None and handle.users == 0:
                self._close(handle)


@atexit.register
def _close_all() -> None:
    for warehouse in list(_OPEN):
        warehouse.close()
