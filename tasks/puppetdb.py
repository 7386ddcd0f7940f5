"""Tasks on PuppetDB's PostgreSQL database: size, fingerprint, dump, transfer, restore, verify, swap and drop
(psql and PostgreSQL's tools run on the node over SSH). The fast copy is in ``puppetdb_fast``, progress in
``puppetdb_progress``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prefect import task

from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import CommandFailed, PostconditionFailed, TransferError
from pe_ha.psql import Psql, SqlReader, quote_ident, quote_literal
from pe_ha.psql import session as psql_session
from tasks._base import READ, RETRY_CONNECT, SIDE_EFFECT, logger
from tasks.puppetdb_progress import LoadProgress, ProgressWatch, load_progress

DB = "pe-puppetdb"


@contextlib.contextmanager
def connect(ctx: RunContext, host: str, database: str = DB, *, answer_within_s: float | None = None) -> Iterator[Psql]:
    """A psql session on ``host``'s ``database`` as PostgreSQL's owner over SSH (no role or pg_hba line for
    pe-ha); failures become DatabaseError."""
    s = ctx.settings
    with psql_session(ctx.executor, host, database, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir,
                      timeout_s=answer_within_s or s.command_timeout_s) as conn:
        yield conn


def load_progress_on(ctx: RunContext, host: str, database: str) -> LoadProgress:
    """One look at ``database`` on ``host`` being loaded, in a short session of its own."""
    with connect(ctx, host, database, answer_within_s=30) as conn:
        return load_progress(conn)


def watch_load(ctx: RunContext, host: str, database: str, label: str, *, expected_bytes: int = 0,
               expected_s: float = 0) -> ProgressWatch:
    """Progress of a long step that fills ``database`` on ``host`` (see ``ProgressWatch``)."""
    return ProgressWatch(host, database, label, expected_bytes=expected_bytes, expected_s=expected_s,
                         probe=lambda on, db: load_progress_on(ctx, on, db))


def _int(text: str) -> int:
    return int(text) if text else 0


@task(name="puppetdb-size", task_run_name="puppetdb-size/{host}", **READ)
def database_size(ctx: RunContext, host: str) -> int:
    """The size of pe-puppetdb in bytes (the figure ``\\l+`` shows)."""
    with connect(ctx, host, "postgres", answer_within_s=120) as conn:
        return _int(conn.value(f"SELECT pg_database_size({quote_literal(DB)})"))


def fingerprint_in(conn: SqlReader, *, count_rows: bool = True) -> dict[str, int | str]:
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
            "SELECT coalesce(md5(string_agg(c.certname || ':' || coalesce(s.deactivated::text, ''), ',' "
            f"ORDER BY c.certname)), '') FROM certnames c {_status_join(tables)}")
    result.update(catalog_inventory(conn))
    return result


def _status_join(tables: Iterable[str]) -> str:
    """Where a node's ``deactivated`` and ``expired`` are: ``certnames_status`` from PuppetDB 8.5 (migration 85,
    PE 2023.8 and later), ``certnames`` itself before."""
    if "certnames_status" in tables:
        return "LEFT JOIN certnames_status s ON s.certname = c.certname"
    return "CROSS JOIN LATERAL (SELECT c.deactivated, c.expired) s"


SEQUENCES_QUERY = ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1")


def sequence_values(conn: SqlReader) -> dict[str, tuple[int, bool]]:
    """Every sequence's ``last_value`` and ``is_called``, read from the sequence itself (PostgreSQL 10+)."""
    out: dict[str, tuple[int, bool]] = {}
    for (name,) in conn.rows(SEQUENCES_QUERY):
        for value, called in conn.rows(f"SELECT last_value, is_called FROM public.{quote_ident(name)}"):
            out[name] = (int(value), called == "t")
    return out


def _acl_text(column: str) -> str:
    """SQL for an ACL column as sorted ``grantee=privilege/grantor`` text ('default' where it is NULL)."""
    return ("coalesce((SELECT string_agg(g, ',' ORDER BY g) FROM (SELECT CASE "
            "WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || '=' || a.privilege_type || CASE "
            "WHEN a.is_grantable THEN '*' ELSE '' END || '/' || pg_get_userbyid(a.grantor) AS g "
            f"FROM aclexplode({column}) a) acl), 'default')")


def catalog_inventory(conn: SqlReader) -> dict[str, int | str]:
    """The parts of a database that rows and indexes do not show, one key each, as text to compare."""
    out: dict[str, int | str] = {}
    for name, (value, called) in sequence_values(conn).items():
        out[f"sequence:{name}"] = f"{value} {'called' if called else 'not called'}"
    parts = conn.rows(
        "SELECT p.relname || ' <- ' || c.relname || ' (' || c.relkind::text || ')' FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
        "ORDER BY 1")
    out["partitions"] = md5_of(str(r[0]) for r in parts)
    out["partition count"] = len(parts)
    out["partitioned parents"] = ",".join(r[0] for r in conn.rows(
        "SELECT c.relname || ':' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND (c.relkind = 'p' OR EXISTS (SELECT 1 FROM pg_inherits i "
        "WHERE i.inhparent = c.oid)) ORDER BY 1"))
    owners = conn.rows(
        "SELECT pg_get_userbyid(c.relowner) || ':' || c.relkind::text, count(*) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v') "
        "GROUP BY 1 UNION ALL SELECT pg_get_userbyid(p.proowner) || ':function', count(*) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND NOT EXISTS "
        "(SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') GROUP BY 1 ORDER BY 1")
    out["owners"] = ", ".join(f"{r[0]}={r[1]}" for r in owners)
    found = conn.rows(
        f"SELECT pg_get_userbyid(d.datdba), {_acl_text('d.datacl')} FROM pg_database d "
        "WHERE d.datname = current_database()")
    owner, acl = found[0] if found else ("", "")
    out["database owner"], out["database acl"] = owner, acl
    # PostgreSQL 15 and later create public without CREATE for everyone: PuppetDB needs PE's grant carried over.
    schema_acl = _acl_text("coalesce(s.nspacl, acldefault('n', s.nspowner))")
    found = conn.rows(f"SELECT pg_get_userbyid(s.nspowner), {schema_acl} FROM pg_namespace s "
                      "WHERE s.nspname = 'public'")
    owner, acl = found[0] if found else ("", "")
    out["public schema owner"], out["public schema acl"] = owner, acl
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


def read_fingerprint(ctx: RunContext, host: str) -> dict[str, int | str]:
    """``host``'s PuppetDB fingerprint, read in one read-only snapshot."""
    with connect(ctx, host) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return fingerprint_in(conn)


@task(name="puppetdb-fingerprint", task_run_name="puppetdb-fingerprint/{host}", **READ)
def fingerprint(ctx: RunContext, host: str) -> dict[str, int | str]:
    return read_fingerprint(ctx, host)


@task(name="puppetdb-node-active", task_run_name="puppetdb-node-active/{host}/{certname}", **READ)
def node_active(ctx: RunContext, host: str, certname: str) -> bool:
    """Is ``certname`` an active node (neither deactivated nor expired) in ``host``'s PuppetDB?"""
    with connect(ctx, host) as conn:
        tables = [r[0] for r in conn.rows("SELECT relname FROM pg_class WHERE relname IN ('certnames', "
                                          "'certnames_status') AND relnamespace = 'public'::regnamespace")]
        return _int(conn.value(f"SELECT count(*) FROM certnames c {_status_join(tables)} WHERE c.certname = "
                               + quote_literal(certname) + " AND s.deactivated IS NULL AND s.expired IS NULL")) > 0


@task(name="free-space", task_run_name="free-space/{host}", **READ)
def free_bytes(ctx: RunContext, host: str, path: str) -> int:
    out = ctx.executor.run(host, commands.free_bytes(path), timeout_s=60).stdout.split()
    try:
        return int(out[-1])
    except (IndexError, ValueError):
        raise CommandFailed(host=host, command="df", exit_code=0, output=" ".join(out)) from None


@task(name="cpu-count", task_run_name="cpu-count/{host}", **READ)
def cpu_count(ctx: RunContext, host: str) -> int:
    return max(1, int(ctx.executor.run(host, commands.cpu_count(), timeout_s=60).stdout.strip() or 1))


@task(name="prepare-dump-dir", task_run_name="prepare-dump-dir/{host}", **RETRY_CONNECT)
def prepare_dump_dir(ctx: RunContext, host: str, path: str) -> None:
    ctx.executor.run(host, commands.make_dir(path, owner=ctx.settings.pg_os_user), timeout_s=60)


@dataclass(frozen=True)
class DumpResult:
    file: str
    seconds: float
    fingerprint: dict[str, int | str]


@task(name="pg-dump", task_run_name="pg-dump/{host}", **SIDE_EFFECT)
def dump(ctx: RunContext, host: str, file: str, planned: commands.Command, snapshot_placeholder: str) -> DumpResult:
    """The planned pg_dump of pe-puppetdb, from a snapshot exported here (its id in place of the plan's
    ``snapshot_placeholder``), and the fingerprint of exactly that snapshot."""
    s = ctx.settings
    started = time.monotonic()
    with connect(ctx, host) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.value("SELECT pg_export_snapshot()")
        expected = fingerprint_in(conn)
        # The exporting transaction stays open while pg_dump imports its snapshot.
        with watch_load(ctx, host, DB, f"pg_dump on {host}"):
            ctx.executor.run(host, planned.filled(snapshot_placeholder, snapshot), timeout_s=s.command_timeout_s)
    seconds = time.monotonic() - started
    logger().info("dumped pe-puppetdb on %s in %.1f s (%d tables)", host, seconds,
                  sum(1 for k in expected if k.startswith("rows:")))
    return DumpResult(file, seconds, expected)


@task(name="sha256", task_run_name="sha256/{host}", **READ)
def checksum(ctx: RunContext, host: str, path: str) -> str:
    out = ctx.executor.run(host, commands.sha256sum(path), timeout_s=1800, stream=False).stdout.split()
    if not out or len(out[0]) != 64:
        raise CommandFailed(host=host, command="sha256sum", exit_code=0, output=" ".join(out))
    return out[0]


@task(name="transfer-dump", task_run_name="transfer-dump/{source}->{target}", **RETRY_CONNECT)
def transfer(ctx: RunContext, source: str, target: str, path: str, dest: str) -> None:
    """scp from the PuppetDB node to the replica, as the guide does (retried: it is idempotent)."""
    try:
        ctx.executor.run(source, commands.scp_to(path, host=target, dest=dest), timeout_s=ctx.settings.command_timeout_s)
    except CommandFailed as exc:
        raise TransferError(f"scp to {target} failed (exit {exc.exit_code})", host=source,
                            hint="the master must be able to ssh to the replica as root") from None


@dataclass(frozen=True)
class RestoreResult:
    exit_code: int
    ignored_errors: list[str]
    seconds: float


@task(name="pg-restore", task_run_name="pg-restore/{host}", **SIDE_EFFECT)
def restore(ctx: RunContext, host: str, cmd: commands.Command, source_bytes: int = 0,
            expected_s: float = 0) -> RestoreResult:
    """The planned ``pg_restore --clean --jobs=N``. Exit 1 with "errors ignored on restore" is judged by verify(),
    not here. With ``source_bytes``, progress is the restored database's size against it."""
    s = ctx.settings
    started = time.monotonic()
    with watch_load(ctx, host, DB, f"pg_restore on {host}", expected_bytes=source_bytes, expected_s=expected_s):
        result = ctx.executor.run(host, cmd, check=False, timeout_s=s.command_timeout_s)
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
def verify(ctx: RunContext, host: str, expected: dict[str, int | str]) -> dict[str, int | str]:
    """Compare the target's fingerprint with the source snapshot's; any difference fails the copy."""
    actual = read_fingerprint(ctx, host)
    diff = differences(expected, actual)
    if diff:
        shown = ", ".join(f"{k}: expected {a}, found {b}" for k, (a, b) in sorted(diff.items())[:8])
        raise PostconditionFailed(f"the copy on {host} differs from the source: {shown}",
                                 hint="do not use this copy; re-run copy_puppetdb (provisioning's own sync still works)")
    return actual


@task(name="remove-dump", task_run_name="remove-dump/{host}", **RETRY_CONNECT)
def remove_files(ctx: RunContext, host: str, *paths: str) -> None:
    ctx.executor.run(host, commands.remove_files(*paths), timeout_s=120)




@task(name="swap-in-staging", task_run_name="swap-in-staging/{host}", **SIDE_EFFECT)
def swap_in_staging(ctx: RunContext, host: str) -> None:
    s = ctx.settings
    ctx.executor.run(host, commands.swap_databases(DB, DB + commands.STAGING_SUFFIX, DB + commands.OLD_SUFFIX,
                                                         os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))


@task(name="drop-database", task_run_name="drop-{name}/{host}", **RETRY_CONNECT)
def drop_database(ctx: RunContext, host: str, name: str) -> None:
    s = ctx.settings
    ctx.executor.run(host, commands.drop_database(name, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))
