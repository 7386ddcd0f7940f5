"""The fast copy's job runner against the fake executor: order, dependencies, rows reported, first failure."""

from __future__ import annotations

import re
import threading

import pytest

from pe_ha import runtime
from pe_ha.errors import CommandFailed
from pe_ha.executor import CommandResult
from pe_ha.fake_executor import FakeExecutor
from tasks.copy_plan import Job
from tasks.puppetdb_fast import run_jobs
from tests.conftest import make_settings

M, R = "master.example.com", "replica.example.com"
pytestmark = pytest.mark.usefixtures("prefect_harness")

SCHEMA = "/var/tmp/pe-ha/s.dump"


def _jobs() -> list[Job]:
    return [
        Job(key="stream:big", kind="stream", tables=("big",), cost=3, priority=12, inline=(("big", (10,)),), label="big"),
        Job(key="build:11", kind="build", tables=("big",), entries=(11,), cost=9, priority=9, after="stream:big",
            label="big_trgm"),
        Job(key="stream:small_a", kind="stream", tables=("small_a", "small_b"), cost=1, priority=1,
            inline=(("small_a", (20, 21)),), label="2 tables"),
    ]


def _loader(host: str, argv: tuple[str, ...]) -> CommandResult:
    """Echo a row count for every table a stream command loads, as the target's psql would."""
    script = argv[-1]
    tables = re.findall(r"PEHA-ROWS (\w+) :ROW_COUNT", script)
    return CommandResult(host, argv, 0, "\n".join(f"PEHA-ROWS {t} {len(t)}" for t in tables), "", 0.0)


@pytest.fixture()
def fake(tmp_path):
    executor = FakeExecutor()
    with runtime.use(executor=executor, settings=make_settings(tmp_path)):
        yield executor


def _run(**kw):
    return run_jobs(_jobs(), source=M, target=R, staging="pe-puppetdb-pe-ha-staging", snapshot="00000003-0000001B-1",
                    schema_file=SCHEMA, compress="none", binary=True, workers=2,
                    sizes={"big": 300, "small_a": 2, "small_b": 1}, **kw)


def test_every_job_runs_once_and_a_build_waits_for_its_table(fake):
    fake.script(M, ("bash", "-c"), responder=_loader)
    fingerprint_threads: list[str] = []
    result = _run(while_streaming=lambda: fingerprint_threads.append(threading.current_thread().name))
    assert result.loaded_rows == {"big": 3, "small_a": 7, "small_b": 7}
    assert fingerprint_threads == ["pe-ha-source-fingerprint"]  # beside the jobs, not in their way
    calls = [str(c) for c in fake.calls]
    streams = [i for i, c in enumerate(calls) if c.startswith(f"{M}: bash -c")]
    builds = [i for i, c in enumerate(calls) if "--use-list=" in c and c.startswith(R)]
    assert len(streams) == 2 and len(builds) == 1
    big_stream = next(i for i in streams if 'COPY public."big" TO STDOUT WITH (FORMAT binary)' in calls[i])
    assert builds[0] > big_stream
    assert f"--use-list={SCHEMA}.build-11.list" in calls[builds[0]]
    # the big table's own key is built inside its stream command; the small tables share one psql session
    assert f"--use-list={SCHEMA}.inline-stream-big.list" in calls[big_stream]
    small = next(calls[i] for i in streams if i != big_stream)
    assert small.count("psql") == 2 and "FORMAT binary" not in small
    assert f"--use-list={SCHEMA}.inline-stream-small_a.list" in small


def test_the_first_failure_stops_new_jobs_and_is_raised(fake):
    fake.script(M, ("bash", "-c"), error=CommandFailed(host=M, command="stream", exit_code=1, output="broken pipe"))
    with pytest.raises(CommandFailed, match="broken pipe"):
        _run()
    # both streams had started (two workers); the build that waited for the failed stream never ran
    assert not any("--use-list=" in str(c) and c.host == R for c in fake.calls)


def test_each_finished_stream_reports_tables_and_bytes_copied(fake, caplog):
    import logging

    fake.script(M, ("bash", "-c"), responder=_loader)
    caplog.set_level(logging.INFO, logger="pe_ha")
    _run()
    lines = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("tables copied:"))
    # the two streams finish in either order; the last line always counts all three tables
    assert len(lines) == 2
    assert "tables copied: 3 of 3 (0 of 0 MiB on the source)" in lines
    assert any(line.startswith(("tables copied: 1 of 3", "tables copied: 2 of 3")) for line in lines)
