"""Tasks on PuppetDB's PostgreSQL database: size, dump, transfer, restore, verify (psql and tools over SSH)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prefect import task

from pe_ha import commands, runtime
from pe_ha.background import Background
from pe_ha.errors import CommandFailed, DatabaseError, PreconditionFailed, TransferError
from pe_ha.psql import Psql, quote_ident, quote_literal
from pe_ha.psql import session as psql_session
from tasks._base import READ, RETRY_CONNECT, SIDE_EFFECT, logger
from tasks.copy_plan import IndexInfo, Job, copy_jobs, loaded_rows, post_data_plan

DB = "pe-puppetdb"


@contextlib.contextmanager
def connect(host: str, database: str = DB, *, answer_within_s: float | None = None) -> Iterator[Psql]:
    """A psql session on ``host``'s ``database`` as PostgreSQL's owner over SSH (no role or pg_hba line for
    pe-ha); failures become DatabaseError."""
    s = runtime.settings()
    with psql_session(runtime.executor(), host, database, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir,
                      timeout_s=answer_within_s or s.command_timeout_s) as conn:
        yield conn


def _int(text: str) -> int:
    return int(text) if text else 0


@task(name="puppetdb-size", task_run_name="puppetdb-size/{host}", **READ)
def database_size(host: str) -> int:
    """The size of pe-puppetdb in bytes (the figure ``\\l+`` shows)."""
    with connect(host, "postgres", answer_within_s=120) as conn:
        return _int(conn.value(f"SELECT pg_database_size({quote_literal(DB)})"))


def fingerprint_in(conn: Psql, *, count_rows: bool = True) -> dict[str, int | str]:
    """What a copy must carry, read in the current snapshot: each table's own rows (``FROM ONLY``: an INHERITS
    parent's count never includes its children, which are tables of their own), index and constraint counts, a
    digest of certnames, every sequence's value and ``is_called``, the partition inventory, object owners, the
    database's owner and ACL, and the extensions.

    ``count_rows=False`` leaves out the row counts (a scan of every table); everything else stays.
    """
    tables = [r[0] for r in conn.rows(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1")]
    result: dict[str, int | str] = {}
    for table in tables if count_rows else []:
        result[f"rows:{table}"] = _int(conn.value(f"SELECT count(*) FROM ONLY public.{quote_ident(table)}"))
    for name, query in (
        ("indexes", "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"),
        ("constraints", "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                        "WHERE n.nspname = 'public'"),
    ):
        result[name] = _int(conn.value(query))
    if "certnames" in tables:
        result["md5:certnames"] = conn.value(
            "SELECT coalesce(md5(string_agg(certname || ':' || coalesce(deactivated::text, ''), ',' "
            "ORDER BY certname)), '') FROM certnames")
    result.update(catalog_inventory(conn))
    return result


SEQUENCES_QUERY = ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1")


def sequence_values(conn: Psql) -> dict[str, tuple[int, bool]]:
    """Every sequence's ``last_value`` and ``is_called``, read from the sequence itself (PostgreSQL 10+)."""
    out: dict[str, tuple[int, bool]] = {}
    for (name,) in conn.rows(SEQUENCES_QUERY):
        for value, called in conn.rows(f"SELECT last_value, is_called FROM public.{quote_ident(name)}"):
            out[name] = (int(value), called == "t")
    return out


def catalog_inventory(conn: Psql) -> dict[str, int | str]:
    """The parts of a database that rows and indexes do not show, one key each, as text to compare."""
    out: dict[str, int | str] = {}
    for name, (value, called) in sequence_values(conn).items():
        out[f"sequence:{name}"] = f"{value} {'called' if called else 'not called'}"
    parts = conn.rows(
        "SELECT p.relname || ' <- ' || c.relname || ' (' || c.relkind || ')' FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
        "ORDER BY 1")
    out["partitions"] = md5_of(str(r[0]) for r in parts)
    out["partition count"] = len(parts)
    out["partitioned parents"] = ",".join(r[0] for r in conn.rows(
        "SELECT c.relname || ':' || c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND (c.relkind = 'p' OR EXISTS (SELECT 1 FROM pg_inherits i "
        "WHERE i.inhparent = c.oid)) ORDER BY 1"))
    owners = conn.rows(
        "SELECT pg_get_userbyid(c.relowner) || ':' || c.relkind, count(*) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v') "
        "GROUP BY 1 UNION ALL SELECT pg_get_userbyid(p.proowner) || ':function', count(*) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND NOT EXISTS "
        "(SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') GROUP BY 1 ORDER BY 1")
    out["owners"] = ", ".join(f"{r[0]}={r[1]}" for r in owners)
    found = conn.rows(
        "SELECT pg_get_userbyid(d.datdba), coalesce((SELECT string_agg(g, ',' ORDER BY g) FROM (SELECT CASE "
        "WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || '=' || a.privilege_type || CASE "
        "WHEN a.is_grantable THEN '*' ELSE '' END || '/' || pg_get_userbyid(a.grantor) AS g "
        "FROM aclexplode(d.datacl) a) acl), 'default') FROM pg_database d WHERE d.datname = current_database()")
    owner, acl = found[0] if found else ("", "")
    out["database owner"], out["database acl"] = owner, acl
    out["extensions"] = ",".join(f"{r[0]} {r[1]}" for r in conn.rows(
        "SELECT extname, extversion FROM pg_extension ORDER BY 1"))
    return out


def sequences_of(fingerprint: dict[str, int | str]) -> dict[str, tuple[int, bool]]:
    """The sequence values a fingerprint carries (``sequence:<name>`` = ``"<value> called|not called"``)."""
    out: dict[str, tuple[int, bool]] = {}
    for key, text in fingerprint.items():
        if key.startswith("sequence:"):
            value, _, called = str(text).partition(" ")
            out[key.removeprefix("sequence:")] = (int(value), called == "called")
    return out


def differences(expected: dict[str, int | str], actual: dict[str, int | str]) -> dict[str, tuple[object, object]]:
    """What differs between a source fingerprint and a copy's. A sequence may be ahead on the copy (pg_dump
    reads sequences when it reaches them, after the fingerprint; they are not transactional), never behind:
    behind, PuppetDB's next inserts would collide with ids in use."""
    diff: dict[str, tuple[object, object]] = {}
    for key in sorted(set(expected) | set(actual)):
        want, got = expected.get(key), actual.get(key)
        if want == got:
            continue
        if key.startswith("sequence:") and want is not None and got is not None:
            (w, w_called), (g, g_called) = (sequences_of({key: want})[key[9:]], sequences_of({key: got})[key[9:]])
            if g > w or (g == w and g_called >= w_called):
                continue
        diff[key] = (want, got)
    return diff


def md5_of(lines: Iterable[str]) -> str:
    import hashlib

    return hashlib.md5("\n".join(lines).encode(), usedforsecurity=False).hexdigest()


@task(name="puppetdb-fingerprint", task_run_name="puppetdb-fingerprint/{host}", **READ)
def fingerprint(host: str) -> dict[str, int | str]:
    with connect(host) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return fingerprint_in(conn)


@task(name="free-space", task_run_name="free-space/{host}", **READ)
def free_bytes(host: str, path: str) -> int:
    out = runtime.executor().run(host, commands.free_bytes(path), timeout_s=60).stdout.split()
    try:
        return int(out[-1])
    except (IndexError, ValueError):
        raise CommandFailed(host=host, command="df", exit_code=0, output=" ".join(out)) from None


@task(name="cpu-count", task_run_name="cpu-count/{host}", **READ)
def cpu_count(host: str) -> int:
    return max(1, int(runtime.executor().run(host, commands.cpu_count(), timeout_s=60).stdout.strip() or 1))


@task(name="prepare-dump-dir", task_run_name="prepare-dump-dir/{host}", **RETRY_CONNECT)
def prepare_dump_dir(host: str, path: str) -> None:
    runtime.executor().run(host, commands.make_dir(path, owner=runtime.settings().pg_os_user), timeout_s=60)


@dataclass(frozen=True)
class DumpResult:
    file: str
    seconds: float
    fingerprint: dict[str, int | str]


@task(name="pg-dump", task_run_name="pg-dump/{host}", **SIDE_EFFECT)
def dump(host: str, file: str, compress: int = 3) -> DumpResult:
    """pg_dump of pe-puppetdb from an exported snapshot, and the fingerprint of exactly that snapshot."""
    s = runtime.settings()
    started = time.monotonic()
    with connect(host) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.value("SELECT pg_export_snapshot()") or None
        expected = fingerprint_in(conn)
        # The exporting transaction stays open while pg_dump imports its snapshot.
        cmd = commands.pg_dump(file=file, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir, compress=compress,
                               snapshot=snapshot)
        with ProgressWatch(host, DB, f"pg_dump on {host}"):
            runtime.executor().run(host, cmd, timeout_s=s.command_timeout_s)
    seconds = time.monotonic() - started
    logger().info("dumped pe-puppetdb on %s in %.1f s (%d tables)", host, seconds,
                  sum(1 for k in expected if k.startswith("rows:")))
    return DumpResult(file, seconds, expected)


@task(name="sha256", task_run_name="sha256/{host}", **READ)
def checksum(host: str, path: str) -> str:
    out = runtime.executor().run(host, commands.sha256sum(path), timeout_s=1800, stream=False).stdout.split()
    if not out or len(out[0]) != 64:
        raise CommandFailed(host=host, command="sha256sum", exit_code=0, output=" ".join(out))
    return out[0]


@task(name="transfer-dump", task_run_name="transfer-dump/{source}->{target}", **RETRY_CONNECT)
def transfer(source: str, target: str, path: str, dest: str) -> None:
    """scp from the PuppetDB node to the replica, as the guide does (retried: it is idempotent)."""
    try:
        runtime.executor().run(source, commands.scp_to(path, host=target, dest=dest), timeout_s=runtime.settings().command_timeout_s)
    except CommandFailed as exc:
        raise TransferError(f"scp to {target} failed (exit {exc.exit_code})", host=source,
                            hint="the master must be able to ssh to the replica as root") from None


@dataclass(frozen=True)
class RestoreResult:
    exit_code: int
    ignored_errors: list[str]
    seconds: float


@task(name="pg-restore", task_run_name="pg-restore/{host}", **SIDE_EFFECT)
def restore(host: str, file: str, jobs: int, source_bytes: int = 0) -> RestoreResult:
    """``pg_restore --clean --jobs=N``. Exit 1 with "errors ignored on restore" is judged by verify(), not here.
    With ``source_bytes``, progress is the restored database's size against it."""
    s = runtime.settings()
    started = time.monotonic()
    cmd = commands.pg_restore(file=file, jobs=jobs, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir)
    with ProgressWatch(host, DB, f"pg_restore on {host}", expected_bytes=source_bytes):
        result = runtime.executor().run(host, cmd, check=False, timeout_s=s.command_timeout_s)
    errors = [line for line in result.stderr.splitlines() if line.startswith("pg_restore: error")]
    # pg_restore exits 1 for any error it ignored (e.g. "cannot drop inherited constraint" with --clean on a
    # partitioned schema, on a correct copy): the verification that follows is the judge, never this code.
    if result.exit_code not in (0, 1):
        raise CommandFailed(host=host, command=result.command, exit_code=result.exit_code, output=result.stderr)
    if result.exit_code == 1:
        logger().warning("pg_restore on %s exited 1 with %d ignored errors; the result is verified next", host,
                         len(errors))
    return RestoreResult(result.exit_code, errors[:20], time.monotonic() - started)


@task(name="verify-copy", task_run_name="verify-copy/{host}", **READ)
def verify(host: str, expected: dict[str, int | str]) -> dict[str, int | str]:
    """Compare the target's fingerprint with the source snapshot's; any difference fails the copy."""
    actual = fingerprint.fn(host)
    diff = differences(expected, actual)
    if diff:
        shown = ", ".join(f"{k}: expected {a}, found {b}" for k, (a, b) in sorted(diff.items())[:8])
        raise PreconditionFailed(f"the copy on {host} differs from the source: {shown}",
                                 hint="do not use this copy; re-run copy_puppetdb (provisioning's own sync still works)")
    return actual


@task(name="remove-dump", task_run_name="remove-dump/{host}", **RETRY_CONNECT)
def remove_files(host: str, *paths: str) -> None:
    runtime.executor().run(host, commands.remove_files(*paths), timeout_s=120)


# -- the fast copy: schema frame + per-table streams into a staging database + rename swap ---------------


def leaf_tables(conn: Psql) -> list[tuple[str, int]]:
    """Every table that holds rows (partitions included, partitioned parents excluded) with its size without
    indexes (heap and TOAST), largest first."""
    rows = conn.rows(
        "SELECT c.relname, pg_table_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC, 1")
    return [(r[0], int(r[1])) for r in rows]


@task(name="measure-link", task_run_name="measure-link/{source}->{target}", **READ)
def link_mb_per_s(source: str, target: str, megabytes: int = 16) -> float:
    """Throughput of ssh from source to target, measured with incompressible data."""
    started = time.monotonic()
    runtime.executor().run(source, commands.link_probe(target, megabytes=megabytes), timeout_s=600, stream=False)
    rate = megabytes / max(time.monotonic() - started, 1e-3)
    logger().info("link %s -> %s: %.0f MB/s (ssh, aes128-gcm)", source, target, rate)
    return rate


@task(name="choose-compression", task_run_name="choose-compression", **READ)
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


def index_info(conn: Psql) -> dict[str, IndexInfo]:
    """Index name -> the leaf table it is on, its access method and size (partitioned parents' indexes left out)."""
    rows = conn.rows(
        "SELECT i.relname, t.relname, am.amname, pg_relation_size(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_am am ON am.oid = i.relam JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = 'public' AND t.relkind = 'r'")
    return {r[0]: IndexInfo(table=r[1], method=r[2], bytes=int(r[3])) for r in rows}


@dataclass(frozen=True)
class LoadProgress:
    """One look at a database being loaded: its size now, and what PostgreSQL is doing in it."""

    bytes: int
    activity: list[str]  # e.g. "COPY catalog_resources: 212 MB, 1204000 rows", "INDEX on edges: building index 40 %"


def load_progress(host: str, database: str) -> LoadProgress:
    """``database``'s size and its running COPY and CREATE INDEX commands (``pg_stat_progress_*``, which
    PostgreSQL's owner sees for every session). Each look is a short session of its own, outside any transaction."""
    with connect(host, database, answer_within_s=30) as conn:
        size = _int(conn.value("SELECT pg_database_size(current_database())"))
        major = conn.major()
        if major < 14:  # pg_stat_progress_copy is 14+, pg_stat_progress_create_index 12+: the size says enough
            return LoadProgress(size, [] if major < 12 else _index_progress(conn))
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


def _index_progress(conn: Psql) -> list[str]:
    rows = conn.rows(
        "SELECT 'INDEX on ' || coalesce(c.relname, p.relid::text) || ': ' || p.phase"
        " FROM pg_stat_progress_create_index p LEFT JOIN pg_class c ON c.oid = p.relid"
        " WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())")
    return sorted(r[0] for r in rows)


class ProgressWatch:
    """While a long step runs: every ``every_s`` seconds, what PostgreSQL on ``host`` is doing in ``database``
    (its COPY and index builds) and, given ``expected_bytes`` (the source's size), how far the database has
    grown toward it, as a log line and in the run's progress artifact. A look that fails is skipped:
    progress reporting never fails or holds up the copy.

    Use as a context manager around the step; ``probe`` is the seam for tests.
    """

    def __init__(self, host: str, database: str, label: str, *, expected_bytes: int = 0, every_s: float = 3.0,
                 probe: Callable[[str, str], LoadProgress] | None = None) -> None:
        self.host, self.database, self.label, self.expected = host, database, label, expected_bytes
        self.every_s = every_s
        self.probe = probe or load_progress
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
                    description=f"{self.label}: size of {self.database} on {self.host} against the source's")
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

    def _show(self, share: float) -> None:
        if self._artifact is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact, progress=share)  # type: ignore[arg-type]
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
            now = "; ".join(look.activity) or "no COPY or index build running"
            elapsed = time.monotonic() - self._started
            if self.expected <= 0:
                logger().info("%s after %.0f s: %s", self.label, elapsed, now)
                continue
            share = min(99.0, 100.0 * look.bytes / self.expected)
            logger().info("%s: %.0f%% (%.0f of %.0f MiB) after %.0f s; now: %s", self.label, share,
                          look.bytes / 2**20, self.expected / 2**20, elapsed, now)
            self._show(share)


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
        chooser = Background(lambda: choose_compression.fn(source, target, link_mb_per_s.fn(source, target)),
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


@task(name="swap-in-staging", task_run_name="swap-in-staging/{host}", **SIDE_EFFECT)
def swap_in_staging(host: str) -> None:
    s = runtime.settings()
    runtime.executor().run(host, commands.swap_databases(DB, DB + commands.STAGING_SUFFIX, DB + commands.OLD_SUFFIX,
                                                         os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))


@task(name="drop-database", task_run_name="drop-{name}/{host}", **RETRY_CONNECT)
def drop_database(host: str, name: str) -> None:
    s = runtime.settings()
    runtime.executor().run(host, commands.drop_database(name, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))
