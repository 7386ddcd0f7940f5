"""Scale: a Prefect server on PostgreSQL, two workers in one pool, verify-health every 10 s beside full lifecycles.

Full HA lifecycles run back to back through the API while the schedule fires verify-health every 10 s: one in
``make test`` (``PEHA_SOAK_LIFECYCLES``), and for at least ``PEHA_SOAK_S`` seconds with ``make soak SOAK_S=…``. A
scheduled run may fail for the installation's own reasons (the lifecycle cuts the master off on purpose); it
must never fail because of the scheduling itself: crashed runs, runs that never started, or server errors such as
SQLite's "database is locked".
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lab import core
from lab.demo import lifecycle
from lab.pgserver import LocalPostgres
from lab.stack import PrefectStack, WebhookReceiver, free_port
from tests.lab.conftest import lab_up

pytestmark = [pytest.mark.lab, pytest.mark.prefect]
SOAK_S = float(os.environ.get("PEHA_SOAK_S", "0"))
SOAK_LIFECYCLES = int(os.environ.get("PEHA_SOAK_LIFECYCLES", "1"))
HEALTH_INTERVAL_S = 10
# verify-health's own verdict on a degraded installation, or on one being re-created between lifecycles (its files
# named by their settings): not a scheduling failure
HEALTH_VERDICT = re.compile(r"PE services are not healthy|could not reach|unreachable|setting PEHA_\w+: .* cannot be read",
                            re.I)


@pytest.fixture(scope="module")
def pg_stack(lab, tmp_path_factory):
    pg = LocalPostgres(data_dir=Path("/var/tmp/pe-ha-prefect-pg") / str(free_port()), port=free_port())
    hook = WebhookReceiver(port=free_port()).start()
    env = core.lab_env()
    env.update({"PEHA_HEALTH_INTERVAL_S": str(HEALTH_INTERVAL_S), "PEHA_LOCK_WAIT_S": "600"})
    st = PrefectStack(home=tmp_path_factory.mktemp("prefect-pg"), port=free_port(), extra_env=env)
    try:
        st.database_url = pg.start().url
        st.start_server()
        st.setup_and_deploy("lab", hook.url)
        st.start_worker("worker-a")
        st.start_worker("worker-b")
        yield st
    finally:
        st.stop()
        hook.stop()
        pg.stop()


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_postgres_server_two_workers_schedule_beside_lifecycles(pg_stack, fresh_lab, outcome):
    with outcome("load", f"verify-health every {HEALTH_INTERVAL_S} s beside at least {SOAK_LIFECYCLES} full "
                 f"lifecycle(s) and {SOAK_S:.0f} s; PostgreSQL server, two workers",
                 "every lifecycle run Completed; every scheduled run ran; none failed because of the schedule") as o:
        started = time.monotonic()
        lifecycles: list[list[dict]] = []
        while len(lifecycles) < SOAK_LIFECYCLES or time.monotonic() - started < SOAK_S:
            if lifecycles:  # a fresh installation for the next lifecycle, as the fresh_lab fixture makes it
                lab_up(fresh_lab)
            lifecycles.append(lifecycle(pg_stack, fresh_lab, verbose=False))
        soak_s = time.monotonic() - started
        time.sleep(HEALTH_INTERVAL_S + 5)  # let the last scheduled runs finish

        procedure_rows = [row for rows in lifecycles for row in rows]
        not_completed = [(r["run"], r["state"], r["message"][:300]) for r in procedure_rows if r["state"] != "Completed"]
        assert procedure_rows and not_completed == [], not_completed

        scheduled = [r for r in pg_stack.runs_of("verify-health", "lab", limit=1000) if r["auto_scheduled"]]
        now = datetime.now(UTC)  # the scheduler also holds future runs: only those due by now count
        due = [r for r in scheduled if (now - _parse(r["expected_start_time"])).total_seconds() > 60]
        never_ran = [r["name"] for r in due if r["state"]["type"] in ("SCHEDULED", "PENDING")]
        crashed = [r["name"] for r in due if r["state"]["type"] == "CRASHED"]
        failed = [r for r in due if r["state"]["type"] == "FAILED"]
        schedule_failures = [r["state"]["message"] for r in failed if not HEALTH_VERDICT.search(r["state"]["message"] or "")]
        # the scheduler's runs due by now: those of the soak's last minute are not due yet
        assert len(due) >= (soak_s - 60) / HEALTH_INTERVAL_S * 0.8, f"only {len(due)} scheduled runs in {soak_s:.0f} s"
        assert never_ran == [] and crashed == [] and schedule_failures == [], (never_ran, crashed, schedule_failures)

        # Both workers took runs: the procedures and the checks land on either one, and all finish.
        ran_by = {name: (pg_stack.home / f"{name}.log").read_text() for name in ("worker-a", "worker-b")}
        all_ids = [r["id"] for r in procedure_rows] + [r["id"] for r in due]
        per_worker = {name: sum(run_id in log for run_id in all_ids) for name, log in ran_by.items()}
        assert all(count > 0 for count in per_worker.values()), per_worker
        o.observed = (f"{len(lifecycles)} lifecycles ({len(procedure_rows)} procedure runs) all Completed in {soak_s:.0f} s; "
                      f"{len(due)} scheduled verify-health runs: {len(due) - len(failed)} Completed, {len(failed)} Failed "
                      "on the installation's real state (replica not yet provisioned, or master cut off on purpose), "
                      "0 crashed, 0 never started; "
                      f"runs per worker {per_worker}")
