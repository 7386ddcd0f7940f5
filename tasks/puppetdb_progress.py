"""Progress of a long copy step, read from what PostgreSQL on the node has (its size, ``pg_stat_progress_*``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pe_ha.background import Background
from pe_ha.forecast import time_left
from pe_ha.psql import SqlReader
from tasks._base import logger


@dataclass(frozen=True)
class LoadProgress:
    """One look at a database being loaded: its size now, and what PostgreSQL is doing in it."""

    bytes: int
    activity: list[str]  # e.g. "COPY catalog_resources: 212 MB, 1204000 rows", "INDEX on edges: building index 40 %"
    unseen: str = ""  # what this PostgreSQL cannot show, so that an empty activity is not read as idle

    def now(self) -> str:
        seen = "; ".join(self.activity) or ("" if self.unseen else "no COPY or index build running")
        return "; ".join(part for part in (seen, self.unseen) if part)


def load_progress(conn: SqlReader) -> LoadProgress:
    """The connected database's size and its running COPY and CREATE INDEX commands (``pg_stat_progress_*``,
    which PostgreSQL's owner sees for every session). Read outside any transaction."""
    size = int(conn.value("SELECT pg_database_size(current_database())") or 0)
    major = conn.major()
    if major < 12:  # pg_stat_progress_copy is 14+, pg_stat_progress_create_index 12+
        return LoadProgress(size, [], f"PostgreSQL {major} cannot show COPY or index-build progress")
    if major < 14:
        return LoadProgress(size, _index_progress(conn), f"PostgreSQL {major} cannot show COPY progress")
    rows = conn.rows(
        "SELECT 'COPY ' || coalesce(c.relname, p.relid::text) || ': ' || pg_size_pretty(p.bytes_processed) || ', '"
        " || p.tuples_processed || ' rows' FROM pg_stat_progress_copy p LEFT JOIN pg_class c ON c.oid = p.relid"
        " WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " UNION ALL "
        "SELECT 'INDEX on ' || coalesce(c.relname, p.relid::text) || ': ' || p.phase || CASE"
        " WHEN p.blocks_total > 0 THEN ' ' || (100 * p.blocks_done / p.blocks_total) || ' %'"
        " WHEN p.tuples_total > 0 THEN ' ' || (100 * p.tuples_done / p.tuples_total) || ' %' ELSE '' END"
        " FROM pg_stat_progress_create_index p LEFT JOIN pg_class c ON c.oid = p.relid"
        " WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())")
    return LoadProgress(size, sorted(r[0] for r in rows))


def _index_progress(conn: SqlReader) -> list[str]:
    rows = conn.rows(
        "SELECT 'INDEX on ' || coalesce(c.relname, p.relid::text) || ': ' || p.phase"
        " FROM pg_stat_progress_create_index p LEFT JOIN pg_class c ON c.oid = p.relid"
        " WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())")
    return sorted(r[0] for r in rows)


class ProgressWatch:
    """While a long step runs: every ``every_s`` seconds, what PostgreSQL on ``host`` is doing in ``database``
    (its COPY and index builds) and, given ``expected_bytes`` (the source's size), how far the database has
    grown toward it, as a log line and in the run's progress artifact; given ``expected_s`` (the step's
    forecast), the expected time left. A look that fails is skipped:
    progress reporting never fails or holds up the copy.

    Use as a context manager around the step; ``probe(host, database)`` takes one look.
    """

    def __init__(self, host: str, database: str, label: str, *, probe: Callable[[str, str], LoadProgress],
                 expected_bytes: int = 0, expected_s: float = 0, every_s: float = 3.0) -> None:
        self.host, self.database, self.label, self.expected = host, database, label, expected_bytes
        self.expected_s = expected_s  # the step's forecast: each look says how much of it is left
        self.every_s = every_s
        self.probe = probe
        self.looks: list[LoadProgress] = []
        self._stop = threading.Event()
        self._artifact: object = None
        self._watcher: Background | None = None

    def __enter__(self) -> ProgressWatch:
        if self.expected > 0:
            try:
                from prefect.artifacts import create_progress_artifact

                self._artifact = create_progress_artifact(
                    progress=0.0, key="puppetdb-copy-progress",
                    description=self._description())
            except Exception:  # outside a flow run there is no artifact; the log lines still come
                self._artifact = None
        self._started = time.monotonic()
        self._watcher = Background(self._watch, "pe-ha-progress")
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        if self._watcher is not None:
            # A look stuck on a dead link must not hold the step: the daemon thread is left to its timeout.
            self._watcher.wait(2.0)
        if exc_type is None:  # the step is done: a fresh copy is smaller than its source, so size never says 100 %
            self._show(100.0)

    def _description(self, left: str = "") -> str:
        return f"{self.label}: size of {self.database} on {self.host} against the source's" + (f"; {left}" if left else "")

    def _show(self, share: float, left: str = "") -> None:
        if self._artifact is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact, progress=share,  # type: ignore[arg-type]
                                     description=self._description(left))
        except Exception as exc:  # a missed artifact update is cosmetic
            logger().debug("progress artifact not updated: %s", exc)

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                look = self.probe(self.host, self.database)
            except Exception as exc:  # e.g. the database is being swapped or the link blinked: next look
                logger().debug("progress of %s on %s not readable: %s", self.database, self.host, exc)
                continue
            if self._stop.is_set():
                return
            self.looks.append(look)
            now = look.now()
            elapsed = time.monotonic() - self._started
            left = time_left(self.expected_s, elapsed)
            if self.expected <= 0:
                logger().info("%s after %.0f s%s: %s", self.label, elapsed, f" ({left})" if left else "", now)
                continue
            share = min(99.0, 100.0 * look.bytes / self.expected)
            logger().info("%s: %.0f%% (%.0f of %.0f MiB) after %.0f s%s; now: %s", self.label, share,
                          look.bytes / 2**20, self.expected / 2**20, elapsed, f" ({left})" if left else "", now)
            self._show(share, left)


