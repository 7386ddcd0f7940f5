"""Planning the fast PuppetDB copy: which jobs (table streams and index builds) run, after what, in what
order. Pure functions, no I/O; ``tasks.puppetdb`` runs the plan.

The copy is CPU-bound on both ends, and one index decides its length: PuppetDB's trigram GIN index on
``catalog_resources.file`` takes longer to build than any table takes to stream. So:

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

from pe_ha.commands import ROWS_MARK

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
