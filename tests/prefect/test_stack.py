"""pe-ha operated through a real Prefect server, deployments from prefect.yaml and a process worker.

Everything is started through the REST API, as an operator or a scheduler would.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from lab import core
from lab.config import LAB_DIR

pytestmark = [pytest.mark.prefect, pytest.mark.lab]
M, R = "master.lab.test", "replica.lab.test"


def state_of(run: dict) -> str:
    return run["state"]["type"]


def test_setup_is_idempotent_and_keeps_the_health_interval(stack):
    out = stack.run("pe-ha", "setup", "--webhook-url", stack.hook.url)
    ours = [line for line in out.splitlines() if line.startswith(("work pool ", "lock ", "automation ", "verify-health/"))]
    assert len(ours) == 8 and not [line for line in ours if line.endswith("created")], out
    assert "automation 'pe-ha: mark a run Crashed when its heartbeats stop': exists" in ours
    assert "automation 'pe-ha: a run will outlive its change window': exists" in ours
    assert "lock pe-ha:lab: exists" in ours and "work pool pe-ha: exists" in ours
    assert "verify-health/lab every 30 s: unchanged" in out  # `prefect deploy` kept the schedule
    dep = stack._request("GET", "/deployments/name/verify-health/lab").json()
    assert [s["schedule"]["interval"] for s in dep["schedules"]] == [30.0]
    assert dep["work_queue_name"] == "lab"


def test_parameter_schema_offers_choices(stack):
    dep = httpx.get(f"{stack.api}/deployments/name/enable-replica/lab").json()
    props = dep["parameter_openapi_schema"]["properties"]
    assert props["topology"]["enum"] == ["mono", "mono-with-compile"] or "mono-with-compile" in str(props["topology"])
    assert dep["enforce_parameter_schema"] is True
    bad = httpx.post(f"{stack.api}/deployments/{dep['id']}/create_flow_run", json={"parameters": {"topology": "split"}})
    assert bad.status_code == 409


def test_an_unknown_parameter_is_refused_when_the_run_is_created(stack):
    dep = stack.deployment_id("provision-replica", "lab")
    r = stack._request("POST", f"/deployments/{dep}/create_flow_run",
                       json={"parameters": {"replica": "replica.lab.test", "evil": "x"}})
    assert r.status_code == 409, r.text
    assert "evil" in r.text


def test_schedule_creates_verify_health_runs(stack):
    dep = stack.deployment_id("verify-health", "lab")
    deadline = time.monotonic() + 60
    runs = []
    while time.monotonic() < deadline and not runs:
        runs = httpx.post(f"{stack.api}/flow_runs/filter",
                          json={"deployments": {"id": {"any_": [dep]}}, "limit": 5}).json()
        time.sleep(1)
    assert runs, "the verify-health schedule produced no run"
    assert all(r["auto_scheduled"] for r in runs)


def test_failed_health_check_alerts_through_the_webhook(stack, fresh_lab):
    # Before provisioning, the replica serves nothing: verify-health must fail, and the automation must notify.
    run = stack.wait(stack.create_run("verify-health", "lab", {"installation": "lab"})["id"], 120)
    assert state_of(run) == "FAILED"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stack.hook.received:
        time.sleep(0.5)
    assert stack.hook.received, "no alert reached the webhook"
    assert any("verify-health" in str(m) or "degraded" in str(m) for m in stack.hook.received)


def test_approval_pause_reject_and_invalid_input(stack, fresh_lab):
    fr = stack.create_run("copy-puppetdb", "lab", {})
    run = stack.wait(fr["id"], 180, until={"PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
    assert state_of(run) == "PAUSED"
    invalid = stack.resume(fr["id"], {"approve": True})  # operator missing
    assert invalid["http"] == 200 and invalid["status"] == "REJECT"
    assert state_of(stack.flow_run(fr["id"])) == "PAUSED"
    rejected = stack.resume(fr["id"], {"approve": False, "operator": "tester", "comment": "not today"})
    assert rejected["status"] == "ACCEPT"
    final = stack.wait(fr["id"], 120)
    assert state_of(final) == "CANCELLED"
    # nothing was restored or stopped on the replica, and no dump is left behind
    out = core.node_run(fresh_lab.master, "bash", "-c", "ls /var/tmp/pe-ha 2>/dev/null | wc -l").stdout.strip()
    assert out == "0"


def test_approval_resumes_through_the_api(stack, fresh_lab):
    fr = stack.create_run("copy-puppetdb", "lab", {})
    stack.wait(fr["id"], 180, until={"PAUSED"})
    answer = stack.resume(fr["id"], {"approve": True, "operator": "tester"})
    assert answer["http"] == 201 and answer["status"] == "ACCEPT"
    assert state_of(stack.wait(fr["id"], 300)) == "COMPLETED", stack.explain(fr["id"])


def test_second_procedure_is_refused_while_one_holds_the_lock(stack, fresh_lab):
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_command", '"provision"')
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_seconds", "15")
    try:
        first = stack.create_run("provision-replica", "lab", {"sync_timeout_s": 120})
        stack.wait(first["id"], 120, until={"RUNNING"})
        time.sleep(3)  # let it take the lock and reach the slow provision command
        second = stack.create_run("forget-replica", "lab", {"approve": True})
        final = stack.wait(second["id"], 120)
        assert state_of(final) == "FAILED"
        assert "holds the pe-ha:lab lock" in final["state"]["message"]
        assert "provision-replica" in final["state"]["message"]
        # verify-health is read-only and is not blocked
        health = stack.wait(stack.create_run("verify-health", "lab", {"installation": "lab",
                                                                                "fail_on_degraded": False})["id"], 120)
        assert state_of(health) == "COMPLETED", stack.explain(health["id"])
        assert state_of(stack.wait(first["id"], 300)) == "COMPLETED", stack.explain(first["id"])
    finally:
        core.node_run(fresh_lab.master, "pe-sim", "fault", "clear")


def test_no_secret_reaches_the_prefect_database_logs_or_artifacts(stack):
    secrets = [(LAB_DIR / "secrets" / name).read_text().strip() for name in ("token", "pg_service", "pg_superuser",
                                                                            "admin_password")]
    key_lines = (LAB_DIR / "ssh" / "id_ed25519").read_text().splitlines()[1:-1]
    needles = [s.encode() for s in secrets + key_lines if len(s) >= 8]
    files = [p for p in Path(stack.home).rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    hits = [str(p) for p in files for n in needles if n in p.read_bytes()]
    assert hits == []
    logs = httpx.post(f"{stack.api}/logs/filter", json={"limit": 200}).json()
    assert logs and not any(s in log["message"] for log in logs for s in secrets)
