"""The fast copy's planning: which post-data entries are built with their table, how tables are laned,
and how the loaders' row-count echoes are read. Pure functions, no lab."""

from __future__ import annotations

from tasks.copy_plan import IndexInfo, copy_jobs, loaded_rows, post_data_plan

# The shape of `pg_restore --list` output (PostgreSQL 15): "id; tableoid oid DESC schema tag owner";
# a CONSTRAINT's tag is "<table> <name>", an INDEX's is the index name alone.
TOC = """;
; Archive created at 2026-11-26 02:40:00 UTC
;     dbname: pe-puppetdb
;
; Selected TOC Entries:
;
215; 1259 16390 TABLE public catalog_resources pe-puppetdb
216; 1259 16400 TABLE public reports pe-puppetdb
217; 1259 16401 TABLE public reports_20261120 pe-puppetdb
4012; 0 16390 TABLE DATA public catalog_resources pe-puppetdb
4100; 0 0 SEQUENCE SET public certnames_id_seq pe-puppetdb
3401; 2606 16500 CONSTRAINT public catalog_resources catalog_resources_pkey pe-puppetdb
3402; 2606 16501 CONSTRAINT public reports reports_pkey pe-puppetdb
3403; 2606 16502 CONSTRAINT public reports_20261120 reports_20261120_pkey pe-puppetdb
3405; 1259 16510 INDEX public catalog_resources_tags_gin pe-puppetdb
3410; 1259 16520 INDEX public reports_certname_idx pe-puppetdb
3411; 1259 16521 INDEX public reports_20261120_certname_idx pe-puppetdb
3420; 0 0 INDEX ATTACH public reports_20261120_certname_idx pe-puppetdb
3421; 0 0 INDEX ATTACH public reports_20261120_pkey pe-puppetdb
3430; 2606 16530 FK CONSTRAINT public catalog_resources catalog_resources_resource_fkey pe-puppetdb
3440; 2620 16540 TRIGGER public catalog_resources some_trigger pe-puppetdb
3450; 1259 16550 INDEX public mystery_idx pe-puppetdb
"""
INDEX_TABLE = {"catalog_resources_tags_gin": "catalog_resources", "reports_20261120_certname_idx": "reports_20261120"}
STREAMED = {"catalog_resources", "reports_20261120"}


def test_a_streamed_table_s_own_indexes_and_keys_go_early() -> None:
    plan = post_data_plan(TOC, INDEX_TABLE, STREAMED)
    assert plan.early == {"catalog_resources": [3401, 3405], "reports_20261120": [3403, 3411]}


def test_everything_else_goes_late_and_nothing_is_lost() -> None:
    plan = post_data_plan(TOC, INDEX_TABLE, STREAMED)
    # the partitioned parent's key and index, ATTACH, foreign keys, triggers, and an index of unknown table
    for entry in (3402, 3410, 3420, 3421, 3430, 3440, 3450):
        assert entry in plan.late
    every_id = [int(line.split(";")[0]) for line in TOC.splitlines() if line[:1].isdigit()]
    early = [i for ids in plan.early.values() for i in ids]
    assert sorted(early + plan.late) == sorted(every_id)  # each entry exactly once
    assert not set(early) & set(plan.late)


def test_an_empty_archive_plans_nothing() -> None:
    plan = post_data_plan(";\n; nothing here\n", {}, set())
    assert plan.early == {} and plan.late == []


MiB = 2**20


def _lab_like():
    """The lab's 1,000-node shape: one big table with a slow trigram GIN index, a big B-tree-only table, small ones."""
    toc = "\n".join([
        "10; 2606 1 CONSTRAINT public catalog_resources catalog_resources_pkey pe-puppetdb",
        "11; 1259 2 INDEX public catalog_resources_file_trgm pe-puppetdb",
        "12; 1259 3 INDEX public catalog_resources_tags_gin pe-puppetdb",
        "20; 2606 4 CONSTRAINT public edges edges_pkey pe-puppetdb",
        "30; 2606 5 CONSTRAINT public certnames certnames_pkey pe-puppetdb",
        "31; 1259 6 INDEX public certnames_name_idx pe-puppetdb",
        "40; 2606 7 CONSTRAINT public environments environments_pkey pe-puppetdb",
        "50; 2606 8 FK CONSTRAINT public catalog_resources catalog_resources_certname_fkey pe-puppetdb",
    ])
    indexes = {"catalog_resources_pkey": IndexInfo("catalog_resources", "btree", 75 * MiB),
               "catalog_resources_file_trgm": IndexInfo("catalog_resources", "gin", 95 * MiB),
               "catalog_resources_tags_gin": IndexInfo("catalog_resources", "gin", 9 * MiB),
               "edges_pkey": IndexInfo("edges", "btree", 155 * MiB),
               "certnames_pkey": IndexInfo("certnames", "btree", 1 * MiB),
               "certnames_name_idx": IndexInfo("certnames", "btree", 1 * MiB),
               "environments_pkey": IndexInfo("environments", "btree", 8192)}
    tables = [("catalog_resources", 241 * MiB), ("edges", 126 * MiB), ("certnames", 2 * MiB),
              ("environments", 8192)]
    plan = post_data_plan(toc, {n: i.table for n, i in indexes.items()}, {t for t, _ in tables})
    return tables, plan, indexes


def test_big_tables_stream_alone_and_each_index_builds_as_soon_as_its_rows_are_in() -> None:
    tables, plan, indexes = _lab_like()
    jobs = {j.key: j for j in copy_jobs(tables, plan, indexes)}
    cr = jobs["stream:catalog_resources"]
    # the primary key is built right after the rows, in the stream's own remote command (ADD CONSTRAINT locks
    # the table exclusively: it must not queue behind a long index build)
    assert cr.tables == ("catalog_resources",) and cr.inline == (("catalog_resources", (10,)),)
    assert jobs["build:11"].after == jobs["build:12"].after == "stream:catalog_resources"
    assert jobs["build:11"].entries == (11,) and jobs["build:11"].label == "catalog_resources_file_trgm"
    assert jobs["stream:edges"].inline == (("edges", (20,)),)
    # small tables share one stream job, each followed by all its own entries
    small = jobs["stream:certnames"]
    assert small.tables == ("certnames", "environments")
    assert small.inline == (("certnames", (30, 31)), ("environments", (40,)))
    # every early entry is built exactly once; foreign keys wait for the end
    built = [e for j in jobs.values() for _, ids in j.inline for e in ids] + \
            [e for j in jobs.values() for e in j.entries]
    assert sorted(built) == sorted(e for ids in plan.early.values() for e in ids)
    assert 50 in plan.late and 50 not in built


def test_the_longest_path_goes_first() -> None:
    tables, plan, indexes = _lab_like()
    jobs = {j.key: j for j in copy_jobs(tables, plan, indexes)}
    # the trigram GIN (ten times a B-tree per byte) makes catalog_resources the critical path, though edges'
    # primary key is the larger index
    assert jobs["build:11"].cost > jobs["stream:edges"].cost
    assert jobs["stream:catalog_resources"].priority > jobs["stream:edges"].priority > jobs["stream:certnames"].priority
    assert jobs["stream:catalog_resources"].priority == jobs["stream:catalog_resources"].cost + jobs["build:11"].cost


def test_no_tables_no_jobs() -> None:
    assert copy_jobs([], post_data_plan("", {}, set()), {}) == []


def test_loaded_rows_reads_only_well_formed_echoes() -> None:
    out = "PEHA-ROWS certnames 1000\nnoise\nPEHA-ROWS edges 5\nPEHA-ROWS bad x\nPEHA-ROWS too many 1 2\n"
    assert loaded_rows(out) == {"certnames": 1000, "edges": 5}
