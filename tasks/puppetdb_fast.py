"""The fast copy: the schema frame, one stream per table into a staging database on the target (each table's
indexes built once its rows are in), the rest of post-data, then the check of the staging copy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prefect import task

from pe_ha import commands
from pe_ha.background import Background
from pe_ha.context import RunContext
from pe_ha.errors import DatabaseError, PostconditionFailed, PreconditionFailed
from pe_ha.psql import SqlReader
from tasks._base import READ, SIDE_EFFECT, logger
from tasks.copy_plan import (
    COMPRESSORS,
    PLANNED_SNAPSHOT,
    FastCopyFacts,
    FastCopyPlan,
    IndexInfo,
    PlannedJob,
    loaded_rows,
    post_data_plan,
)
from tasks.puppetdb import DB, connect, differences, fingerprint_in, watch_load


def leaf_tables(conn: SqlReader) -> list[tuple[str, int]]:
    """Every table that holds rows (partitions included, partitioned parents excluded) with its size without
    indexes (heap and TOAST), largest first."""
    rows = conn.rows(
        "SELECT c.relname, pg_table_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC, 1")
    return [(r[0], int(r[1])) for r in rows]


def link_mb_per_s(ctx: RunContext, source: str, target: str, timed_mb: int = 20) -> float:
    """Throughput of ssh from source to target in MB/s (10^6 bytes, as the forecast counts them), timed by the
    target as the data arrives (after a lead that carries the connection through TCP's slow start), so neither
    ssh's handshake nor pe-ha's own session counts: timed from here, they made a 100 Mbit/s link read fast enough
    to go uncompressed."""
    probe = commands.link_probe(target, timed_mb=timed_mb)
    out = ctx.executor.run(source, probe, timeout_s=600, stream=False).stdout.split()
    try:
        seconds = float(out[-1]) - float(out[-2])
    except (IndexError, ValueError) as exc:
        raise PreconditionFailed(f"the link probe from {source} to {target} printed no arrival times: {out[-4:]}",
                                 hint=f"run `{probe.shell()}` on {source}; dd and date must be on {target}") from exc
    if seconds <= 0.005:  # faster than the target's clock can tell apart from nothing
        logger().info("link %s -> %s: faster than the probe can tell (ssh, aes128-gcm)", source, target)
        return float("inf")
    rate = timed_mb * 2**20 / 1e6 / seconds  # dd pushes MiB
    logger().info("link %s -> %s: %.0f MB/s (ssh, aes128-gcm)", source, target, rate)
    return rate


@task(name="link-probe", task_run_name="link-probe/{source}->{target}", **READ)
def read_link_rate(ctx: RunContext, source: str, target: str) -> float:
    """The link's rate, read with the copy's other facts: the fast copy's compression and both methods' forecast."""
    return link_mb_per_s(ctx, source, target)


def installed_compressors(ctx: RunContext, source: str, target: str) -> tuple[str, ...]:
    """Of COMPRESSORS, those both ends have, in order of preference."""
    ex = ctx.executor
    return tuple(tool for tool in COMPRESSORS
                 if all(ex.run(h, commands.has_tool(tool), check=False, timeout_s=30, stream=False).exit_code == 0
                        for h in (source, target)))


def index_info(conn: SqlReader) -> dict[str, IndexInfo]:
    """Index name -> the leaf table it is on, its access method and size (partitioned parents' indexes left out)."""
    rows = conn.rows(
        "SELECT i.relname, t.relname, am.amname, pg_relation_size(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_am am ON am.oid = i.relam JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = 'public' AND t.relkind = 'r'")
    return {r[0]: IndexInfo(table=r[1], method=r[2], bytes=int(r[3])) for r in rows}




@task(name="fast-copy-facts", task_run_name="fast-copy-facts/{source}->{target}", **READ)
def read_fast_copy_facts(ctx: RunContext, source: str, target: str) -> FastCopyFacts:
    """What the fast copy is planned from, all reads: the source's leaf tables, indexes and sequences, the
    schema frame's table of contents (no file written), both ends' PostgreSQL majors and the compressors both
    have. The link's rate is read beside it (``read_link_rate``)."""
    s = ctx.settings
    with connect(ctx, target, "postgres", answer_within_s=120) as target_conn:
        target_major = target_conn.major()
    with connect(ctx, source) as conn:
        tables = leaf_tables(conn)
        indexes = index_info(conn)
        sequences = [r[0] for r in conn.rows(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1")]
        source_major = conn.major()
        public_grants = tuple((r[0], r[1], r[2] == "t") for r in conn.rows(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
            "a.is_grantable FROM pg_namespace s, aclexplode(coalesce(s.nspacl, acldefault('n', s.nspowner))) a "
            "WHERE s.nspname = 'public' AND a.grantee <> s.nspowner ORDER BY 1, 2"))
    toc = ctx.executor.run(source, commands.schema_toc(os_user=s.pg_os_user, bin_dir=s.pg_bin_dir), timeout_s=600,
                           stream=False).stdout
    post_data = post_data_plan(toc, {name: i.table for name, i in indexes.items()}, {name for name, _ in tables})
    return FastCopyFacts(tables=tuple(tables), indexes=indexes, sequences=tuple(sequences), post_data=post_data,
                         binary=source_major == target_major, compressors=installed_compressors(ctx, source, target),
                         public_grants=public_grants)


@dataclass(frozen=True)
class StreamResult:
    tables: int
    bytes_on_disk: int
    seconds: float
    loaded_rows: dict[str, int]  # per table, as PostgreSQL reported for the COPY on the target


def run_jobs(ctx: RunContext, jobs: tuple[PlannedJob, ...], *, snapshot: str, workers: int, sizes: dict[str, int],
             timeout_s: float, while_streaming: Callable[[], object] | None = None) -> StreamResult:
    """Run the copy's planned jobs, at most ``workers`` at once: a job starts once the job it waits for has
    finished, ready jobs longest-path first. The first failure stops new starts; the running ones finish, then
    it is raised. ``while_streaming`` runs in a thread of its own beside the jobs (it reads the source snapshot).

    A small scheduler of its own, not Prefect's task runner: a job waits for one named job (a build for its
    table's stream), and the ready jobs start in priority order, which ``.submit`` with ``wait_for`` cannot
    express; each job is one remote command, so a job is not a task of its own."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    ex = ctx.executor
    started = time.monotonic()
    total = sum(sizes.values())
    loaded: dict[str, int] = {}

    def run(planned: PlannedJob) -> float:
        t = time.monotonic()
        result = ex.run(planned.host, planned.command.filled(PLANNED_SNAPSHOT, snapshot), timeout_s=timeout_s,
                        stream=False)
        if planned.job.kind == "stream":
            loaded.update(loaded_rows(result.stdout))
        return time.monotonic() - t

    waiting: dict[str, list[PlannedJob]] = {}
    ready: list[PlannedJob] = []
    for planned in jobs:
        (waiting.setdefault(planned.job.after, []) if planned.job.after else ready).append(planned)
    failure: BaseException | None = None
    done_bytes, done_tables = 0, 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pe-ha-copy") as pool:
        running: dict[Future[float], PlannedJob] = {}

        def fill() -> None:
            ready.sort(key=lambda p: -p.job.priority)
            while ready and len(running) < workers and failure is None:
                planned = ready.pop(0)
                running[pool.submit(run, planned)] = planned

        fill()
        side = Background(while_streaming, "pe-ha-source-fingerprint") if while_streaming is not None else None
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future).job
                try:
                    seconds = future.result()
                except BaseException as exc:  # the first failure is raised once the running jobs are done
                    failure = failure or exc
                    continue
                logger().info("%s %s: %.1f s", job.kind, job.label or job.key, seconds)
                ready.extend(waiting.pop(job.key, []))
                if job.kind == "stream":
                    done_bytes += sum(sizes.get(t, 0) for t in job.tables)
                    done_tables += len(job.tables)
                    logger().info("tables copied: %d of %d (%d of %d MiB on the source)", done_tables, len(sizes),
                                  done_bytes // 2**20, total // 2**20)
            fill()
    side_error: BaseException | None = None
    if side is not None:  # joined before any raise: it uses the caller's source connection, which closes next
        try:
            side.result()
        except BaseException as exc:  # a job's failure, if any, is the one to report
            side_error = exc
    if failure is not None:
        raise failure
    if side_error is not None:
        raise side_error
    if waiting:  # a job waited for one that does not exist: a planning bug, never a silent partial copy
        raise DatabaseError(f"copy jobs never started: {sorted(p.job.key for ps in waiting.values() for p in ps)}")
    return StreamResult(len(sizes), total, time.monotonic() - started, loaded)


@dataclass(frozen=True)
class StagingCopy:
    """What the fast copy left in the staging database, and what it is checked against."""

    fingerprint: dict[str, int | str]  # of the source snapshot
    loaded_rows: dict[str, int]  # per table, as the target's COPY reported
    timings: dict[str, float]
    tables: int


@task(name="fast-copy-to-staging", task_run_name="fast-copy/{plan.source}->{plan.target}", **SIDE_EFFECT)
def fast_copy_to_staging(ctx: RunContext, plan: FastCopyPlan, source_bytes: int, expected_s: float = 0) -> StagingCopy:
    """Run the planned fast copy into ``pe-puppetdb-pe-ha-staging`` on the target: the schema frame, table
    streams and index builds (each index as soon as its table's rows are in), the rest of post-data, then the
    sequences. Progress (the staging database's size against ``source_bytes``, and the COPY and index builds
    running) is logged and shown every few seconds.

    The live pe-puppetdb on the target is not touched. Returns the source snapshot's fingerprint and timings.
    """
    s = ctx.settings
    ex = ctx.executor
    source, target = plan.source, plan.target
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    ex.run(target, plan.create_staging)
    with watch_load(ctx, target, DB + commands.STAGING_SUFFIX, f"copy {source} -> {target}", expected_bytes=source_bytes,
                    expected_s=expected_s):
        try:
            with connect(ctx, source) as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                snapshot = conn.value("SELECT pg_export_snapshot()")
                ex.run(source, plan.dump_schema.filled(PLANNED_SNAPSHOT, snapshot))
                ex.run(source, plan.send_schema)
                ex.run(target, plan.restore_pre_data)
                ex.run(target, plan.grant_public)
                tables_now = {name for name, _ in leaf_tables(conn)}
                if tables_now != set(plan.table_bytes):
                    raise PreconditionFailed(
                        f"the tables of pe-puppetdb on {source} changed since this run read them (a new partition?): "
                        f"{table_change(set(plan.table_bytes), tables_now)}; nothing was swapped in",
                        hint="run the copy again: it plans from the tables it reads then")
                ex.run(target, plan.write_lists)
                timings["schema"] = time.monotonic() - t0
                # The exporting transaction stays open until every stream has imported the snapshot and finished;
                # meanwhile it counts the snapshot's rows (the same snapshot the streams read).
                expected: dict[str, int | str] = {}
                streamed = run_jobs(ctx, plan.jobs, snapshot=snapshot, workers=plan.workers, sizes=plan.table_bytes,
                                    timeout_s=s.command_timeout_s,
                                    while_streaming=lambda: expected.update(fingerprint_in(conn)))
                timings["streams and indexes"] = streamed.seconds
            t1 = time.monotonic()
            ex.run(target, plan.restore_data)
            ex.run(target, plan.restore_late)
            if plan.copy_sequences is not None:
                ex.run(source, plan.copy_sequences)
            timings["rest of post-data"] = time.monotonic() - t1
        finally:
            try:
                ex.run(target, plan.remove_lists, timeout_s=120)
            except Exception as exc:  # leftover list files are harmless; the real outcome must get through
                logger().warning("could not remove the restore lists on %s: %s", target, exc)
    jobs = [p.job for p in plan.jobs]
    logger().info("%d jobs: %d streams, %d index builds; %d entries built with their tables, the rest at the end",
                  len(jobs), sum(j.kind == "stream" for j in jobs), sum(j.kind == "build" for j in jobs),
                  plan.early_entries)
    return StagingCopy(expected, streamed.loaded_rows, timings, streamed.tables)


def table_change(planned: set[str], now: set[str]) -> str:
    added, gone = sorted(now - planned), sorted(planned - now)
    return "; ".join(([f"new: {', '.join(added[:5])}"] if added else []) + ([f"gone: {', '.join(gone[:5])}"] if gone else []))


@task(name="verify-staging", task_run_name="verify-staging/{host}", **READ)
def verify_staging(ctx: RunContext, host: str, expected: dict[str, int | str], loaded: dict[str, int]) -> None:
    """The cheap check: each table's loaded row count (as the target's COPY reported it) equals the source
    snapshot's count, and the staging catalog (indexes, constraints) and the certnames digest match."""
    with connect(ctx, host, DB + commands.STAGING_SUFFIX) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        actual: dict[str, int | str] = {**fingerprint_in(conn, count_rows=False),
                                        **{f"rows:{table}": count for table, count in loaded.items()}}
    diff = differences(expected, actual)
    if diff:
        shown = ", ".join(f"{k}: expected {a}, found {b}" for k, (a, b) in list(diff.items())[:8])
        raise PostconditionFailed(f"the staging copy on {host} differs from the source ({shown}); the live "
                                 "pe-puppetdb was not touched", hint="re-run the copy")


