"""The `pe-ha` command line against the lab, through a real Prefect server and worker; the two-person approval
policy end to end, with the lab's (simulated) RBAC and `pe-ha run|approve --token-file` as operators type them;
runs booked into a change window with `--at` and `--window`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import pytest

from lab import core, tokens
from lab.stack import ROOT, VENV_BIN

pytestmark = [pytest.mark.prefect, pytest.mark.lab]


def pe_ha(stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "pe-ha"), *args], env=stack.env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_run_watch_plan_approve_and_status(stack):
    provision = pe_ha(stack, "run", "provision-replica", "--param", "sync_timeout_s=120", "--watch")
    assert provision.returncode == 0, provision.stdout + provision.stderr
    assert "provision-replica/replica.lab.test: Completed" in provision.stdout

    health = pe_ha(stack, "run", "verify-health", "--watch")
    assert health.returncode == 0, health.stdout + health.stderr
    assert "all" in health.stdout and "PE services are running" in health.stdout  # the run's own log lines

    planned = pe_ha(stack, "plan", "promote-replica", "--param", "deploy=job")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "puppet infrastructure promote replica" in planned.stdout and "Nothing was run" in planned.stdout

    started = pe_ha(stack, "run", "reinitialize-replica", "--param", 'databases=["pe-rbac"]')
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split("flow run ")[1].split(")")[0]
    stack.wait(run_id, 300, until={"PAUSED"})
    invalid = pe_ha(stack, "approve", run_id, "--operator", "alice", "--comment", "x" * 600)
    assert invalid.returncode == 1 and "REJECT" in invalid.stdout  # Prefect's 200 with REJECT, said plainly
    assert stack.flow_run(run_id)["state"]["type"] == "PAUSED"
    rejected = pe_ha(stack, "approve", run_id, "--operator", "alice", "--reject", "--comment", "not tonight")
    assert rejected.returncode == 0 and "rejected by alice" in rejected.stdout
    assert stack.wait(run_id, 120)["state"]["type"] == "CANCELLED"

    status = pe_ha(stack, "status")
    assert status.returncode == 0 and "last health check: Completed" in status.stdout


def test_refusals_name_their_reason(stack):
    unknown = pe_ha(stack, "run", "promote-the-replica")
    assert unknown.returncode == 2 and "unknown procedure 'promote-the-replica'" in unknown.stderr
    typo = pe_ha(stack, "run", "verify-health", "--param", "fail_on_degraed=false")
    assert typo.returncode == 2 and "fail_on_degraed" in typo.stderr  # refused at creation, naming it
    helped = pe_ha(stack, "run", "--help")
    assert helped.returncode == 0 and "sync_timeout_s (default 1800)" in helped.stdout

@pytest.fixture()
def two_person_worker(stack):
    """The same server and deployments, served by a worker whose installation requires two people."""
    with stack.worker_with("worker-two-person", {"PEHA_APPROVAL_POLICY": "two-person"}):
        yield stack


def logs_of(stack, run_id: str) -> list[str]:
    """All of the run's log lines, oldest first (the API serves 200 a page)."""
    lines: list[str] = []
    while True:
        page = stack._request("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                            "sort": "TIMESTAMP_ASC", "limit": 200,
                                                            "offset": len(lines)}).json()
        lines += [entry["message"] for entry in page]
        if len(page) < 200:
            return lines


def wait_for_log(stack, run_id: str, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in logs_of(stack, run_id)):
        assert time.monotonic() < deadline, f"no log line with {text!r}:\n{stack.explain(run_id)}"
        time.sleep(0.5)


def test_two_person_policy_from_the_command_line(two_person_worker, fresh_lab, tmp_path):
    stack, lab = two_person_worker, fresh_lab
    alice, bob = tmp_path / "alice.token", tmp_path / "bob.token"
    alice_token = tokens.issue_user_token(lab, "alice")
    bob_token = tokens.issue_user_token(lab, "bob")
    alice.write_text(alice_token + "\n")
    bob.write_text(bob_token + "\n")

    up_front = pe_ha(stack, "run", "forget-replica", "--param", "approve=true", "--watch")
    assert up_front.returncode == 1 and "approve=true is an approval without an identity" in up_front.stdout

    provision = pe_ha(stack, "run", "provision-replica", "--param", "sync_timeout_s=120", "--watch")
    assert provision.returncode == 0, provision.stdout[-2000:] + provision.stderr  # reinitialize needs a replica
    started = pe_ha(stack, "run", "reinitialize-replica", "--param", 'databases=["pe-rbac"]',
                    "--token-file", str(alice))
    assert started.returncode == 0 and "by PE user alice" in started.stdout, started.stdout + started.stderr
    run_id = started.stdout.split("flow run ")[1].split(")")[0]
    stack.wait(run_id, 300, until={"PAUSED"})

    typed = pe_ha(stack, "approve", run_id, "--operator", "bob")
    assert typed.returncode == 1 and "REFUSED" in typed.stdout and "has no PE identity" in typed.stdout
    own = pe_ha(stack, "approve", run_id, "--token-file", str(alice))
    assert own.returncode == 1 and "PE user alice started this run" in own.stdout

    # The UI's form (free text, through the API) gets past the command line's check, not past the run's.
    form = stack.resume(run_id, {"approve": True, "operator": "bob"})
    assert form["status"] == "ACCEPT", form
    wait_for_log(stack, run_id, "refused, still waiting")
    stack.wait(run_id, 60, until={"PAUSED"})

    approved = pe_ha(stack, "approve", run_id, "--token-file", str(bob), "--comment", "change 42")
    assert approved.returncode == 0 and "approved by PE user bob" in approved.stdout, approved.stdout
    assert stack.wait(run_id, 300)["state"]["type"] == "COMPLETED", stack.explain(run_id)

    lines = logs_of(stack, run_id)
    assert any("approved by PE user bob" in line for line in lines)
    summary = stack._request("POST", "/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["reinitialize-replica-summary"]}}}).json()
    text = summary[0]["data"]
    assert "approved by PE user bob under the approval policy 'two-person'" in text
    assert "started by PE user alice" in text
    # The tokens reached neither the log, the parameters, the inputs in clear, nor an artifact.
    run = stack.flow_run(run_id)
    inputs = stack._request("POST", f"/flow_runs/{run_id}/input/filter", json={"prefix": "", "limit": 100}).json()
    stored = json.dumps([lines, run["parameters"], inputs, summary])
    assert alice_token not in stored and bob_token not in stored
    assert any("sealed_token" in i["value"] for i in inputs)  # what is stored is the sealed form


# -- change windows: `pe-ha run --at TIME --window DURATION` (this module's stack serves them too) ---------------
#
# Scheduled and started on time, refused when scheduled into a window that is too short, and held at the start
# when the facts changed meanwhile (the master's PuppetDB grew), with one alert.

COPY = ("copy-puppetdb", "--param", "method=documented", "--param", "approve=true")


def run_id_of(out: str) -> str:
    return out.split("flow run ")[-1].split(")")[0]


def forecast_high_s(stack) -> float:
    """The high end of the latest copy-puppetdb plan's forecast, as the command line sums it."""
    found = stack._request("POST", "/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["copy-puppetdb-forecast"]}}, "sort": "CREATED_DESC", "limit": 1}).json()
    rows = json.loads(found[0]["data"]) if isinstance(found[0]["data"], str) else found[0]["data"]
    return sum(float(r["high_s"]) for r in rows)


def forget_history(stack) -> None:
    """This installation's past copies (another test's) would correct the forecast: the model's own figures here."""
    found = stack._request("POST", "/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["copy-puppetdb-timings-lab"]}}, "limit": 200}).json()
    for artifact in found:
        stack._request("DELETE", f"/artifacts/{artifact['id']}")


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
    assert "fits the 2 h 00 min window" in booked.stdout and "\nscheduled " in booked.stdout
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
    forget_history(stack)
    planned = pe_ha(stack, "plan", *COPY)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    # 45 s more than the forecast's high end: it fits now; about 1.2 GB more PuppetDB adds about 95 s to it
    window_s = int(forecast_high_s(stack)) + 45
    lead_s = 60  # the growth below must be over before the run is due
    booked = pe_ha(stack, "run", *COPY, "--at", f"+{lead_s}s", "--window", f"{window_s}s")
    assert booked.returncode == 0 and "fits the" in booked.stdout, booked.stdout + booked.stderr
    run_id = run_id_of(booked.stdout)
    started = time.monotonic()
    # 1.2 million rows of about 1 KB (stored as they are: below TOAST's threshold, nothing is compressed)
    core.node_run(fresh_lab.master, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d",
                  "pe-puppetdb", "-c", "CREATE SCHEMA growth; CREATE TABLE growth.filler AS SELECT g, "
                  "repeat(md5(g::text), 30) AS pad FROM generate_series(1, 1200000) g", as_postgres=True)
    assert time.monotonic() - started < lead_s - 10, "the database grew after the run was due: the test proves nothing"
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
