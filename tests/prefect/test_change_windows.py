"""Runs booked into a change window with `pe-ha run --at TIME --window DURATION`, through a real Prefect server and
worker against the lab: scheduled and started on time, refused when scheduled into a window that is too short, and
held at the start when the facts changed meanwhile (the master's PuppetDB grew), with one alert."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from lab import core
from tests.prefect.test_cli import pe_ha

pytestmark = [pytest.mark.prefect, pytest.mark.lab]
COPY = ("copy-puppetdb", "--param", "method=documented", "--param", "approve=true")


def run_id_of(out: str) -> str:
    return out.split("flow run ")[-1].split(")")[0]


def forecast_high_s(stack) -> float:
    """The high end of the latest copy-puppetdb plan's forecast, as the command line sums it."""
    found = stack._request("POST", "/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["copy-puppetdb-forecast"]}}, "sort": "CREATED_DESC", "limit": 1}).json()
    rows = json.loads(found[0]["data"]) if isinstance(found[0]["data"], str) else found[0]["data"]
    return sum(float(r["high_s"]) for r in rows)


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_a_run_scheduled_a_minute_ahead_starts_then_and_a_short_window_is_refused(stack, fresh_lab):
    short = pe_ha(stack, "run", *COPY, "--at", "+1m", "--window", "2m")
    assert short.returncode == 2, short.stdout + short.stderr
    assert "refused: the forecast of copy-puppetdb," in short.stderr and "does not fit the 2 min window" in short.stderr
    assert "Nothing was scheduled" in short.stderr and "scheduled copy-puppetdb" not in short.stdout

    asked = dt.datetime.now(dt.UTC)
    booked = pe_ha(stack, "run", *COPY, "--at", "+1m", "--window", "2h")
    assert booked.returncode == 0, booked.stdout + booked.stderr
    assert "fits the 2 h 00 min window" in booked.stdout and "scheduled copy-puppetdb/" in booked.stdout
    run_id = run_id_of(booked.stdout)
    run = stack.flow_run(run_id)
    assert run["state"]["type"] == "SCHEDULED" and run["parameters"]["window_minutes"] == 120
    at = parse(run["expected_start_time"])
    assert dt.timedelta(seconds=50) < at - asked < dt.timedelta(seconds=70)
    final = stack.wait(run_id, 600)
    assert final["state"]["type"] == "COMPLETED", stack.explain(run_id)
    # the worker takes a run up to PREFECT_WORKER_PREFETCH_SECONDS (5 in the lab) before it is due
    assert parse(final["start_time"]) >= at - dt.timedelta(seconds=6)


def test_a_run_is_held_at_its_start_when_the_forecast_no_longer_fits(stack, fresh_lab):
    planned = pe_ha(stack, "plan", *COPY)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    # 45 s more than the forecast's high end: it fits now; about 1.2 GB more PuppetDB adds about 95 s to it
    window_s = int(forecast_high_s(stack)) + 45
    booked = pe_ha(stack, "run", *COPY, "--at", "+90s", "--window", f"{window_s}s")
    assert booked.returncode == 0 and "fits the" in booked.stdout, booked.stdout + booked.stderr
    run_id = run_id_of(booked.stdout)
    started = time.monotonic()
    core.node_run(fresh_lab.master, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d",
                  "pe-puppetdb", "-c", "CREATE SCHEMA growth; CREATE TABLE growth.filler AS SELECT g, md5(g::text) "
                  "|| md5((g + 1)::text) AS pad FROM generate_series(1, 12000000) g", as_postgres=True)
    assert time.monotonic() - started < 80, "the database grew after the run was due: the test proves nothing"
    assert stack.flow_run(run_id)["state"]["type"] == "SCHEDULED"

    final = stack.wait(run_id, 300)
    assert final["state"]["type"] == "FAILED", stack.explain(run_id)
    message = final["state"]["message"]
    assert "copy-puppetdb did not start, and nothing was changed: the forecast," in message
    assert "does not fit the change window" in message
    deadline = time.monotonic() + 60
    while not [a for a in stack.hook.received if "did not start" in json.dumps(a)] and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(5)  # a second alert for the same run would arrive by now
    alerts = [a for a in stack.hook.received if "did not start" in json.dumps(a)]
    assert len(alerts) == 1, alerts
