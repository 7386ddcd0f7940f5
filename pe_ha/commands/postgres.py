"""PostgreSQL's tools as PostgreSQL's owner (``runuser`` in a root session is the guide's ``sudo -u``): the guide's
pg_dump and pg_restore, pe-ha's psql sessions, and the fast copy's per-table streams and staging database."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pe_ha import validation as v
from pe_ha.commands._base import SSH_MUX, Command, _pipeline
from pe_ha.errors import ValidationError


def _as_pg(os_user: str, bin_dir: str, tool: str, *args: str, maintenance_mem_mb: int | None = None) -> list[str]:
    """``tool`` as the PostgreSQL owner; ``maintenance_mem_mb`` sets that session's ``maintenance_work_mem``
    (index builds sort and collect GIN entries in it: a larger value means fewer passes over the data)."""
    env = []
    if maintenance_mem_mb is not None:
        mb = v.positive_int(maintenance_mem_mb, what="maintenance_work_mem (MB)", maximum=16384)
        env = ["env", f"PGOPTIONS=-c maintenance_work_mem={mb}MB"]
    return ["runuser", "-u", v.os_user(os_user), "--", *env, f"{v.absolute_path(bin_dir)}/{tool}", *args]


def pg_dump(*, file: str, os_user: str, bin_dir: str, database: str = "pe-puppetdb",
            compress: int = 3, fmt: str = "custom", snapshot: str | None = None) -> Command:
    """``pg_dump --format=custom --compress=3 --file=<out> --dbname=pe-puppetdb`` as the PG owner.

    ``snapshot`` (from ``pg_export_snapshot()``) makes the dump see exactly what a verification
    fingerprint taken in the exporting transaction saw.
    """
    if fmt not in ("custom", "directory"):
        raise ValidationError(f"dump format {fmt!r} must be custom or directory")
    if not 0 <= compress <= 9:
        raise ValidationError(f"compress={compress} must be 0-9")
    args = [f"--format={fmt}", f"--compress={compress}", f"--file={v.absolute_path(file)}",
            f"--dbname={v.database_name(database)}"]
    if snapshot is not None:
        if not re.fullmatch(r"[0-9A-F]+-[0-9A-F]+-[0-9]+", snapshot):
            raise ValidationError(f"snapshot id {snapshot!r} is not a pg_export_snapshot() id")
        args.append(f"--snapshot={snapshot}")
    return Command(tuple(_as_pg(os_user, bin_dir, "pg_dump", *args)), f"pg_dump {database}")


def pg_restore(*, file: str, jobs: int, os_user: str, bin_dir: str, database: str = "pe-puppetdb",
               clean: bool = True) -> Command:
    """``pg_restore --clean --jobs=<cpus> --dbname=pe-puppetdb <file>`` as the PG owner."""
    args = ["--clean"] if clean else []
    args += [f"--jobs={v.positive_int(jobs, what='jobs', maximum=256)}", f"--dbname={v.database_name(database)}",
             v.absolute_path(file)]
    return Command(tuple(_as_pg(os_user, bin_dir, "pg_restore", *args)), f"pg_restore {database}")


def psql(sql: str, *, os_user: str, bin_dir: str, database: str = "postgres") -> Command:
    """``psql -X -A -t -v ON_ERROR_STOP=1 -d <db> -c <sql>`` as the PG owner (fixed SQL only)."""
    argv = _as_pg(os_user, bin_dir, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                  "-d", v.database_name(database), "-c", sql)
    return Command(tuple(argv), f"psql on {database}")


PSQL_FIELD_SEPARATOR = "\x1f"


def psql_session(database: str, *, os_user: str, bin_dir: str) -> Command:
    """A psql kept open on ``database`` as the PG owner, read from stdin: unaligned, tuples only, one unit
    separator between fields, quiet, stopping at the first error (``pe_ha.psql`` speaks to it)."""
    argv = _as_pg(os_user, bin_dir, "psql", "-X", "-q", "-A", "-t", "-F", PSQL_FIELD_SEPARATOR,
                  "-v", "ON_ERROR_STOP=1", "-d", v.database_name(database))
    return Command(tuple(argv), f"psql session on {database} (read-only checks over SSH)")


def psql_database_size(database: str = "pe-puppetdb", *, os_user: str, bin_dir: str) -> Command:
    """The guide's size check: ``psql -c '\\l+ "pe-puppetdb"'``."""
    db = v.database_name(database)
    return Command(tuple(_as_pg(os_user, bin_dir, "psql", "-c", f'\\l+ "{db}"')), f"size of {db}")


STAGING_SUFFIX = "-pe-ha-staging"


ROWS_MARK = "PEHA-ROWS"


OLD_SUFFIX = "-pe-ha-old"


_SNAPSHOT_RE = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")


_TABLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


# compress, decompress
_CODECS: dict[str, tuple[list[str], list[str]]] = {
    "none": ([], []), "gzip": (["gzip", "-1"], ["gzip", "-d"]), "zstd": (["zstd", "-q", "-1", "-T1"], ["zstd", "-q", "-d"])}


def _psql_argv(os_user: str, bin_dir: str, database: str, *args: str) -> list[str]:
    return _as_pg(os_user, bin_dir, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", v.database_name(database), *args)


def _check_stream(tables: Sequence[str], snapshot: str, compress: str) -> None:
    if not tables:
        raise ValidationError("a stream needs at least one table")
    for table in tables:
        if not _TABLE_RE.fullmatch(table):
            raise ValidationError(f"table name {table!r} is not a plain lower-case identifier")
    if not _SNAPSHOT_RE.fullmatch(snapshot):
        raise ValidationError(f"snapshot id {snapshot!r} is not a pg_export_snapshot() id")
    if compress not in _CODECS:
        raise ValidationError(f"compress={compress!r} must be one of {', '.join(_CODECS)}")


def _ssh_stream(out: Sequence[str], compress: str, target: str, into: Sequence[str], then: Command | None,
                multiplex: bool) -> Command:
    """``out | [compress] | ssh target 'set -o pipefail; cd / && [decompress |] into [&& then]'``, run on the source.
    ``cd /``: ssh starts in root's home, which the PostgreSQL user's tools cannot change back to (a warning per
    command otherwise)."""
    import shlex

    remote = (shlex.join(_CODECS[compress][1]) + " | " if compress != "none" else "") + shlex.join(into)
    if then is not None:
        remote += " && " + shlex.join(then.argv)
    ssh = ["ssh", "-o", "BatchMode=yes", *(SSH_MUX if multiplex else ()), "-o", "ConnectTimeout=10", "-o",
           "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "Compression=no", "-c", "aes128-gcm@openssh.com",
           v.hostname(target), "set -o pipefail; cd / && " + remote]
    stages: list[Sequence[str]] = [out]
    if compress != "none":
        stages.append(_CODECS[compress][0])
    stages.append(ssh)
    return _pipeline(*stages)


def _schema_dump(os_user: str, bin_dir: str, database: str, *options: str) -> list[str]:
    """pg_dump of everything but table data (schema, ACLs, sequence values), uncompressed custom format."""
    return _as_pg(os_user, bin_dir, "pg_dump", "--format=custom", "--compress=0", "--exclude-table-data=*",
                  *options, f"--dbname={v.database_name(database)}")


def pg_dump_schema(*, file: str, snapshot: str, os_user: str, bin_dir: str, database: str = "pe-puppetdb") -> Command:
    """The schema frame of a fast copy, from the snapshot, into ``file``."""
    if not _SNAPSHOT_RE.fullmatch(snapshot):
        raise ValidationError(f"snapshot id {snapshot!r} is not a pg_export_snapshot() id")
    argv = _schema_dump(os_user, bin_dir, database, f"--snapshot={snapshot}", f"--file={v.absolute_path(file)}")
    return Command(tuple(argv), f"schema of {database}")


def pg_restore_section(*, file: str, database: str, section: str, jobs: int, os_user: str, bin_dir: str) -> Command:
    if section not in ("pre-data", "data", "post-data"):
        raise ValidationError(f"section {section!r} must be pre-data, data or post-data")
    argv = _as_pg(os_user, bin_dir, "pg_restore", f"--section={section}",
                  f"--jobs={v.positive_int(jobs, what='jobs', maximum=256)}", f"--dbname={v.database_name(database)}",
                  v.absolute_path(file))
    return Command(tuple(argv), f"restore {section} into {database}")


def pg_restore_toc(*, file: str, os_user: str, bin_dir: str) -> Command:
    """``pg_restore --list``: the archive's table of contents, one entry per line (a read)."""
    return Command(tuple(_as_pg(os_user, bin_dir, "pg_restore", "--list", v.absolute_path(file))),
                   f"table of contents of {file}")


# A table-of-contents line: "<id>; <catalog> <oid> INDEX public <index> <owner>" or
# "<id>; <catalog> <oid> CONSTRAINT public <table> <constraint> <owner>"; prints the ids of the entries named in
# ``want`` (``keep=1``) or of every other entry (``keep=0``).
_PICK_ENTRIES = ('BEGIN { split(want, a, " "); for (i in a) w[a[i]] = 1 } '
                 '$1 ~ /^[0-9]+;$/ { n = ($4 == "INDEX") ? $6 : (($4 == "CONSTRAINT") ? $7 : ""); '
                 'if (((n != "") && (n in w)) == keep) print substr($1, 1, length($1) - 1) }')


def write_restore_lists(archive: str, lists: Mapping[str, Sequence[str]], *, others: str, os_user: str,
                        bin_dir: str) -> Command:
    """On the target: ``pg_restore --use-list`` files from the archive's own table of contents. Each path in
    ``lists`` gets the entries of the indexes and constraints named for it; ``others`` gets every other entry.
    By name, not by id: pg_dump numbers every catalog object it reads (other sessions' temporary tables too), so
    two dumps of one schema can number its entries differently."""
    import shlex

    every = sorted({name for names in lists.values() for name in names})
    for name in every:
        if not _TABLE_RE.fullmatch(name):
            raise ValidationError(f"index or constraint name {name!r} is not a plain lower-case identifier")
    toc = shlex.join(_as_pg(os_user, bin_dir, "pg_restore", "--list", v.absolute_path(archive)))
    parts = ['toc=$(mktemp)', 'trap \'rm -f "$toc"\' EXIT', f'{toc} > "$toc"']
    for path, names in lists.items():
        parts.append(shlex.join(["awk", "-v", f"want={' '.join(names)}", "-v", "keep=1", _PICK_ENTRIES]) + ' "$toc" > '
                     + shlex.quote(v.absolute_path(path)))
    parts.append(shlex.join(["awk", "-v", f"want={' '.join(every)}", "-v", "keep=0", _PICK_ENTRIES]) + ' "$toc" > '
                 + shlex.quote(v.absolute_path(others)))
    return Command(("bash", "-c", "set -e -o pipefail; umask 022; " + "; ".join(parts)),
                   f"write {len(lists) + 1} restore lists from the archive's table of contents")


def pg_restore_listed(*, file: str, list_file: str, database: str, jobs: int, os_user: str, bin_dir: str,
                      maintenance_mem_mb: int | None = None) -> Command:
    """``pg_restore --section=post-data --use-list=<list>``: only the listed indexes and constraints."""
    argv = _as_pg(os_user, bin_dir, "pg_restore", "--section=post-data",
                  f"--jobs={v.positive_int(jobs, what='jobs', maximum=256)}", f"--use-list={v.absolute_path(list_file)}",
                  f"--dbname={v.database_name(database)}", v.absolute_path(file), maintenance_mem_mb=maintenance_mem_mb)
    return Command(tuple(argv), f"restore the entries listed in {list_file} into {database}")


def _end_sessions(*names: str) -> list[str]:
    """End every other session on the databases (PostgreSQL 11 has no ``DROP DATABASE … WITH (FORCE)``); a DO
    block, so no result table reaches the run's log."""
    quoted = ", ".join(f"'{n}'" for n in names)
    return ["-c", f"DO $pe_ha$ BEGIN PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN "
                  f"({quoted}) AND pid <> pg_backend_pid(); END $pe_ha$"]


def _drop(name: str) -> list[str]:
    # IF EXISTS on a missing database is a NOTICE, which would reach the run's log as a warning
    return [*_end_sessions(name), "-c", "SET client_min_messages = warning", "-c", f'DROP DATABASE IF EXISTS "{name}"']


def recreate_database(name: str, *, owner: str, os_user: str, bin_dir: str, like: str | None = None) -> Command:
    """Drop (if it exists) and create an empty database owned by ``owner``. With ``like``, that database's
    owner and ACL are given to the new one (PE's ``REVOKE CONNECT … FROM PUBLIC`` and its grants), so a copy
    swapped in later keeps what PuppetDB's migrator relies on."""
    name, owner = v.database_name(name), v.database_name(owner)
    argv = _psql_argv(os_user, bin_dir, "postgres", *_drop(name), "-c", f'CREATE DATABASE "{name}" OWNER "{owner}"')
    if like is not None:
        argv += ["-c", _copy_database_acl_sql(v.database_name(like), name)]
    return Command(tuple(argv), f"create empty {name}" + (f" with the owner and ACL of {like}" if like else ""))


def _copy_database_acl_sql(source: str, target: str) -> str:
    """A DO block: ``target`` gets ``source``'s owner, and the same grants from the same grantors (each GRANT
    is made as its grantor, so grant chains such as PE's migrator granting CONNECT to pe-puppetdb hold)."""
    return f"""DO $pe_ha$
DECLARE
  src pg_database%ROWTYPE;
  g record;
BEGIN
  SELECT * INTO src FROM pg_database WHERE datname = '{source}';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'database {source} does not exist';
  END IF;
  EXECUTE format('ALTER DATABASE %I OWNER TO %I', '{target}', pg_get_userbyid(src.datdba));
  IF src.datacl IS NULL THEN
    RETURN;
  END IF;
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', '{target}');
  FOR g IN SELECT a.grantor, a.grantee, a.privilege_type, a.is_grantable FROM aclexplode(src.datacl) a
           ORDER BY (a.grantor = src.datdba) DESC, a.is_grantable DESC LOOP
    CONTINUE WHEN g.grantee = src.datdba AND g.grantor = src.datdba;
    EXECUTE format('SET ROLE %I', pg_get_userbyid(g.grantor));
    EXECUTE format('GRANT %s ON DATABASE %I TO %s%s', g.privilege_type, '{target}',
                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                   CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    RESET ROLE;
  END LOOP;
END
$pe_ha$"""


SCHEMA_PRIVILEGES = ("USAGE", "CREATE")


def set_public_schema_grants(grants: Sequence[tuple[str, str, bool]], *, database: str, os_user: str,
                             bin_dir: str) -> Command:
    """``database``'s ``public`` schema gets exactly ``grants`` ((role or PUBLIC, privilege, grantable), the
    source's, its owner's own left out): every other grant is revoked first. pg_dump writes the schema's ACL as a
    difference from the defaults of its own major, so a dump restored under another major's defaults (PostgreSQL
    15 stopped granting CREATE to PUBLIC) would otherwise keep a grant PE revoked, or lose one PE made."""
    rows = []
    for role, privilege, grantable in grants:
        if privilege not in SCHEMA_PRIVILEGES:
            raise ValidationError(f"schema privilege {privilege!r} must be one of {', '.join(SCHEMA_PRIVILEGES)}")
        grantee = "PUBLIC" if role == "PUBLIC" else v.database_name(role)
        rows.append(f"('{grantee}', '{privilege}', {'true' if grantable else 'false'})")
    wanted = ("SELECT * FROM (VALUES " + ", ".join(rows) + ") w(role, privilege, grantable)") if rows else \
        "SELECT NULL::text AS role, NULL::text AS privilege, NULL::boolean AS grantable WHERE false"
    sql = f"""DO $pe_ha$
DECLARE
  g record;
BEGIN
  FOR g IN SELECT DISTINCT a.grantee FROM pg_namespace s, aclexplode(s.nspacl) a
           WHERE s.nspname = 'public' AND a.grantee <> s.nspowner LOOP
    EXECUTE format('REVOKE ALL ON SCHEMA public FROM %s',
                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
  END LOOP;
  FOR g IN {wanted} LOOP
    EXECUTE format('GRANT %s ON SCHEMA public TO %s%s', g.privilege,
                   CASE WHEN g.role = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(g.role) END,
                   CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
END
$pe_ha$"""
    argv = _psql_argv(os_user, bin_dir, v.database_name(database), "-c", sql)
    return Command(tuple(argv), f"public schema of {database}: the source's grants")


def copy_sequences(sequences: Sequence[str], *, target: str, staging: str, os_user: str, bin_dir: str,
                   database: str = "pe-puppetdb") -> Command:
    """On the source: read every sequence's value and ``is_called`` and ``setval`` them in the target's staging
    database, in one transaction, through ssh. A copy that moves rows on its own must (the schema frame is made
    with ``--exclude-table-data='*'``, which leaves sequence data out too), or PuppetDB's next inserts collide
    with the ids already in use. Sequences are not transactional: read after the snapshot, a value is at least
    the snapshot's, so the copy is never behind (the check allows a sequence ahead, never behind)."""
    names = sorted(sequences)
    if not names:
        raise ValidationError("no sequences to copy")
    for name in names:
        if not _TABLE_RE.fullmatch(name):
            raise ValidationError(f"sequence name {name!r} is not a plain lower-case identifier")
    select = " UNION ALL ".join(
        f"SELECT format('SELECT setval(%L, %s, %L);', 'public.\"{name}\"', last_value, is_called) "
        f'FROM public."{name}"' for name in names)
    out = _psql_argv(os_user, bin_dir, database, "-A", "-t", "-c", select)
    into = _psql_argv(os_user, bin_dir, staging, "-1", "-o", "/dev/null", "-f", "-")  # setval's results: not logged
    return Command(_ssh_stream(out, "none", target, into, None, multiplex=True).argv,
                   f"set {len(names)} sequences in {staging} on {target} to the source's values")


def schema_toc(*, os_user: str, bin_dir: str, database: str = "pe-puppetdb") -> Command:
    """The table of contents of the schema frame (``pg_dump --exclude-table-data='*' | pg_restore --list``), with
    no file written: a read, for planning the copy's index builds."""
    return Command(_pipeline(_schema_dump(os_user, bin_dir, database), _as_pg(os_user, bin_dir, "pg_restore", "--list")).argv,
                   f"table of contents of {database}'s schema")


def drop_database(name: str, *, os_user: str, bin_dir: str) -> Command:
    argv = _psql_argv(os_user, bin_dir, "postgres", *_drop(v.database_name(name)))
    return Command(tuple(argv), f"drop {name}")


def swap_databases(live: str, staging: str, old: str, *, os_user: str, bin_dir: str) -> Command:
    """Rename live -> old and staging -> live (connections to both are ended first)."""
    live, staging, old = v.database_name(live), v.database_name(staging), v.database_name(old)
    argv = _psql_argv(os_user, bin_dir, "postgres", *_drop(old), *_end_sessions(live, staging),
                      "-c", f'ALTER DATABASE "{live}" RENAME TO "{old}"',
                      "-c", f'ALTER DATABASE "{staging}" RENAME TO "{live}"')
    return Command(tuple(argv), f"swap {staging} in as {live}")


def _then_restore(then_restore: tuple[str, str] | None, *, staging: str, os_user: str, bin_dir: str,
                  maintenance_mem_mb: int | None) -> Command | None:
    if then_restore is None:
        return None
    archive, list_file = then_restore
    return pg_restore_listed(file=archive, list_file=list_file, database=staging, jobs=1, os_user=os_user,
                             bin_dir=bin_dir, maintenance_mem_mb=maintenance_mem_mb)


def stream_table(table: str, *, snapshot: str, target: str, staging: str, compress: str, os_user: str, bin_dir: str,
                 database: str = "pe-puppetdb", multiplex: bool = False, binary: bool = False,
                 then_restore: tuple[str, str] | None = None, maintenance_mem_mb: int | None = None) -> Command:
    """On the source: COPY one table out of the snapshot, optionally compress, and COPY it into the target's staging DB
    through ssh, all in one pipeline (no dump file).

    ``binary`` uses COPY's binary format (only between servers of the same major version, which the caller
    checks): no text formatting and parsing, and PuppetDB's bytea hashes travel as bytes, not hex.
    ``then_restore`` = (schema archive, list file) on the target: once the table's rows are in, the same
    remote command builds the listed indexes and constraints.
    """
    _check_stream([table], snapshot, compress)
    out = _psql_argv(os_user, bin_dir, database, "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                     "-c", f"SET TRANSACTION SNAPSHOT '{snapshot}'",
                     "-c", f'COPY public."{table}" TO STDOUT' + (" WITH (FORMAT binary)" if binary else ""))
    # TRUNCATE in the loading transaction lets COPY FREEZE write the rows frozen and all-visible: the index and
    # constraint builds that follow, and the first reads, then never rewrite every page to set hint bits.
    # The row count PostgreSQL reports for the COPY is echoed back (``PEHA-ROWS <table> <n>``): the flow
    # compares it with the source snapshot's count, without scanning the loaded table again.
    # ONLY: an INHERITS parent (PuppetDB 6.8-7.12) must not empty its children, which stream on their own.
    into = _psql_argv(os_user, bin_dir, staging, "-c", "BEGIN", "-c", f'TRUNCATE ONLY public."{table}"',
                      "-c", f'COPY public."{table}" FROM STDIN WITH ({"FORMAT binary, " if binary else ""}FREEZE)',
                      "-c", f"\\echo {ROWS_MARK} {table} :ROW_COUNT", "-c", "COMMIT")
    then = _then_restore(then_restore, staging=staging, os_user=os_user, bin_dir=bin_dir,
                         maintenance_mem_mb=maintenance_mem_mb)
    return Command(_ssh_stream(out, compress, target, into, then, multiplex).argv, f"stream {table} to {target}")


def stream_tables_merged(tables: Sequence[str], *, snapshot: str, target: str, staging: str, compress: str,
                         os_user: str, bin_dir: str, database: str = "pe-puppetdb",
                         then_restore: tuple[str, str] | None = None,
                         maintenance_mem_mb: int | None = None) -> Command:
    """Small tables in one pipeline: one psql session on each end for all of them (starting a psql, an ssh
    channel and a pg_restore per table costs more than a small table's rows). Text COPY, each table's data
    ended by a ``\\.`` line, which ends that table's ``COPY … FROM STDIN`` on the target; the loads share one
    transaction, each table truncated in it so that FREEZE applies. ``then_restore`` = (archive, list file):
    the tables' own indexes and constraints, built after the commit."""
    _check_stream(tables, snapshot, compress)
    out_args = ["-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "-c", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
    into_args = ["-c", "BEGIN"]
    for table in tables:
        out_args += ["-c", f'COPY public."{table}" TO STDOUT', "-c", "\\echo '\\\\.'"]
        into_args += ["-c", f'TRUNCATE ONLY public."{table}"', "-c", f'COPY public."{table}" FROM STDIN WITH (FREEZE)',
                      "-c", f"\\echo {ROWS_MARK} {table} :ROW_COUNT"]
    into_args += ["-c", "COMMIT"]
    out = _psql_argv(os_user, bin_dir, database, *out_args)
    into = _psql_argv(os_user, bin_dir, staging, *into_args)
    then = _then_restore(then_restore, staging=staging, os_user=os_user, bin_dir=bin_dir,
                         maintenance_mem_mb=maintenance_mem_mb)
    return Command(_ssh_stream(out, compress, target, into, then, multiplex=True).argv,
                   f"stream {len(tables)} small tables to {target} in one session")


def link_probe(target: str, *, lead_mb: int = 4, timed_mb: int = 20) -> Command:
    """Push ``lead_mb`` then ``timed_mb`` MiB to ``target`` over one ssh connection; the target prints, by its own
    clock, when the lead has arrived and when the rest has. Their difference times the link alone: no handshake,
    no session of pe-ha's, no TCP slow start. ssh encrypts what it sends, so zeros cross the link as incompressible
    bytes (its own compression is off) and cost the source no CPU to make."""
    lead = v.positive_int(lead_mb, what="probe lead size", maximum=1024)
    timed = v.positive_int(timed_mb, what="probe size", maximum=1024)
    receive = (f"dd bs=1M count={lead} iflag=fullblock of=/dev/null 2>/dev/null && date +%s.%N && "
               f"dd bs=1M count={timed} iflag=fullblock of=/dev/null 2>/dev/null && date +%s.%N")
    return _pipeline(["head", "-c", f"{lead + timed}M", "/dev/zero"],
                     ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "Compression=no", "-c",
                      "aes128-gcm@openssh.com", v.hostname(target), receive])


def has_tool(tool: str) -> Command:
    if tool not in ("zstd", "gzip", "pigz"):
        raise ValidationError(f"unknown tool {tool!r}")
    return Command(("sh", "-c", f"command -v {tool}"), f"is {tool} installed?")
