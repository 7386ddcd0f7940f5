"""ProgressWatch: the copy's progress lines, with a fake probe in place of PostgreSQL's progress views."""

from __future__ import annotations

import logging
import re
import threading

import pytest

from pe_ha.forecast import time_left
from pe_ha.psql import SqlReader
from tasks.puppetdb_progress import LoadProgress, ProgressWatch, load_progress
from tests.test_forecast import own_history  # noqa: F401
from tests.test_plans import env  # noqa: F401


def _wait_for(condition, limit: int = 2000) -> None:
    event = threading.Event()
    for _ in range(limit):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition not reached")


def test_reports_share_of_the_source_size_and_what_is_loading(caplog):
    sizes = iter([100 * 2**20, 400 * 2**20, 800 * 2**20, 1000 * 2**20] + [1000 * 2**20] * 1000)
    calls: list[tuple[str, str]] = []

    def probe(host: str, database: str) -> LoadProgress:
        calls.append((host, database))
        return LoadProgress(next(sizes), ["COPY catalog_resources: 212 MB, 1204000 rows"])

    caplog.set_level(logging.INFO, logger="pe_ha")
    with ProgressWatch("replica", "pe-puppetdb-pe-ha-staging", "copy m -> r", expected_bytes=800 * 2**20,
                       every_s=0.01, probe=probe) as watch:
        _wait_for(lambda: len(watch.looks) >= 4)
    assert calls[0] == ("replica", "pe-puppetdb-pe-ha-staging")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("copy m -> r")]
    assert lines[0].startswith("copy m -> r: 12% (100 of 800 MiB)")
    assert "now: COPY catalog_resources: 212 MB, 1204000 rows" in lines[0]
    assert lines[1].startswith("copy m -> r: 50% (400 of 800 MiB)")
    # Never 100 % before the step is over: the size passes the source's before the indexes are done.
    assert lines[2].startswith("copy m -> r: 99% (800 of 800 MiB)")
    assert lines[3].startswith("copy m -> r: 99% (1000 of 800 MiB)")


@pytest.mark.parametrize(("expected_s", "elapsed_s", "said"), [
    (600, 0, "about 10 min left of the forecast 10 min"),
    (600, 455, "about 2 min 25 s left of the forecast 10 min"),
    (600, 720, "2 min past the forecast 10 min"),
    (0, 30, ""),  # no forecast: nothing said
])
def test_the_time_left_is_the_forecasts(expected_s, elapsed_s, said):
    assert time_left(expected_s, elapsed_s) == said


def test_each_look_says_how_much_of_the_forecast_is_left(caplog):
    def probe(host: str, database: str) -> LoadProgress:
        return LoadProgress(400 * 2**20, [])

    caplog.set_level(logging.INFO, logger="pe_ha")
    with ProgressWatch("replica", "pe-puppetdb", "pg_restore on replica", expected_bytes=800 * 2**20,
                       expected_s=3600, every_s=0.01, probe=probe) as watch:
        _wait_for(lambda: len(watch.looks) >= 1)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("pg_restore on replica"))
    assert re.search(r"after \d+ s \(about (1 h 00 min|59 min \d\d s) left of the forecast 1 h 00 min\)", line), line


def test_without_an_expected_size_only_the_activity_is_reported(caplog):
    def probe(host: str, database: str) -> LoadProgress:
        return LoadProgress(5 * 2**30, [])

    caplog.set_level(logging.INFO, logger="pe_ha")
    with ProgressWatch("master", "pe-puppetdb", "pg_dump on master", every_s=0.01, probe=probe) as watch:
        _wait_for(lambda: len(watch.looks) >= 1)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("pg_dump on master"))
    assert "%" not in line
    assert line.endswith(": no COPY or index build running")


class Catalog(SqlReader):
    """A PostgreSQL of one major whose progress views list nothing running."""

    def __init__(self, major: int) -> None:
        self.server_major, self.queries = major, []

    def rows(self, query: str) -> list[tuple[str, ...]]:
        self.queries.append(query)
        if query == "SHOW server_version_num":
            return [(f"{self.server_major}0022",)]
        return [("123456789",)] if "pg_database_size" in query else []


@pytest.mark.parametrize(("major", "now", "views"), [
    (11, "PostgreSQL 11 cannot show COPY or index-build progress", set()),
    (13, "PostgreSQL 13 cannot show COPY progress", {"pg_stat_progress_create_index"}),
    (14, "no COPY or index build running", {"pg_stat_progress_copy", "pg_stat_progress_create_index"}),
    (17, "no COPY or index build running", {"pg_stat_progress_copy", "pg_stat_progress_create_index"}),
])
def test_an_idle_look_says_what_the_major_cannot_show(major, now, views):
    catalog = Catalog(major)
    look = load_progress(catalog)
    assert (look.bytes, look.activity, look.now()) == (123456789, [], now)
    read = {v for v in ("pg_stat_progress_copy", "pg_stat_progress_create_index") for q in catalog.queries if v in q}
    assert read == views


def test_what_is_running_comes_first_then_what_cannot_be_seen():
    look = LoadProgress(10, ["INDEX on edges: building index 40 %"], "PostgreSQL 13 cannot show COPY progress")
    assert look.now() == "INDEX on edges: building index 40 %; PostgreSQL 13 cannot show COPY progress"


def test_a_failing_look_is_skipped_and_the_next_one_reported(caplog):
    outcomes: list[object] = [OSError("connection refused"), LoadProgress(10, ["INDEX on edges: building index 40 %"])]
    outcomes += [LoadProgress(10, [])] * 1000

    def probe(host: str, database: str) -> LoadProgress:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]

    caplog.set_level(logging.INFO, logger="pe_ha")
    with ProgressWatch("replica", "pe-puppetdb", "restore", expected_bytes=100, every_s=0.01, probe=probe) as watch:
        _wait_for(lambda: len(watch.looks) >= 1)
    assert watch.looks[0].activity == ["INDEX on edges: building index 40 %"]


def test_a_look_stuck_on_a_dead_link_does_not_hold_the_step():
    entered, release = threading.Event(), threading.Event()

    def probe(host: str, database: str) -> LoadProgress:
        entered.set()
        release.wait(60)
        return LoadProgress(0, [])

    watch = ProgressWatch("replica", "pe-puppetdb", "restore", every_s=0.01, probe=probe)
    watch.__enter__()
    assert entered.wait(30)
    leaving = threading.Thread(target=watch.__exit__, args=(None, None, None))
    leaving.start()
    leaving.join(30)
    try:
        assert not leaving.is_alive(), "leaving the watch waited for the stuck look"
    finally:
        release.set()


def test_in_a_flow_run_the_progress_artifact_follows_and_ends_at_100(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    sizes = iter([250] * 1 + [500] * 1000)

    def probe(host: str, database: str) -> LoadProgress:
        return LoadProgress(next(sizes), [])

    @flow(name="progress-check")
    def load() -> tuple[str, list[int]]:
        from prefect.runtime import flow_run

        with ProgressWatch("replica", "pe-puppetdb", "restore", expected_bytes=1000, every_s=0.01,
                           probe=probe) as watch:
            _wait_for(lambda: len(watch.looks) >= 2)
        return flow_run.id, [look.bytes for look in watch.looks]

    run_id, seen = load()
    assert seen[:2] == [250, 500]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    assert [a.type for a in artifacts] == ["progress"]
    assert artifacts[0].data == 100.0


@pytest.mark.usefixtures("prefect_harness")
def test_a_timed_step_is_handed_its_own_forecast(own_history):  # noqa: F811
    from prefect import flow

    from flows._steps import Outcome, Procedure, Step
    from pe_ha import context
    from pe_ha.forecast import Estimate, Forecast, StepForecast

    forecast = Forecast((StepForecast("copy", Estimate(42, 30, 60)), StepForecast("prepare", Estimate(5, 4, 6))),
                        ("test",))
    handed: dict[str, object] = {}

    @flow
    def timed() -> None:
        steps = [Step("prepare", "untimed", "worker", lambda: handed.update(prepare="no argument")),
                 Step("copy", "timed, forecast", "worker", lambda expected_s: handed.update(copy=expected_s), timed=True),
                 Step("verify", "timed, not forecast", "worker", lambda expected_s: handed.update(verify=expected_s),
                      timed=True)]
        Procedure(context.given(), "timed", "test", steps, forecast=forecast).run(lambda _: Outcome("done"))

    timed()
    assert handed == {"prepare": "no argument", "copy": 42, "verify": 0.0}
