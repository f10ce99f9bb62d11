"""Counters of every VTEX and ERP call, shared by all the hub's processes through the CallCount table.

call_record() is on the hot path (hundreds of calls a second), so it only adds to this process's buffer.
A daemon thread, started by the first record of each process (a forked child starts its own), adds the
buffer to the table every HUB_METRICS_FLUSH_SECONDS with one upsert, race-safe across processes and
machines; so do the process's exit (atexit, or multiprocessing's exit for a forked worker), the /metrics
scrape and call_counts_flush(). A flush uses a database connection of its own, never the caller's
transaction, and a flush that fails keeps its counts for the next one.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import logging
import multiprocessing.util
import os
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

log = logging.getLogger("hub.metrics")

BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000)  # CallCount.le_<ms>ms, cumulative
KEY_COLUMNS = ("system", "store", "operation", "status")
SUM_COLUMNS = ("count", "duration_ms_sum", *(f"le_{ms}ms" for ms in BUCKETS_MS))

Key = tuple[str, str, str, str]  # system, store, operation, status
Tally = list[int]  # count, duration_ms_sum, then one cumulative count per bucket

_lock = threading.Lock()  # guards _pending and _flusher_pid
_flush_lock = threading.Lock()  # one flush at a time: when call_counts_flush() returns, earlier records are written
_pending: dict[Key, Tally] = {}
_flusher_pid = 0  # the process whose flusher thread runs; another pid means a forked child that needs its own
_failing = False  # a flush failed and nothing was written since: log the outage once, not every 5 s


def call_record(system: str, store: str, operation: str, status: int | str, duration_ms: float) -> None:
    """Count one call (status: the HTTP status, or "error" when there was no answer). Only touches memory."""
    # Cut to CallCount's max_length: PostgreSQL would refuse the whole batch for one long label.
    key: Key = (system[:10], (store or "unknown")[:64], operation[:30], str(status)[:10])
    ms = max(0, int(duration_ms))
    first_bucket = bisect.bisect_left(BUCKETS_MS, ms)  # ms fits this bucket and every larger one
    with _lock:
        tally = _pending.get(key)
        if tally is None:
            tally = _pending[key] = [0] * len(SUM_COLUMNS)
        tally[0] += 1
        tally[1] += ms
        for i in range(2 + first_bucket, len(tally)):
            tally[i] += 1
        if _flusher_pid != os.getpid():
            _start_flusher()


def call_counts_flush() -> bool:
    """Add this process's buffered calls to CallCount; False if the database failed (the counts are kept)."""
    global _pending
    with _flush_lock:
        with _lock:
            batch, _pending = _pending, {}
        if not batch:
            return True
        # Sorted: every process locks the rows in the same order, so concurrent upserts cannot deadlock.
        rows = sorted(batch.items())
        written = _write(rows)
        if written < len(rows):
            _keep(rows[written:])
            return False
        return True


def call_counts_discard() -> None:
    """Forget the calls not written yet (the tests: counts of one test must not land in another's database)."""
    with _lock:
        _pending.clear()


def _write(rows: list[tuple[Key, Tally]]) -> int:
    """Upsert the rows on a connection of our own; how many were written (each statement commits alone)."""
    global _failing
    connection: BaseDatabaseWrapper | None = None
    written = 0
    try:
        connection = connections.create_connection(DEFAULT_DB_ALIAS)  # not the caller's: never its transaction
        for chunk in _chunks(rows, connection):
            with connection.cursor() as cursor:
                cursor.execute(_upsert_sql(connection, len(chunk)),
                               [value for key, tally in chunk for value in (*key, *tally)])
            written += len(chunk)
    except Exception as exc:  # noqa: BLE001 - the database down, locked or refusing: counts wait for the next flush
        if not _failing:
            log.warning("call counts not written, kept for the next flush: %s: %s", type(exc).__name__, exc)
        _failing = True
    else:
        if _failing:
            log.info("call counts written again")
        _failing = False
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):  # a connection that never opened, or broke: nothing to keep
                connection.close()
    return written


def _chunks(rows: list[tuple[Key, Tally]], connection: BaseDatabaseWrapper) -> Iterable[list[tuple[Key, Tally]]]:
    """One statement per flush, unless there are more rows than the database takes parameters (SQLite)."""
    per_row = len(KEY_COLUMNS) + len(SUM_COLUMNS)
    size = max(1, min(500, (connection.features.max_query_params or 65535) // per_row))
    return (rows[start:start + size] for start in range(0, len(rows), size))


def _upsert_sql(connection: BaseDatabaseWrapper, rows: int) -> str:
    """INSERT ... ON CONFLICT DO UPDATE adding to the stored sums (PostgreSQL, and SQLite >= 3.24)."""
    # Imported here, not at the top: the VTEX client imports this module, and it needs no app registry.
    from core.models import CallCount

    quote = connection.ops.quote_name
    table = quote(CallCount._meta.db_table)
    columns = ", ".join(quote(column) for column in (*KEY_COLUMNS, *SUM_COLUMNS))
    values = ", ".join(["(" + ", ".join(["%s"] * (len(KEY_COLUMNS) + len(SUM_COLUMNS))) + ")"] * rows)
    adds = ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in SUM_COLUMNS)
    keys = ", ".join(quote(column) for column in KEY_COLUMNS)
    return f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT ({keys}) DO UPDATE SET {adds}"


def _keep(rows: list[tuple[Key, Tally]]) -> None:
    """Put unwritten counts back, adding to what was recorded meanwhile."""
    with _lock:
        for key, tally in rows:
            pending = _pending.setdefault(key, [0] * len(SUM_COLUMNS))
            for i, value in enumerate(tally):
                pending[i] += value


def _start_flusher() -> None:
    """Called with _lock held, once per process."""
    global _flusher_pid
    _flusher_pid = os.getpid()
    threading.Thread(target=_flush_forever, name="call-counts-flush", daemon=True).start()
    # A multiprocessing child (sync's forked workers, django-q2's) ends with os._exit, which skips atexit, after
    # running multiprocessing's own exit finalizers; a child starts with none, hence registered here, per process.
    multiprocessing.util.Finalize(None, call_counts_flush, exitpriority=0)


def _flush_forever() -> None:
    while True:
        time.sleep(max(0.5, float(getattr(settings, "HUB_METRICS_FLUSH_SECONDS", 5))))
        call_counts_flush()


def _forget_parent_counts() -> None:
    """In a forked child: the parent flushes its own buffer (a copy here would count twice), and a parent
    thread may have held a lock at the fork, which would stay held forever in the child."""
    global _lock, _flush_lock, _pending, _failing
    _lock, _flush_lock = threading.Lock(), threading.Lock()
    _pending, _failing = {}, False


os.register_at_fork(after_in_child=_forget_parent_counts)
atexit.register(call_counts_flush)  # the last seconds of a process that exits normally (not by os._exit)
