"""The fast copy's job runner against the fake executor: order, dependencies, rows reported, first failure."""

from __future__ import annotations

import re
import threading

import pytest

from pe_ha.context import RunContext
from pe_ha.errors import CommandFailed
from pe_ha.executor import CommandResult
from pe_ha.fake_executor import FakeExecutor
from tasks.copy_plan import (
    PLANNED_SNAPSHOT,
    FastCopyFacts,
    FastCopyPlan,
    IndexInfo,
    PostDataPlan,
    plan_fast_copy,
)
from tasks.puppetdb_fast import run_jobs
from tests.conftest import make_settings

M, R = "master.example.com", "replica.example.com"
pytestmark = pytest.mark.usefixtures("prefect_harness")

SCHEMA = "/var/tmp/pe-ha/s.dump"


def _plan(link_mb_s: float = 1000.0) -> FastCopyPlan:
    """A big table (its key built in its stream, its trigram index by a build job after it) and two small ones
    sharing one stream."""
    post_data = PostDataPlan(early={"big": [10, 11], "small_a": [20, 21]}, late=[],
                             names={10: "big_pkey", 11: "big_trgm", 20: "small_a_pkey", 21: "small_a_idx"},
                             constraints=frozenset({10, 20}))
    facts = FastCopyFacts(tables=(("big", 300 * 2**20), ("small_a", 2 * 2**20), ("small_b", 2**20)),
                          indexes={"big_trgm": IndexInfo("big", "gin", 90 * 2**20)}, sequences=("big_id_seq",),
                          post_data=post_data, binary=True, compressors=("zstd", "gzip"))
    return plan_fast_copy(facts, source=M, target=R, schema_file=SCHEMA, staging="pe-puppetdb-pe-ha-staging",
                          os_user="pe-postgres", bin_dir="/opt/puppetlabs/server/bin", index_build_memory_mb=256,
                          cpus=2, link_mb_s=link_mb_s)


@pytest.mark.parametrize(("link_mb_s", "compress"), [(1000.0, "none"), (float("inf"), "none"), (12.5, "zstd")])
def test_the_streams_compress_only_on_a_link_slower_than_compressing(link_mb_s, compress):
    plan = _plan(link_mb_s)
    assert plan.compress == compress
    streams = [" ".join(p.command.argv) for p in plan.jobs if p.job.kind == "stream"]
    assert streams and all(("zstd" in cmd) == (compress == "zstd") for cmd in streams)


def test_the_plan_has_a_stream_per_big_table_and_a_build_per_big_index():
    jobs = [p.job for p in _plan().jobs]
    assert [(j.key, j.kind, j.tables, j.after) for j in jobs] == [
        ("stream:big", "stream", ("big",), None), ("build:11", "build", ("big",), "stream:big"),
        ("stream:small_a", "stream", ("small_a", "small_b"), None)]
    assert all(PLANNED_SNAPSHOT in " ".join(p.command.argv) for p in _plan().jobs if p.job.kind == "stream")


def _loader(host: str, argv: tuple[str, ...]) -> CommandResult:
    """Echo a row count for every table a stream command loads, as the target's psql would."""
    script = argv[-1]
    tables = re.findall(r"PEHA-ROWS (\w+) :ROW_COUNT", script)
    return CommandResult(host, argv, 0, "\n".join(f"PEHA-ROWS {t} {len(t)}" for t in tables), "", 0.0)


@pytest.fixture()
def ctx(tmp_path):
    return RunContext(make_settings(tmp_path), executor=FakeExecutor())


@pytest.fixture()
def fake(ctx):
    return ctx.executor


def _run(ctx, **kw):
    return run_jobs(ctx, _plan().jobs, snapshot="00000003-0000001B-1", workers=2, timeout_s=60,
                    sizes={"big": 300, "small_a": 2, "small_b": 1}, **kw)


def test_every_job_runs_once_and_a_build_waits_for_its_table(ctx, fake):
    fake.script(M, ("bash", "-c"), responder=_loader)
    fingerprint_threads: list[str] = []
    result = _run(ctx, while_streaming=lambda: fingerprint_threads.append(threading.current_thread().name))
    assert result.loaded_rows == {"big": 3, "small_a": 7, "small_b": 7}
    assert fingerprint_threads == ["pe-ha-source-fingerprint"]  # beside the jobs, not in their way
    calls = [str(c) for c in fake.calls]
    streams = [i for i, c in enumerate(calls) if c.startswith(f"{M}: bash -c")]
    builds = [i for i, c in enumerate(calls) if "--use-list=" in c and c.startswith(R)]
    assert len(streams) == 2 and len(builds) == 1
    # the run reads the snapshot it exported, never the plan's stand-in
    assert all("00000003-0000001B-1" in calls[i] for i in streams)
    assert not any(PLANNED_SNAPSHOT in c for c in calls)
    big_stream = next(i for i in streams if 'COPY public."big" TO STDOUT WITH (FORMAT binary)' in calls[i])
    assert builds[0] > big_stream
    assert f"--use-list={SCHEMA}.build-11.list" in calls[builds[0]]
    # the big table's own key is built inside its stream command; the small tables share one psql session
    assert f"--use-list={SCHEMA}.inline-stream-big.list" in calls[big_stream]
    small = next(calls[i] for i in streams if i != big_stream)
    assert small.count("psql") == 2 and "FORMAT binary" not in small
    assert f"--use-list={SCHEMA}.inline-stream-small_a.list" in small


def test_the_first_failure_stops_new_jobs_and_is_raised(ctx, fake):
    fake.script(M, ("bash", "-c"), error=CommandFailed(host=M, command="stream", exit_code=1, output="broken pipe"))
    with pytest.raises(CommandFailed, match="broken pipe"):
        _run(ctx, )
    # both streams had started (two workers); the build that waited for the failed stream never ran
    assert not any("--use-list=" in str(c) and c.host == R for c in fake.calls)


def test_each_finished_stream_reports_tables_and_bytes_copied(ctx, fake, caplog):
    import logging

    fake.script(M, ("bash", "-c"), responder=_loader)
    caplog.set_level(logging.INFO, logger="pe_ha")
    _run(ctx, )
    lines = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("tables copied:"))
    # the two streams finish in either order; the last line always counts all three tables
    assert len(lines) == 2
    assert "tables copied: 3 of 3 (0 of 0 MiB on the source)" in lines
    assert any(line.startswith(("tables copied: 1 of 3", "tables copied: 2 of 3")) for line in lines)
