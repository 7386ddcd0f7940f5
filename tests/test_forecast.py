"""The forecast in every plan: per step an expected duration and range, what does not serve meanwhile, the totals,
and the basis, from facts given here (no lab). Then the same figures in the dry run, the approval and the summary."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pe_ha.forecast import (
    NO_HISTORY,
    PRIMARY_CATALOGS,
    REPLICA_PUPPETDB,
    Estimate,
    copy_forecast,
    duration,
    guide_forecast,
)
from tests.test_plans import env, latest_artifact  # noqa: F401  (env: the plans' fake installation)

FACTS = json.loads((Path(__file__).parent / "forecast-facts.json").read_text())
DOCUMENTED = ["prepare", "dump", "transfer", "approval", "stop", "restore", "verify", "start", "accept", "remove-dump",
              "agent-run"]
FAST = ["prepare", "copy", "verify-staging", "approval", "stop", "swap", "start", "accept", "drop-staging",
        "remove-dump", "agent-run"]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (59.4, "59 s"), (60, "1 min"), (125, "2 min 05 s"),
                                                (3600, "1 h 00 min"), (5400, "1 h 30 min")])
def test_durations_read_as_an_operator_books_them(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("case", FACTS["copies"], ids=lambda c: c["name"])
def test_the_copys_forecast_from_its_facts(case):
    keys = FAST if case["method"] == "fast" else DOCUMENTED
    forecast = copy_forecast(case["method"], keys, size_bytes=case["size_bytes"], cpus=case["cpus"],
                             link_mb_s=case["link_mb_s"])
    total = forecast.total()
    assert total.low_s <= total.expected_s <= total.high_s
    assert round(total.expected_s) == case["expected_total_s"]
    # The copy only reads from the primary: it serves catalogs throughout; the replica's PuppetDB is stopped for a while
    assert forecast.unavailable(PRIMARY_CATALOGS) == Estimate(0, 0, 0)
    assert round(forecast.unavailable(REPLICA_PUPPETDB).expected_s) == case["replica_puppetdb_down_s"]
    lines = forecast.lines()
    assert lines[0].startswith("expected total: ") and f"{PRIMARY_CATALOGS}: served throughout" in lines
    assert any("past runs do not correct these figures yet" in line for line in lines)


def test_a_bigger_database_and_a_slower_link_take_longer():
    def total(size: int, link: float | None) -> float:
        return copy_forecast("documented", DOCUMENTED, size_bytes=size, cpus=2, link_mb_s=link).total().expected_s

    assert total(4 * 10**9, 100.0) > total(10**9, 100.0)
    assert total(10**9, 10.0) > total(10**9, 100.0)


def test_a_step_the_model_does_not_know_is_refused_not_guessed():
    with pytest.raises(KeyError, match="no model for step 'teleport'"):
        copy_forecast("fast", ["teleport"], size_bytes=1, cpus=1, link_mb_s=None)


def test_provision_and_enable_share_pes_own_figure_while_the_primary_serves_no_catalogs():
    forecast = guide_forecast(["backup", "provision", "wait", "verify"], unavailable_during=("provision", "wait"))
    assert forecast.unavailable(PRIMARY_CATALOGS) == Estimate(20 * 60, 10 * 60, 30 * 60)
    assert forecast.of("backup").unavailable == "" and forecast.of("wait").unavailable == PRIMARY_CATALOGS
    assert "the primary's catalogs unavailable for: 20 min (10 min to 30 min)" in forecast.lines()


def test_the_fast_copy_is_bound_by_a_slow_link_where_streaming_is_slower_than_its_own_work():
    # 5 GB at 1 MB/s, compressed (below 18 MB/s) to 7.3 % on the link: 365 s, more than the 156 s of its own work
    slow = copy_forecast("fast", ["copy"], size_bytes=5 * 10**9, cpus=1, link_mb_s=1.0).of("copy")
    assert slow is not None and slow.estimate.expected_s == pytest.approx(365)
    # and by its own work on a fast link: 6 s + 5 GB at 30 s/GB
    fast = copy_forecast("fast", ["copy"], size_bytes=5 * 10**9, cpus=1, link_mb_s=1000.0).of("copy")
    assert fast is not None and fast.estimate.expected_s == pytest.approx(156)


# -- the same forecast in the dry run, the approval and the summary (fake executor) ---------------------------


@pytest.fixture()
def own_history(env):  # noqa: F811
    """The plans' fake installation under a name of its own: no other test's runs are its history."""
    from deployments.setup import ensure_lock
    from pe_ha import context

    installation = f"forecast-{uuid.uuid4().hex[:8]}"
    ensure_lock(installation)
    given = context.given()
    with context.using(executor=env, api=given.api,
                       settings=given.settings.model_copy(update={"installation": installation})):
        yield env


@pytest.mark.usefixtures("prefect_harness")
def test_the_copys_dry_run_approval_and_summary_show_one_forecast(own_history, monkeypatch):
    from flows.copy_puppetdb import copy_puppetdb

    planned = copy_puppetdb(method="documented", approve=True, dry_run=True)
    assert [r["key"] for r in planned["forecast"]["steps"]] == DOCUMENTED
    lines = planned["forecast"]["lines"]
    assert lines[0].startswith("expected total: ") and f"{PRIMARY_CATALOGS}: served throughout" in lines
    shown = latest_artifact("copy-puppetdb-plan")
    assert "## Forecast" in shown and "| pg_restore --clean |" in shown and f"| {REPLICA_PUPPETDB} |" in shown

    asked: dict[str, str] = {}

    def approval(ctx, book, what, *, approved_up_front, timeout_s=3600, allows=""):
        asked["allows"] = allows

    monkeypatch.setattr("flows._steps.require_approval", approval)
    copy_puppetdb(method="documented", approve=True)
    assert "Forecast (from the start of the run):" in asked["allows"] and lines[0] in asked["allows"]
    summary = latest_artifact("copy-puppetdb-summary")
    assert "| step | host | outcome | seconds | forecast |" in summary and " (forecast " in summary
    restore = next(r for r in planned["forecast"]["steps"] if r["key"] == "restore")
    assert "| pg_restore --clean | replica.example.com | done |" in summary
    assert f"{restore['expected']} ({restore['range']})" in summary


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(("arrivals", "fact", "basis"), [
    ("1000.000000000\n1002.000000000\n", "link master.example.com -> replica.example.com: 10 MB/s (ssh, measured)",
     "link measured at 10 MB/s"),
    ("ssh: connect to host replica.example.com port 22: Connection refused\n", None,
     "link not measured: 110 to 12.5 MB/s assumed"),
])
def test_the_documented_copy_forecasts_its_transfer_from_the_link_it_measured(own_history, arrivals, fact, basis):
    from flows.copy_puppetdb import copy_puppetdb
    from pe_ha import commands

    own_history.script("master.example.com", commands.link_probe("replica.example.com").argv, stdout=arrivals,
                       override=True)
    planned = copy_puppetdb(method="documented", approve=True, dry_run=True)
    links = [line for line in planned["facts"] if line.startswith("link ")]
    assert links == ([fact] if fact else [])
    transfer = next(r for r in planned["forecast"]["steps"] if r["key"] == "transfer")
    assert basis in transfer["basis"]


@pytest.mark.usefixtures("prefect_harness")
def test_provisionings_plan_says_the_primary_serves_no_catalogs_for_pes_10_to_30_minutes(own_history):
    from flows.provision_replica import provision_replica

    planned = provision_replica(sync_timeout_s=30, dry_run=True)
    down = {r["key"] for r in planned["forecast"]["steps"] if r["unavailable"] == PRIMARY_CATALOGS}
    assert down == {"provision", "wait"}
    assert f"{PRIMARY_CATALOGS} unavailable for: 20 min (10 min to 30 min)" in planned["forecast"]["lines"]


def test_history_corrects_each_step_by_its_median_ratio_and_says_so():
    model = copy_forecast("documented", DOCUMENTED, size_bytes=10**9, cpus=1, link_mb_s=None)
    corrected = model.corrected({"restore": [2.0, 3.0, 1.0], "approval": [5.0]})
    restore = corrected.of("restore")
    assert restore is not None and restore.estimate.expected_s == pytest.approx(2 * model.of("restore").estimate.expected_s)
    assert restore.estimate.low_s < restore.estimate.expected_s < restore.estimate.high_s
    assert corrected.of("dump") == model.of("dump")  # no history: the model's own range
    assert corrected.of("approval") == model.of("approval")  # nothing expected, nothing to correct
    assert any("corrected by the median" in b for b in corrected.basis) and NO_HISTORY not in corrected.basis
    assert model.corrected({}) is model


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_records_its_timings_and_the_next_plan_learns_from_them(own_history):
    from flows._history import ratios
    from flows.copy_puppetdb import copy_puppetdb
    from pe_ha import context

    first = copy_puppetdb(method="documented", approve=True, dry_run=True)["forecast"]["lines"]
    assert any("past runs do not correct" in line for line in first)
    copy_puppetdb(method="documented", approve=True)
    learned = ratios(context.given(), "copy-puppetdb")
    assert {"dump", "restore", "verify"} <= set(learned) and "approval" not in learned
    # the fake executor answers at once: every step took far less than the model expects
    assert all(r < 0.5 for r in learned["restore"])
    second = copy_puppetdb(method="documented", approve=True, dry_run=True)["forecast"]
    assert any("corrected by the median" in line for line in second["lines"])
    restore = next(r for r in second["steps"] if r["key"] == "restore")
    assert "corrected by 1 past run(s)" in restore["basis"]
    # the second run records the model's figure (for the next correction) beside the one it was told
    copy_puppetdb(method="documented", approve=True)
    recorded = next(r for r in _latest_timings(context.given(), "copy-puppetdb") if r["step"] == "restore")
    assert recorded["forecast_s"] == pytest.approx(restore["expected_s"], abs=0.05)
    assert (recorded["forecast_low_s"], recorded["forecast_high_s"]) == pytest.approx(
        (restore["low_s"], restore["high_s"]), abs=0.05)
    assert recorded["expected_s"] > 2 * recorded["forecast_s"]  # the model's, uncorrected


def _latest_timings(ctx, procedure: str) -> list[dict]:
    from flows._history import past_runs

    return past_runs(ctx.settings.installation, procedure, limit=1)[0]


@pytest.mark.usefixtures("prefect_harness")
def test_a_long_steps_progress_counts_down_the_plans_forecast(own_history, monkeypatch):
    import tasks.puppetdb
    from flows.copy_puppetdb import copy_puppetdb

    given: dict[str, float] = {}
    watch_load = tasks.puppetdb.watch_load

    def spy(ctx, host, database, label, *, expected_bytes=0, expected_s=0):
        given[label] = expected_s
        return watch_load(ctx, host, database, label, expected_bytes=expected_bytes, expected_s=expected_s)

    monkeypatch.setattr(tasks.puppetdb, "watch_load", spy)
    planned = copy_puppetdb(method="documented", approve=True, dry_run=True)
    restore = next(r for r in planned["forecast"]["steps"] if r["key"] == "restore")
    copy_puppetdb(method="documented", approve=True)
    assert restore["expected_s"] > 0
    assert given["pg_restore on replica.example.com"] == pytest.approx(restore["expected_s"], abs=0.05)
    assert given["pg_dump on master.example.com"] == 0  # the dump's progress has no size to go by, and says no time
