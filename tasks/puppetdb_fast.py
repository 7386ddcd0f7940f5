"""The fast copy: the schema frame, one stream per table into a staging database on the target (each table's
indexes built once its rows are in), the rest of post-data, then the check of the staging copy."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from prefect import task

from pe_ha import commands, runtime
from pe_ha.background import Background
from pe_ha.errors import DatabaseError, PreconditionFailed
from pe_ha.psql import SqlReader
from tasks._base import READ, SIDE_EFFECT, logger
from tasks.copy_plan import IndexInfo, Job, copy_jobs, loaded_rows, post_data_plan
from tasks.puppetdb import DB, connect, differences, fingerprint_in, sequences_of
from tasks.puppetdb_progress import ProgressWatch


def leaf_tables(conn: SqlReader) -> list[tuple[str, int]]:
    """Every table that holds rows (partitions included, partitioned parents excluded) with its size without
    indexes (heap and TOAST), largest first."""
    rows = conn.rows(
        "SELECT c.relname, pg_table_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC, 1")
    return [(r[0], int(r[1])) for r in rows]


def link_mb_per_s(source: str, target: str, megabytes: int = 16) -> float:
    """Throughput of ssh from source to target, measured with incompressible data."""
    started = time.monotonic()
    runtime.executor().run(source, commands.link_probe(target, megabytes=megabytes), timeout_s=600, stream=False)
    rate = megabytes / max(time.monotonic() - started, 1e-3)
    logger().info("link %s -> %s: %.0f MB/s (ssh, aes128-gcm)", source, target, rate)
    return rate


def choose_compression(source: str, target: str, link_mb_s: float, cpu_mb_s: float = 18.0) -> str:
    """Compression pays only when the link is slower than compressing: none on fast links, zstd (or gzip) on slow.

    The probe's figure includes ssh's connection set-up and runs beside the schema frame, so it reads low: a
    100 Mbit/s link (12.5 MB/s) measured 10 MB/s in the lab and an unlimited one 25-40 MB/s; 18 MB/s is between."""
    if link_mb_s >= cpu_mb_s:
        return "none"
    ex = runtime.executor()
    for tool in ("zstd", "gzip"):
        if all(ex.run(h, commands.has_tool(tool), check=False, timeout_s=30, stream=False).exit_code == 0
               for h in (source, target)):
            return tool
    return "none"


def index_info(conn: SqlReader) -> dict[str, IndexInfo]:
    """Index name -> the leaf table it is on, its access method and size (partitioned parents' indexes left out)."""
    rows = conn.rows(
        "SELECT i.relname, t.relname, am.amname, pg_relation_size(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_am am ON am.oid = i.relam JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = 'public' AND t.relkind = 'r'")
    return {r[0]: IndexInfo(table=r[1], method=r[2], bytes=int(r[3])) for r in rows}




@dataclass(frozen=True)
class StreamResult:
    tables: int
    bytes_on_disk: int
    seconds: float
    loaded_rows: dict[str, int]  # per table, as PostgreSQL reported for the COPY on the target


def run_jobs(jobs: list[Job], *, source: str, target: str, staging: str, snapshot: str, schema_file: str,
             compress: str, binary: bool, workers: int, sizes: dict[str, int],
             while_streaming: Callable[[], object] | None = None) -> StreamResult:
    """Run the copy's jobs, at most ``workers`` at once: a job starts once the job it waits for has finished,
    ready jobs longest-path first. The first failure stops new starts; the running ones finish, then it is
    raised. ``while_streaming`` runs in a thread of its own beside the jobs (it reads the source snapshot).
    Every job's list file (``<schema_file>.<job>.list``) must exist on the target."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    s = runtime.settings()
    ex = runtime.executor()
    pg = {"os_user": s.pg_os_user, "bin_dir": s.pg_bin_dir}
    started = time.monotonic()
    total = sum(sizes.values())
    loaded: dict[str, int] = {}

    def run(job: Job) -> float:
        t = time.monotonic()
        if job.kind == "stream":
            then = (schema_file, list_file(schema_file, f"inline-{job.key}")) if job.inline else None
            if len(job.tables) == 1:
                cmd = commands.stream_table(job.tables[0], snapshot=snapshot, target=target, staging=staging,
                                            compress=compress, binary=binary, multiplex=True, then_restore=then,
                                            maintenance_mem_mb=s.index_build_memory_mb, **pg)
            else:
                cmd = commands.stream_tables_merged(list(job.tables), snapshot=snapshot, target=target, staging=staging,
                                                    compress=compress, then_restore=then,
                                                    maintenance_mem_mb=s.index_build_memory_mb, **pg)
            result = ex.run(source, cmd, timeout_s=s.command_timeout_s, stream=False)
            loaded.update(loaded_rows(result.stdout))
        else:
            ex.run(target, commands.pg_restore_listed(file=schema_file, list_file=list_file(schema_file, job.key),
                                                      database=staging, jobs=1,
                                                      maintenance_mem_mb=s.index_build_memory_mb, **pg),
                   timeout_s=s.command_timeout_s, stream=False)
        return time.monotonic() - t

    waiting: dict[str, list[Job]] = {}
    ready: list[Job] = []
    for job in jobs:
        (waiting.setdefault(job.after, []) if job.after else ready).append(job)
    failure: BaseException | None = None
    done_bytes, done_tables = 0, 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pe-ha-copy") as pool:
        running: dict[Future[float], Job] = {}

        def fill() -> None:
            ready.sort(key=lambda j: -j.priority)
            while ready and len(running) < workers and failure is None:
                job = ready.pop(0)
                running[pool.submit(run, job)] = job

        fill()
        side = Background(while_streaming, "pe-ha-source-fingerprint") if while_streaming is not None else None
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
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
        raise DatabaseError(f"copy jobs never started: {sorted(j.key for js in waiting.values() for j in js)}")
    return StreamResult(len(sizes), total, time.monotonic() - started, loaded)


def list_file(schema_file: str, name: str) -> str:
    """Where a job's ``pg_restore --use-list`` file lives on the target: beside the schema archive."""
    return f"{schema_file}.{name.replace(':', '-')}.list"


@task(name="fast-copy-to-staging", task_run_name="fast-copy/{source}->{target}", **SIDE_EFFECT)
def fast_copy_to_staging(source: str, target: str, schema_file: str, compress: str | None, jobs: int,
                         source_bytes: int) -> dict:
    """Schema frame, table streams and index builds (each index as soon as its table's rows are in), then
    the rest of post-data, into ``pe-puppetdb-pe-ha-staging`` on the target. ``compress=None``: measure the
    link (while the schema frame is made) and choose. Progress (the staging database's size against
    ``source_bytes``, and the COPY and index builds running) is logged and shown every few seconds.

    The live pe-puppetdb on the target is not touched. Returns the source snapshot's fingerprint and timings.
    """
    s = runtime.settings()
    ex = runtime.executor()
    staging = DB + commands.STAGING_SUFFIX
    pg = {"os_user": s.pg_os_user, "bin_dir": s.pg_bin_dir}
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    chooser = None
    if compress is None:
        chooser = Background(lambda: choose_compression(source, target, link_mb_per_s(source, target)),
                             "pe-ha-link-probe")
    ex.run(target, commands.recreate_database(staging, owner=DB, like=DB, **pg))
    with connect(target, answer_within_s=120) as target_conn:
        target_major = target_conn.major()
    lists: dict[str, list[int]] = {}
    with ProgressWatch(target, staging, f"copy {source} -> {target}", expected_bytes=source_bytes):
        try:
            with connect(source) as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                snapshot = conn.value("SELECT pg_export_snapshot()")
                tables = leaf_tables(conn)
                indexes = index_info(conn)
                ex.run(source, commands.pg_dump_schema(file=schema_file, snapshot=snapshot, **pg))
                ex.run(source, commands.scp_to(schema_file, host=target, dest=schema_file))
                ex.run(target, commands.pg_restore_section(file=schema_file, database=staging, section="pre-data", jobs=1,
                                                           **pg))
                toc = ex.run(source, commands.pg_restore_toc(file=schema_file, **pg), stream=False).stdout
                plan = post_data_plan(toc, {name: i.table for name, i in indexes.items()}, {name for name, _ in tables})
                copy = copy_jobs(tables, plan, indexes)
                for job in copy:
                    if job.inline:
                        lists[list_file(schema_file, f"inline-{job.key}")] = [e for _, ids in job.inline for e in ids]
                    if job.kind == "build":
                        lists[list_file(schema_file, job.key)] = list(job.entries)
                late_list = list_file(schema_file, "late")
                if plan.late:
                    lists[late_list] = plan.late
                if lists:
                    ex.run(target, commands.write_restore_lists(lists))
                timings["schema"] = time.monotonic() - t0
                # The exporting transaction stays open until every stream has imported the snapshot and finished;
                # meanwhile it counts the snapshot's rows (the same snapshot the streams read).
                expected: dict[str, int | str] = {}
                # COPY's binary format is only portable between servers of the same major version.
                binary = conn.major() == target_major
                if chooser is not None:
                    compress = str(chooser.result())
                    chooser = None
                assert compress is not None
                streamed = run_jobs(copy, source=source, target=target, staging=staging, snapshot=snapshot,
                                    schema_file=schema_file, compress=compress, binary=binary, workers=max(2, jobs),
                                    sizes=dict(tables), while_streaming=lambda: expected.update(fingerprint_in(conn)))
                timings["streams and indexes"] = streamed.seconds
            t1 = time.monotonic()
            ex.run(target, commands.pg_restore_section(file=schema_file, database=staging, section="data", jobs=1, **pg))
            if plan.late:
                ex.run(target, commands.pg_restore_listed(file=schema_file, list_file=late_list, database=staging,
                                                          jobs=jobs, maintenance_mem_mb=s.index_build_memory_mb, **pg))
            sequences = sequences_of(expected)
            if sequences:
                ex.run(target, commands.set_sequences(sequences, database=staging, **pg))
            timings["rest of post-data"] = time.monotonic() - t1
        finally:
            if chooser is not None:  # failing before the streams: let the probe finish, its outcome no longer matters
                with contextlib.suppress(Exception):
                    chooser.result()
            if lists:
                try:
                    ex.run(target, commands.remove_files(*lists), timeout_s=120)
                except Exception as exc:  # leftover list files are harmless; the real outcome must get through
                    logger().warning("could not remove the restore lists on %s: %s", target, exc)
    logger().info("%d jobs: %d streams, %d index builds; %d entries built with their tables, the rest at the end",
                  len(copy), sum(j.kind == "stream" for j in copy), sum(j.kind == "build" for j in copy),
                  sum(len(ids) for ids in plan.early.values()))
    return {"fingerprint": expected, "loaded_rows": streamed.loaded_rows, "timings": timings, "tables": streamed.tables,
            "compress": compress, "format": "binary" if binary else "text"}


@task(name="verify-staging", task_run_name="verify-staging/{host}", **READ)
def verify_staging(host: str, expected: dict[str, int | str], loaded: dict[str, int]) -> None:
    """The cheap check: each table's loaded row count (as the target's COPY reported it) equals the source
    snapshot's count, and the staging catalog (indexes, constraints) and the certnames digest match."""
    with connect(host, DB + commands.STAGING_SUFFIX) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        actual: dict[str, int | str] = {**fingerprint_in(conn, count_rows=False),
                                        **{f"rows:{table}": count for table, count in loaded.items()}}
    diff = differences(expected, actual)
    if diff:
        shown = ", ".join(f"{k}: expected {a}, found {b}" for k, (a, b) in list(diff.items())[:8])
        raise PreconditionFailed(f"the staging copy on {host} differs from the source ({shown}); the live "
                                 "pe-puppetdb was not touched", hint="re-run the copy")


