"""The `pe-ha` command line against the lab, through a real Prefect server and worker."""

from __future__ import annotations

import subprocess

import pytest

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
