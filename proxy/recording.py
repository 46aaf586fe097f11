"""Step 7: one RequestLog row per call, plus the per-key daily usage totals.

Rows are queued and written in batches by a background thread (GATEWAY_LOG_FLUSH_SECONDS), so a
call never waits for the database; with 0 each row is written when its call finishes. `flush()`
writes what is queued; it runs at exit and when a gunicorn worker stops, so graceful shutdowns
and worker restarts lose nothing. A failing write never fails a call: it is reported in the
server's log (and the rows are kept for the next try, up to a bound). Rows a stopping process
cannot write (the database is away) go to a spool file on local disk (proxy/spool.py), which
the writer of any gateway process, this one restarted or another, replays once the database
answers: exactly once, however many processes find the file.

No input can stop the log: values are made storable first (proxy/storable.py), and a batch the
database still refuses is written row by row. A row refused for its own values is dropped,
counted and reported (never retried forever); rows refused because the database is away are
kept for the next flush, unchanged. /readyz and /metrics show when writes fail.
"""

import atexit
import functools
import json
import logging
import threading
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path

from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from routes_admin.models import APIKey, KeyUsage, RequestLog, Route, SpooledLogFile

from . import alerts, database, metrics, rollups, runtime
from .spool import Spool, database_folder, json_default
from .storable import storable

log = logging.getLogger("gateway.recording")
access_log = logging.getLogger("gateway.access")

COLUMNS = [field.attname for field in RequestLog._meta.concrete_fields if not field.primary_key]
MAX_PENDING = 200_000  # beyond this (database down for long), the oldest rows are dropped and reported
STOP_FLUSH_ROUNDS = 10  # at stop, flushes in a row while calls finishing meanwhile still queue rows
STOP_LOCK_TIMEOUT = 5.0  # at stop, how long to wait for a flush in progress before spooling the rest
IDLE_WRITER_SECONDS = 1.0  # how often the writer looks for spooled rows when the calls write their own
REPLAY_RETRY_SECONDS = 5.0  # a spool replay that failed (the database is still away) is tried again after this


class LogWriter:
    """The log writer of one process (in its runtime, proxy/runtime.py): the queued rows, the
    background thread that writes them in batches, whether it is stopping (rows it cannot write
    then go to the spool at once, not at exit: a worker outliving the graceful timeout is killed),
    when it looks for spooled rows to replay next, and since when the oldest queued row waits."""

    def __init__(self, background: bool = True):
        self.background = background  # False: no thread, rows wait for flush() (tests)
        self.pending_rows: deque = deque()
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self.wake = threading.Event()
        self.started = False  # its thread runs
        self.closed = False  # its thread ends (a runtime replaced in tests)
        self.failing = False  # the last write left rows unwritten (the database refused or was away)
        self.stopping = False
        self.next_replay = 0.0
        self.oldest_queued: float | None = None  # time.monotonic() of the oldest row not yet taken by a flush

    def spool(self) -> Spool:
        """The spool of the database this process writes to (its folder follows the settings)."""
        fields = {field.attname: field for field in RequestLog._meta.concrete_fields if not field.primary_key}
        folder = Path(settings.GATEWAY_LOG_SPOOL_DIR) / database_folder(connection.settings_dict)
        return Spool(folder, fields)

    def queue(self, row: dict) -> None:
        """Queue a row for the background thread (started by the first row)."""
        with self.lock:
            if len(self.pending_rows) >= MAX_PENDING:
                self.pending_rows.popleft()
                metrics.log_rows_dropped("queue_full")
                log.error("log queue full: dropped the oldest row")
            self.pending_rows.append(row)
            if self.oldest_queued is None:
                self.oldest_queued = time.monotonic()
        if self.stopping:
            self.wake.set()  # a stopping process may be killed at the graceful timeout: write it now
        self.ensure_started()

    def flush(self, lock_timeout: float = 60) -> int:
        """Write the rows queued when it starts, in batches, in this thread. Returns how many were written.

        Rows queued meanwhile wait for the next flush: under steady traffic, chasing them turned one
        batch every GATEWAY_LOG_FLUSH_SECONDS into a stream of tiny ones, each paying a transaction.
        Flushes run one at a time: a flush that starts while another is still writing waits for it,
        so "flushed" means "on disk" (a stopping worker relies on that).
        """
        if not self.flush_lock.acquire(timeout=lock_timeout):
            log.error("a log flush is stuck; %d row(s) still queued", len(self.pending_rows))
            return 0
        try:
            written = 0
            with self.lock:
                left = len(self.pending_rows)
                since, self.oldest_queued = self.oldest_queued, None
            while left > 0:
                with self.lock:
                    batch = [
                        self.pending_rows.popleft()
                        for _ in range(min(left, len(self.pending_rows), settings.GATEWAY_LOG_BATCH_SIZE))
                    ]
                if not batch:
                    return written
                left -= len(batch)
                saved, unwritten = _write(batch, self)
                written += saved
                if unwritten:
                    with self.lock:  # keep them for the next try, in order
                        self.pending_rows.extendleft(reversed(unwritten))
                        self.oldest_queued = since
                    return written
            if since is not None:
                # How long the oldest of these rows waited in memory: what a killed process can lose.
                metrics.log_write_lag(time.monotonic() - since)
            return written
        finally:
            self.flush_lock.release()

    def pending(self) -> int:
        return len(self.pending_rows)

    def spool_pending(self, lock_timeout: float = STOP_LOCK_TIMEOUT) -> int:
        """Move the queued rows to the spool (a stopping process whose database is away). Returns how many."""
        locked = self.flush_lock.acquire(timeout=lock_timeout)  # a flush in progress finishes (or gives back its rows)
        try:
            with self.lock:
                rows = list(self.pending_rows)
                self.pending_rows.clear()
            if not rows:
                return 0
            try:
                files = self.spool().keep(rows)
            except Exception:
                log.exception("could not spool %d request log row(s); they are lost if this process exits", len(rows))
                with self.lock:
                    self.pending_rows.extendleft(reversed(rows))
                return 0
            metrics.log_rows_spooled(len(rows))
            log.warning("database unavailable: kept %d request log row(s) in %s", len(rows), files[0].parent)
            return len(rows)
        finally:
            if locked:
                self.flush_lock.release()

    def flush_or_spool(self) -> tuple[int, int]:
        """At stop and exit: write what is queued, rows queued meanwhile included; spool only what
        the database did not take (or what a stuck flush still holds). (written, spooled)

        One flush writes the rows queued when it starts; calls finishing while it writes queue
        more. Spooling those would send rows of a healthy database to disk, where only a later
        process replays them, so the flushes go on while they make progress."""
        written = 0
        for _ in range(STOP_FLUSH_ROUNDS):
            saved = self.flush(STOP_LOCK_TIMEOUT)
            written += saved
            if not saved or self.failing or not self.pending_rows:
                break
        return written, self.spool_pending()

    def stop(self) -> None:
        """The process starts stopping: write what is queued, and from now on spool what cannot be written."""
        self.stopping = True
        self.flush_or_spool()

    def replay_if_due(self) -> None:
        now = time.monotonic()
        if now < self.next_replay:
            return
        try:
            replay_spool()
        except Exception as exc:
            self.next_replay = now + REPLAY_RETRY_SECONDS
            log.warning("could not replay the spooled request log rows yet: %s", exc)

    def loop(self) -> None:
        # A flush starts every GATEWAY_LOG_FLUSH_SECONDS, counted from the start of the previous one:
        # waiting a full interval after each flush made a row wait the interval plus the flush's time
        # plus the interval again when it arrived just as a flush began.
        next_flush = time.monotonic()
        while not self.closed:
            # With 0 the calls write their own rows and the writer only replays the spool: it must not spin.
            interval = settings.GATEWAY_LOG_FLUSH_SECONDS or IDLE_WRITER_SECONDS
            next_flush = max(next_flush + interval, time.monotonic() - 1)
            if self.wake.wait(max(0.0, next_flush - time.monotonic())):
                next_flush = time.monotonic()  # woken early: the next interval counts from now
            self.wake.clear()
            try:
                self.flush()
                if self.stopping and self.failing:  # the database is away: keep the rows on disk now
                    self.spool_pending()
                else:
                    self.replay_if_due()
            except Exception:  # the writer outlives any one round: a dead writer would queue rows until dropped
                log.exception("the request log writer's round failed; it tries again")
            try:
                close_old_connections()
            except Exception:  # the next round's write reports a database that is away
                log.debug("could not close the log writer's database connection", exc_info=True)

    def close(self) -> None:
        """Write what is queued and end the thread (tests, which give each test a fresh runtime)."""
        self.closed = True
        self.wake.set()
        self.flush_or_spool()

    def ensure_started(self) -> None:
        """Start the background writer thread of this writer (once: a forked child has a runtime of its own)."""
        if self.started or not self.background:
            return
        with self.lock:
            if self.started:
                return
            self.started = True
        threading.Thread(target=self.loop, name="gateway-log-writer", daemon=True).start()


# Errors caused by a row's own values; any other error (a lost connection, a missing table) is the
# database's, and the rows wait for it.
ROW_ERRORS = (DataError, IntegrityError, ValueError, TypeError, OverflowError)


def _row(call, latency_ms: float) -> dict:
    """The RequestLog row as field values (a model instance is made only where one is needed)."""
    usage = call.usage or {}
    route = call.route
    key = call.key
    return dict(
        created=call.created,
        request_id=call.request_id,
        api_key_id=key.id if key else None,
        key_prefix=key.prefix if key else "",
        route_id=route.id if route else None,
        route_name=route.name if route else "",
        method=call.method,
        path=call.path,
        model=call.model,
        upstream_model=call.upstream_model,
        status=call.status,
        latency_ms=round(latency_ms, 3),
        upstream_ms=round(call.upstream_ms, 3) if call.upstream_ms is not None else None,
        target=call.target,
        targets_tried=call.targets_tried,
        attempts=call.attempts,
        fallback_from=call.fallback_from,
        streamed=call.streamed,
        bytes_in=call.bytes_in,
        bytes_out=call.bytes_out,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        total_tokens=usage.get("total_tokens"),
        usage_estimated=call.usage_estimated,
        error_type=call.error_type,
        limit=call.limit,
        client_ip=call.client_ip or None,
        detail=call.detail,
        job_id=call.job_id or None,
        queue_ms=round(call.queue_ms, 3) if call.queue_ms is not None else None,
        cost=call.cost,
        team_name=key.team_name if key else "",
    )


def _access_line(row: dict) -> str:
    return json.dumps(
        {
            "time": row["created"].isoformat(),
            "request_id": row["request_id"],
            "key": row["key_prefix"],
            "route": row["route_name"],
            "method": row["method"],
            "path": row["path"],
            "status": row["status"],
            "latency_ms": row["latency_ms"],
            "target": row["target"],
            "attempts": row["attempts"],
            "tokens": row["total_tokens"],
            "error": row["error_type"],
            "client_ip": row["client_ip"],
        },
        separators=(",", ":"),
    )


def record(call, latency_ms: float) -> None:
    row = storable(_row(call, latency_ms))
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(_access_line(row))
    if settings.GATEWAY_LOG_FLUSH_SECONDS <= 0:
        _write([row], runtime.current().log_writer)  # failures are reported there; the call goes on
        return
    runtime.current().log_writer.queue(row)


def _usage_increments(rows) -> dict:
    """(key id, day) -> summed requests and tokens."""
    totals: dict = {}
    for row in rows:
        if row["api_key_id"] is None or row["status"] == 0:
            continue
        day = timezone.localdate(row["created"])
        t = totals.setdefault((row["api_key_id"], day), [0, 0, 0, 0])
        t[0] += 0 if row["job_id"] else 1  # a job's request counted when it was accepted (its 202)
        t[1] += row["prompt_tokens"] or 0
        t[2] += row["completion_tokens"] or 0
        t[3] += row["total_tokens"] or 0
    return totals


def _add_usage(totals: dict) -> None:
    # Sorted: writers in other processes take the same rows in the same order, never the reverse
    # of each other (which deadlocks on PostgreSQL). The rollups are sorted for the same reason.
    for (key_id, day), (requests, prompt, completion, total) in sorted(totals.items()):
        rows = KeyUsage.objects.filter(api_key_id=key_id, day=day)
        increments = {
            "requests": F("requests") + requests,
            "prompt_tokens": F("prompt_tokens") + prompt,
            "completion_tokens": F("completion_tokens") + completion,
            "total_tokens": F("total_tokens") + total,
        }
        if not rows.update(**increments):
            # Another writer may create the day's row at the same moment: create-or-ignore, then add.
            KeyUsage.objects.bulk_create([KeyUsage(api_key_id=key_id, day=day)], ignore_conflicts=True)
            rows.update(**increments)


def _insert(rows: list) -> None:
    """SQLite: one statement run over every row, each value made as bulk_create makes it (the
    field's get_db_prep_save) where the column needs more than the row's own value. bulk_create
    built a model per row and one INSERT per 30 rows (SQLite's 999 parameters): 0.9 M
    instructions a row, against 0.2 M. (PostgreSQL: _save_in_one_statement.)"""
    with connection.cursor() as cursor:
        cursor.executemany(_insert_statement(), [_insert_values(_complete(row)) for row in rows])


def _complete(row: dict) -> dict:
    """The row with the model's default for any column it leaves out (rows made elsewhere:
    bench/console.py leaves the cost out), as a model made from it would have."""
    if len(row) < len(COLUMNS):
        for field, name, _ in INSERT_FIELDS:
            if name not in row:
                row[name] = field.get_default()
    return row


# Columns whose values go to SQLite as they are: text, numbers and ids, which storable() made sure of.
AS_THEY_ARE = frozenset(
    {"CharField", "FloatField", "ForeignKey", "PositiveSmallIntegerField", "PositiveIntegerField"}
    | {"PositiveBigIntegerField"}
)
INSERT_FIELDS = [
    (field, field.attname, field.get_internal_type() not in AS_THEY_ARE)
    for field in RequestLog._meta.concrete_fields
    if not field.primary_key
]


def _insert_values(row: dict) -> list:
    return [
        field.get_db_prep_save(row[name], connection) if prepared else row[name]
        for field, name, prepared in INSERT_FIELDS
    ]


def _insert_statement() -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field, _, _ in INSERT_FIELDS)
    places = ", ".join(["%s"] * len(INSERT_FIELDS))
    return f"INSERT INTO {quote(RequestLog._meta.db_table)} ({columns}) VALUES ({places})"


def _save(rows: list) -> None:
    if connection.vendor == "postgresql":
        _save_in_one_statement(rows)
        return
    with transaction.atomic():
        _insert(rows)
        _add_usage(_usage_increments(rows))
        rollups.add(rows)  # the dashboard's sums, saved with the rows they count
        alerts.record(rows)  # budget thresholds the calls crossed (proxy/budgets.py), queued to be sent


def _save_in_one_statement(rows: list) -> None:
    """PostgreSQL: the rows, their keys' usage and their rollups in one statement, its own transaction.

    Under gevent the writer is one greenlet among the calls': each round trip to the database
    gives the turn to every call ready to run before the writer runs again. A transaction of
    BEGIN, COPY, the usage updates, the rollups and COMMIT made 7 round trips (16 waits), and
    under load on a busy machine a flush took up to 3 s: rows a killed worker loses (bench/log_lag.py).
    One statement is one round trip, and the rows other writers share (usage, rollups) are locked
    only while the database runs it, not across the writer's turns. The rows travel as one JSON
    parameter: as cheap as COPY for the gateway, a little dearer for the database."""
    statements = rollups.upserts(rows)
    main, params = statements[0] if statements else ("SELECT 1", [])
    usage = _usage_upsert(_usage_increments(rows))
    sql = f"WITH {_log_insert()}{', ' + usage if usage else ''} {main}"
    # A batch with more rollup groups than one statement takes (thousands of keys or models) is
    # written in a transaction of its own; inside a caller's transaction (a spool replay), a
    # savepoint keeps a refused batch from aborting it.
    # Budget alerts the calls crossed (rare) are recorded and queued in the same transaction.
    crossed = bool(alerts.crossings(rows))
    own_transaction = len(statements) > 1 or connection.in_atomic_block or crossed
    with transaction.atomic() if own_transaction else nullcontext(), connection.cursor() as cursor:
        cursor.execute(sql, [_rows_json(rows), *params])
        for more, more_params in statements[1:]:
            cursor.execute(more, more_params)
        if crossed:
            alerts.record(rows)


@functools.cache
def _log_insert() -> str:
    quote = connection.ops.quote_name
    table = quote(RequestLog._meta.db_table)
    columns = ", ".join(quote(RequestLog._meta.get_field(name).column) for name in COLUMNS)
    # The rows arrive as one JSON array of objects named by column; PostgreSQL reads each value
    # through its column's type (dates, decimals, addresses, JSON).
    return (
        f"log AS (INSERT INTO {table} ({columns}) "
        f"SELECT {columns} FROM json_populate_recordset(NULL::{table}, %s::json))"
    )


# Fields whose column has another name: renamed in the JSON the statement reads.
_RENAMED = {
    field.attname: field.column
    for field in RequestLog._meta.concrete_fields
    if not field.primary_key and field.attname != field.column
}


def _rows_json(rows: list) -> str:
    rows = [_complete(row) for row in rows]
    if _RENAMED:
        rows = [{_RENAMED.get(name, name): value for name, value in row.items()} for row in rows]
    return json.dumps(rows, default=json_default)


def _usage_upsert(totals: dict) -> str:
    """The per-key daily totals added in the statement that writes the rows (PostgreSQL).

    Sorted, as in _add_usage: writers in other processes take the same rows in the same order.
    Every value is the gateway's own number or date, written inline."""
    if not totals:
        return ""
    quote = connection.ops.quote_name
    table = quote(KeyUsage._meta.db_table)
    sums = ("requests", "prompt_tokens", "completion_tokens", "total_tokens")
    values = ", ".join(
        f"({key_id:d}, DATE '{day.isoformat()}', {', '.join(str(int(n)) for n in counts)})"
        for (key_id, day), counts in sorted(totals.items())
    )
    updates = ", ".join(f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in sums)
    return (
        f"usage AS (INSERT INTO {table} ({quote('api_key_id')}, {quote('day')}, {', '.join(map(quote, sums))}) "
        f"VALUES {values} ON CONFLICT ({quote('api_key_id')}, {quote('day')}) DO UPDATE SET {updates})"
    )


def _write(rows: list, writer: LogWriter) -> tuple[int, list]:
    """Save rows. Returns how many were saved and the rows kept for later (the database is away)."""
    try:
        # A database that is down must not hold the writer (or a stopping worker) for the pool's
        # DATABASE_POOL_TIMEOUT on every try.
        database.connect(settings.GATEWAY_CONFIG_DB_TIMEOUT)
        _save(rows)
    except ROW_ERRORS:
        log.warning("could not write %d request log row(s) at once; trying one by one", len(rows), exc_info=True)
    except Exception:
        return 0, _unavailable(rows, writer)
    else:
        metrics.log_rows_written(len(rows))
        writer.failing = False
        return len(rows), []
    # One bad row must not hold back the others.
    written = 0
    for index, row in enumerate(rows):
        try:
            _save_one(row)
        except ROW_ERRORS:
            metrics.log_rows_dropped("unstorable")
            log.exception("dropped request log row %s: the database refuses its values", row.get("request_id"))
        except Exception:
            if written:
                metrics.log_rows_written(written)
            return written, _unavailable(rows[index:], writer)
        else:
            written += 1
    metrics.log_rows_written(written)
    writer.failing = False
    return written, []


def _save_one(row: dict) -> None:
    try:
        _save([row])
    except IntegrityError:
        if not _forget_deleted(row):
            raise
        _save([row])


def _forget_deleted(row: dict) -> bool:
    """Clear the key or route the row names when it was deleted meanwhile (its prefix and name
    still say who and where). True when one was."""
    forgotten = False
    if row["api_key_id"] is not None and not APIKey.objects.filter(id=row["api_key_id"]).exists():
        row["api_key_id"] = None
        forgotten = True
    if row["route_id"] is not None and not Route.objects.filter(id=row["route_id"]).exists():
        row["route_id"] = None
        forgotten = True
    return forgotten


def _unavailable(rows: list, writer: LogWriter) -> list:
    writer.failing = True
    metrics.log_write_failed()
    log.exception("request log unavailable; keeping %d row(s) for later", len(rows))
    return rows


def failing() -> bool:
    """True while the last write left rows unwritten (for /readyz)."""
    return runtime.current().log_writer.failing


def replay_spool() -> int:
    """Write the spooled rows of this process's database, each file exactly once. Returns the rows written.

    Raises a database error while the database is away (the files wait for the next try)."""
    spool = runtime.current().log_writer.spool()
    files = spool.files()
    if not files:
        return 0
    database.connect(settings.GATEWAY_CONFIG_DB_TIMEOUT)
    written = 0
    for path in files:
        rows = spool.read(path)
        if rows is None:  # another process replayed it meanwhile
            continue
        with transaction.atomic():
            try:
                with transaction.atomic():
                    # Waits for another process replaying the same file, and fails once it committed.
                    SpooledLogFile.objects.create(name=path.name, rows=len(rows))
            except IntegrityError:
                replayed = 0
            else:
                replayed = _save_replayed(rows)
        spool.remove(path)
        written += replayed
        if replayed:
            log.info("replayed %d spooled request log row(s) from %s", replayed, path.name)
    return written


def _save_replayed(rows: list) -> int:
    """Save a spool file's rows inside the replay's transaction; a row refused for its values is dropped."""
    try:
        with transaction.atomic():
            _save(rows)
    except ROW_ERRORS:
        saved = 0
        for row in rows:
            try:
                with transaction.atomic():
                    _save_one(row)
            except ROW_ERRORS:
                metrics.log_rows_dropped("unstorable")
                log.exception(
                    "dropped spooled request log row %s: the database refuses its values", row.get("request_id")
                )
            else:
                saved += 1
    else:
        saved = len(rows)
    metrics.log_rows_written(saved)
    return saved


def flush(lock_timeout: float = 60) -> int:
    """Write the rows queued when it starts (LogWriter.flush). Returns how many were written."""
    return runtime.current().log_writer.flush(lock_timeout)


def pending() -> int:
    return runtime.current().log_writer.pending()


def spool_pending(lock_timeout: float = STOP_LOCK_TIMEOUT) -> int:
    return runtime.current().log_writer.spool_pending(lock_timeout)


def flush_or_spool() -> tuple[int, int]:
    """At exit: write what is queued, spool what the database does not take. (written, spooled)"""
    return runtime.current().log_writer.flush_or_spool()


def stopping() -> None:
    """The process starts stopping: write what is queued, and from now on spool what cannot be written."""
    runtime.current().log_writer.stop()


def start() -> None:
    """Start the writer now rather than at the first call, so spooled rows are replayed at start."""
    runtime.current().log_writer.ensure_started()


def _at_exit() -> None:
    if runtime.has_one():  # a process that never built its runtime has no rows to write
        flush_or_spool()


atexit.register(_at_exit)
