"""Change windows: a run booked into a window must fit it with its forecast's high end, when it is scheduled and
again when it starts; a run that will outlive its window goes on and alerts once."""

from __future__ import annotations

import datetime as dt

import pytest

from deployments.cli import fits_window, parse_at, parse_duration
from pe_ha.forecast import ChangeWindow, Estimate
from tests.test_forecast import own_history  # noqa: F401
from tests.test_plans import env, latest_artifact  # noqa: F401

NOON = dt.datetime(2026, 12, 13, 12, 0, tzinfo=dt.UTC)
HOUR = ChangeWindow(NOON, 60)


@pytest.mark.parametrize(("total", "minutes_in", "fits"), [
    (Estimate(1200, 600, 1800), 0, True),  # 30 min high end in a fresh hour
    (Estimate(1200, 600, 3600), 0, True),  # exactly the hour
    (Estimate(1200, 600, 3601), 0, False),  # one second more than the hour
    (Estimate(1200, 600, 1800), 31, False),  # started late: 29 min left
    (Estimate(10, 5, 20), 61, False),  # the window is over
])
def test_a_window_must_hold_the_forecasts_high_end(total, minutes_in, fits):
    misfit = HOUR.misfit(total, NOON + dt.timedelta(minutes=minutes_in))
    assert (misfit is None) == fits
    if not fits:
        assert "does not fit the change window" in misfit and "ends 2026-12-13 13:00 UTC" in misfit
        assert "could take up to" in misfit


def test_an_overrun_is_the_new_expected_end_past_the_window():
    late = NOON + dt.timedelta(minutes=50)
    assert HOUR.overrun(Estimate(300, 100, 900), late) is None  # ends 12:55
    assert HOUR.overrun(Estimate(900, 100, 900), late) == NOON + dt.timedelta(minutes=65)


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("45s", 45),
                                               ("1.5h", 5400), ("1d", 86400)])
def test_durations_need_their_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90", "", "m", "2 weeks", "1h30", "-5m"])
def test_a_duration_without_a_unit_is_refused(text):
    with pytest.raises(SystemExit, match="is not a duration"):
        parse_duration(text)


def test_at_takes_a_time_with_or_without_an_offset_or_a_delay_and_refuses_the_past():
    assert parse_at("+10m", now=NOON) == NOON + dt.timedelta(minutes=10)
    assert parse_at("2026-12-13T14:00+01:00", now=NOON) == NOON + dt.timedelta(hours=1)
    local = dt.datetime(2026, 12, 13, 14, 0).astimezone()
    assert parse_at("2026-12-13T14:00", now=NOON) == local.astimezone(dt.UTC)
    with pytest.raises(SystemExit, match="is in the past"):
        parse_at("2026-12-13T11:00+00:00", now=NOON)
    with pytest.raises(SystemExit, match="is not a time"):
        parse_at("next sunday", now=NOON)


def test_scheduling_refuses_a_window_shorter_than_the_forecast_naming_both():
    rows = [{"expected_s": 600, "low_s": 300, "high_s": 1200}, {"expected_s": 600, "low_s": 300, "high_s": 1200}]
    assert fits_window("provision-replica", rows, 3600) == \
        "the forecast, 20 min (10 min to 40 min), fits the 1 h 00 min window"
    with pytest.raises(SystemExit) as refused:
        fits_window("provision-replica", rows, 1800)
    assert "the forecast of provision-replica, 20 min (10 min to 40 min), does not fit the 30 min window" in \
        str(refused.value.code)
    assert "Nothing was scheduled" in str(refused.value.code)


# -- in a run (fake executor) ---------------------------------------------------------------------------------


WRITES = ("pg_dump", "pg_restore", "scp", "systemctl", "dropdb", "createdb")


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_whose_forecast_no_longer_fits_starts_nothing(own_history):  # noqa: F811
    from flows.copy_puppetdb import copy_puppetdb

    fake = own_history
    state = copy_puppetdb(method="documented", approve=True, window_minutes=1, return_state=True)
    assert state.is_failed()
    assert "copy-puppetdb did not start, and nothing was changed: the forecast," in state.message
    assert "does not fit the change window" in state.message and "of its 1 min are left" in state.message
    sent = [c for host in ("master.example.com", "replica.example.com") for c in fake.commands_on(host)]
    assert sent and not [c for c in sent if any(w in " ".join(c) for w in WRITES)], sent


@pytest.mark.usefixtures("prefect_harness")
def test_the_plan_says_whether_the_window_holds_the_forecast(own_history):  # noqa: F811
    from flows.copy_puppetdb import copy_puppetdb

    short = copy_puppetdb(method="documented", dry_run=True, window_minutes=1)["forecast"]["lines"]
    assert short[1].startswith("change window until ") and "does NOT fit" in short[1]
    long = copy_puppetdb(method="documented", dry_run=True, window_minutes=600)["forecast"]["lines"]
    assert long[1].endswith("the forecast's high end fits")
    assert "change window until" in latest_artifact("copy-puppetdb-plan")


@pytest.mark.parametrize("minutes", [0, -5, 7 * 24 * 60 + 1])
@pytest.mark.usefixtures("prefect_harness")
def test_a_window_out_of_range_is_bad_input_refused_before_any_read(own_history, minutes):  # noqa: F811
    from flows.copy_puppetdb import copy_puppetdb

    state = copy_puppetdb(window_minutes=minutes, return_state=True)
    assert state.is_failed() and f"window_minutes={minutes:g}: must be more than 0" in state.message
    assert own_history.commands_on("master.example.com") == []


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_that_will_outlive_its_window_goes_on_and_alerts_once(own_history, monkeypatch):  # noqa: F811
    import time

    from prefect import flow

    from flows._steps import Outcome, Procedure, Step
    from pe_ha import context
    from pe_ha.forecast import Forecast, StepForecast

    events: list[dict] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda **kw: events.append(kw))
    forecast = Forecast(tuple(StepForecast(k, Estimate(1, 0.5, 1.5)) for k in ("a", "b", "c")), ("test",))

    @flow
    def booked() -> list[str]:
        ran: list[str] = []
        # 5 s booked: the three steps' high end (4.5 s) fits at the start; the first step then takes 4 s
        steps = [Step("a", "slow first step", "worker", lambda: (time.sleep(4), ran.append("a"))),
                 Step("b", "second step", "worker", lambda: ran.append("b")),
                 Step("c", "third step", "worker", lambda: ran.append("c"))]
        procedure = Procedure(context.given(), "booked", "test", steps, forecast=forecast,
                              window=ChangeWindow(dt.datetime.now(dt.UTC), 5 / 60))
        procedure.run(lambda _: Outcome("done"))
        return ran

    assert booked() == ["a", "b", "c"]  # the run went on
    assert len(events) == 1, events
    payload = events[0]["payload"]
    assert events[0]["event"] == "pe-ha.window.overrun" and payload["step"] == "slow first step"
    assert "booked will outlive its change window: after 'slow first step'" in payload["message"]
