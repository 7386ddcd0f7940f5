"""Planning the fast PuppetDB copy: which jobs (table streams and index builds) run, after what, in what
order. Pure functions, no I/O; ``tasks.puppetdb`` runs the plan.

The copy is CPU-bound on both ends, and up to PuppetDB 8.0 one index decides its length: the trigram GIN
index on ``catalog_resources.file`` takes longer to build than any table takes to stream (8.1 dropped it,
migration 84; PE 2023.8 ships 8.7). So:

* every big table streams in a job of its own, and each of its indexes is a build job that can start as
  soon as that table's rows are in, beside the other streams (its primary key and unique constraints are
  built in the stream job itself, right after the rows: ``ADD CONSTRAINT`` locks the table exclusively, so
  it must not wait behind a long index build);
* small tables stream in chunks, each table followed by its own indexes in the same remote command;
* ready jobs run longest-path-first: a stream is worth its own cost plus its longest build.

Costs are estimates for ordering only, from sizes on the source: a B-tree builds at about the speed a
table streams, a GIN or GiST index about ten times slower per byte (measured on the lab: 9.5 s for a 95
MB trigram GIN, 1.5 s for a 155 MB B-tree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pe_ha.commands import ROWS_MARK, Command
from pe_ha.forecast import COMPRESS_BELOW_MB_S

# seconds per MiB, for ordering only
STREAM_COST = 0.01
BTREE_COST = 0.01
SLOW_INDEX_COST = 0.1
SLOW_METHODS = frozenset({"gin", "gist", "spgist"})


@dataclass(frozen=True)
class IndexInfo:
    """An index on the source: the leaf table it is on, its access method and size."""

    table: str
    method: str
    bytes: int


@dataclass(frozen=True)
class PostDataPlan:
    """Which post-data entries of the schema archive are built when (``pg_restore --list`` ids)."""

    early: dict[str, list[int]]  # a leaf table -> its own indexes and constraints: built once its rows are in
    late: list[int]  # everything else (parents' indexes, ATTACH, foreign keys, triggers), once all data is in
    names: dict[int, str] = field(default_factory=dict)  # early entry -> its index (or constraint) name
    constraints: frozenset[int] = frozenset()  # early entries that are ADD CONSTRAINT (primary key, unique)


_TOC_ID = re.compile(r"^(\d+);")
_TOC_INDEX = re.compile(r"^(\d+); \d+ \d+ INDEX public (\S+) \S+$")
_TOC_CONSTRAINT = re.compile(r"^(\d+); \d+ \d+ CONSTRAINT public (\S+) (\S+) \S+$")


def post_data_plan(toc: str, index_table: dict[str, str], tables: set[str]) -> PostDataPlan:
    """Split the archive's entries: a streamed table's own INDEX and CONSTRAINT (primary key, unique) entries
    go early; every other entry goes late. Late lists carry every non-early id: ``--section=post-data``
    keeps only the post-data ones, so an entry this parser does not know is never skipped, only built late."""
    early: dict[str, list[int]] = {}
    late: list[int] = []
    names: dict[int, str] = {}
    constraints: set[int] = set()
    for line in toc.splitlines():
        line = line.strip()
        found = _TOC_ID.match(line)
        if not found:  # comments (;) and blank lines
            continue
        entry = int(found.group(1))
        table, name = None, ""
        if (m := _TOC_INDEX.match(line)) is not None:
            name = m.group(2)
            table = index_table.get(name)
        elif (m := _TOC_CONSTRAINT.match(line)) is not None:
            table, name = m.group(2), m.group(3)
            constraints.add(entry)
        if table is not None and table in tables:
            early.setdefault(table, []).append(entry)
            names[entry] = name
        else:
            late.append(entry)
            constraints.discard(entry)
    return PostDataPlan(early, late, names, frozenset(constraints))


@dataclass(frozen=True)
class Job:
    """One remote command of the copy.

    A ``stream`` job runs on the source: its tables, one after another, each followed on the target by the
    entries ``inline`` lists for it. A ``build`` job runs on the target: ``pg_restore`` of ``entries``.
    """

    key: str
    kind: Literal["stream", "build"]
    tables: tuple[str, ...]
    cost: float
    priority: float
    after: str | None = None  # the job that must finish first
    inline: tuple[tuple[str, tuple[int, ...]], ...] = ()
    entries: tuple[int, ...] = ()
    label: str = ""


def _index_cost(info: IndexInfo | None) -> float:
    if info is None:
        return 0.05
    per_mib = SLOW_INDEX_COST if info.method in SLOW_METHODS else BTREE_COST
    return per_mib * info.bytes / 2**20


def copy_jobs(tables: list[tuple[str, int]], plan: PostDataPlan, indexes: dict[str, IndexInfo],
              big_share: float = 1 / 16) -> list[Job]:
    """The jobs of one copy. ``tables`` is (name, heap bytes) of every leaf table; a table holding at least
    ``big_share`` of all heap bytes is big (a stream job of its own, one build job per index)."""
    total = sum(size for _, size in tables) or 1
    jobs: list[Job] = []
    small: list[tuple[str, int]] = []
    for name, size in sorted(tables, key=lambda t: (-t[1], t[0])):
        if size < total * big_share:
            small.append((name, size))
            continue
        entries = plan.early.get(name, [])
        keys = tuple(e for e in entries if e in plan.constraints)
        builds = [Job(key=f"build:{e}", kind="build", tables=(name,), entries=(e,), after=f"stream:{name}",
                      cost=(c := _index_cost(indexes.get(plan.names.get(e, "")))), priority=c,
                      label=plan.names.get(e, str(e)))
                  for e in entries if e not in plan.constraints]
        cost = STREAM_COST * size / 2**20 + sum(_index_cost(indexes.get(plan.names.get(e, ""))) for e in keys)
        jobs.append(Job(key=f"stream:{name}", kind="stream", tables=(name,), cost=cost,
                        priority=cost + max((b.cost for b in builds), default=0.0),
                        inline=((name, keys),) if keys else (), label=name))
        jobs.extend(builds)
    chunk: list[tuple[str, int]] = []
    chunk_bytes = 0

    def close_chunk() -> None:
        names = tuple(n for n, _ in chunk)
        cost = sum(STREAM_COST * size / 2**20 + sum(_index_cost(indexes.get(plan.names.get(e, "")))
                                                     for e in plan.early.get(n, []))
                   for n, size in chunk)
        inline = tuple((n, tuple(plan.early[n])) for n in names if plan.early.get(n))
        jobs.append(Job(key=f"stream:{names[0]}", kind="stream", tables=names, cost=cost, priority=cost, inline=inline,
                        label=f"{len(names)} tables from {names[0]}"))

    for name, size in small:
        if chunk and chunk_bytes + size > total * big_share:
            close_chunk()
            chunk, chunk_bytes = [], 0
        chunk.append((name, size))
        chunk_bytes += size
    if chunk:
        close_chunk()
    return jobs


def loaded_rows(stdout: str) -> dict[str, int]:
    """``PEHA-ROWS <table> <n>`` lines echoed by the target's loader, one per table."""
    counts: dict[str, int] = {}
    for line in stdout.splitlines():
        parts = line.strip().split()
        if len(parts) == 3 and parts[0] == ROWS_MARK and parts[2].isdigit():
            counts[parts[1]] = int(parts[2])
    return counts


# Stands for the snapshot the run exports: the plan's commands carry it, the run fills in the real id.
PLANNED_SNAPSHOT = "00000000-00000000-0"


def list_file(schema_file: str, name: str) -> str:
    """Where a job's ``pg_restore --use-list`` file lives on the target: beside the schema archive."""
    return f"{schema_file}.{name.replace(':', '-')}.list"


@dataclass(frozen=True)
class FastCopyFacts:
    """What the fast copy is planned from, read before anything changes."""

    tables: tuple[tuple[str, int], ...]  # every leaf table and its heap bytes, largest first
    indexes: dict[str, IndexInfo]
    sequences: tuple[str, ...]
    post_data: PostDataPlan  # from the schema frame's table of contents
    binary: bool  # same PostgreSQL major on both ends: COPY's binary format is portable
    compressors: tuple[str, ...]  # of COMPRESSORS, those installed on both ends, preferred first
    # the source's grants on its public schema (role or PUBLIC, privilege, grantable), its owner's own left out
    public_grants: tuple[tuple[str, str, bool], ...] = ()


COMPRESSORS = ("zstd", "gzip")


def choose_compression(link_mb_s: float, compressors: tuple[str, ...]) -> str:
    """Compression pays only when the link is slower than compressing: none on fast links, on slow ones the first
    compressor both ends have (the forecast assumes the same threshold)."""
    if link_mb_s >= COMPRESS_BELOW_MB_S or not compressors:
        return "none"
    return compressors[0]


@dataclass(frozen=True)
class PlannedJob:
    job: Job
    host: str
    command: Command


@dataclass(frozen=True)
class FastCopyPlan:
    """Every command of the fast copy, in order, built once from the facts; the run sends exactly these (with the
    exported snapshot's id in place of ``PLANNED_SNAPSHOT``)."""

    source: str
    target: str
    compress: str  # chosen from the measured link
    create_staging: Command
    dump_schema: Command
    send_schema: Command
    restore_pre_data: Command
    grant_public: Command
    write_lists: Command
    jobs: tuple[PlannedJob, ...]
    restore_data: Command
    restore_late: Command
    copy_sequences: Command | None
    remove_lists: Command
    workers: int
    table_bytes: dict[str, int]
    early_entries: int  # indexes and constraints built with their tables

    def rows(self) -> list[tuple[str, Command]]:
        s, t = self.source, self.target
        return [(t, self.create_staging), (s, self.dump_schema), (s, self.send_schema), (t, self.restore_pre_data),
                (t, self.grant_public), (t, self.write_lists), *[(j.host, j.command) for j in self.jobs], (t, self.restore_data),
                (t, self.restore_late), *([(s, self.copy_sequences)] if self.copy_sequences else []),
                (t, self.remove_lists)]


def plan_fast_copy(facts: FastCopyFacts, *, source: str, target: str, schema_file: str, staging: str,
                   os_user: str, bin_dir: str, index_build_memory_mb: int, cpus: int, link_mb_s: float) -> FastCopyPlan:
    """The fast copy's commands from its facts: a pure function. ``cpus`` is the target's: at least two jobs
    run at once (a stream and an index build use different ends), the last post-data restore uses them all.
    ``link_mb_s`` (measured) decides the streams' compression."""
    from pe_ha import commands

    pg = {"os_user": os_user, "bin_dir": bin_dir}
    mem = index_build_memory_mb
    snapshot = PLANNED_SNAPSHOT
    compress = choose_compression(link_mb_s, facts.compressors)
    jobs = copy_jobs(list(facts.tables), facts.post_data, facts.indexes)
    names = facts.post_data.names
    lists: dict[str, list[str]] = {}
    planned: list[PlannedJob] = []
    for job in jobs:
        if job.kind == "build":
            lists[list_file(schema_file, job.key)] = [names[e] for e in job.entries]
            planned.append(PlannedJob(job, target, commands.pg_restore_listed(
                file=schema_file, list_file=list_file(schema_file, job.key), database=staging, jobs=1,
                maintenance_mem_mb=mem, **pg)))
            continue
        then = None
        if job.inline:
            inline_list = list_file(schema_file, f"inline-{job.key}")
            lists[inline_list] = [names[e] for _, ids in job.inline for e in ids]
            then = (schema_file, inline_list)
        if len(job.tables) == 1:
            cmd = commands.stream_table(job.tables[0], snapshot=snapshot, target=target, staging=staging,
                                        compress=compress, binary=facts.binary, multiplex=True,
                                        then_restore=then, maintenance_mem_mb=mem, **pg)
        else:
            cmd = commands.stream_tables_merged(list(job.tables), snapshot=snapshot, target=target, staging=staging,
                                                compress=compress, then_restore=then, maintenance_mem_mb=mem,
                                                **pg)
        planned.append(PlannedJob(job, source, cmd))
    late_list = list_file(schema_file, "late")
    return FastCopyPlan(
        source=source, target=target, compress=compress,
        create_staging=commands.recreate_database(staging, owner="pe-puppetdb", like="pe-puppetdb", **pg),
        dump_schema=commands.pg_dump_schema(file=schema_file, snapshot=snapshot, **pg),
        send_schema=commands.scp_to(schema_file, host=target, dest=schema_file, multiplex=True),
        restore_pre_data=commands.pg_restore_section(file=schema_file, database=staging, section="pre-data", jobs=1,
                                                     **pg),
        grant_public=commands.set_public_schema_grants(facts.public_grants, database=staging, **pg),
        write_lists=commands.write_restore_lists(schema_file, lists, others=late_list, **pg),
        jobs=tuple(planned),
        restore_data=commands.pg_restore_section(file=schema_file, database=staging, section="data", jobs=1, **pg),
        restore_late=commands.pg_restore_listed(file=schema_file, list_file=late_list, database=staging, jobs=cpus,
                                                maintenance_mem_mb=mem, **pg),
        copy_sequences=commands.copy_sequences(facts.sequences, target=target, staging=staging, **pg)
        if facts.sequences else None,
        remove_lists=commands.remove_files(*lists, late_list),
        workers=max(2, cpus), table_bytes=dict(facts.tables),
        early_entries=sum(len(ids) for ids in facts.post_data.early.values()))
