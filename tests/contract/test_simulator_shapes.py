"""The simulator answers with the same keys and value types as PE's documented samples. Where they disagree,
the simulator changes (docs/simulator.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab]
SAMPLES = Path(__file__).parent / "samples"


def same_shape(sample, actual, path="$") -> list[str]:
    problems = []
    if isinstance(sample, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        for key in sample.keys() - actual.keys():
            problems.append(f"{path}.{key}: missing")
        for key in actual.keys() - sample.keys():
            problems.append(f"{path}.{key}: not in PE's sample")
        for key in sample.keys() & actual.keys():
            problems += same_shape(sample[key], actual[key], f"{path}.{key}")
    elif sample is None or actual is None:
        return []
    elif type(sample) is not type(actual) and not (isinstance(sample, int | float) and isinstance(actual, int | float)):
        problems.append(f"{path}: {type(sample).__name__} in PE's sample, {type(actual).__name__} from the simulator")
    return problems


def test_token_authenticate_matches_pes_body(lab, lab_ctx):
    sample = json.loads((SAMPLES / "rbac-authenticate-200.json").read_text())
    actual = lab_ctx.api.authenticate(lab_ctx.settings.rbac_token())
    assert same_shape(sample, actual) == []


def test_status_service_entries_match_pes_body(lab, lab_ctx):
    sample = json.loads((SAMPLES / "status-services-4433-200.json").read_text())
    response = lab_ctx.api.request("GET", lab_ctx.settings.master.name, 4433, "/status/v1/services?level=info")
    actual = response.json()
    assert set(sample) - {"status-service"} <= set(actual)
    for name in set(sample) & set(actual) - {"status-service"}:
        problems = [p for p in same_shape(sample[name], actual[name])
                    if not p.startswith("$.status.")]  # each service's status detail is its own
        assert problems == [], name


def test_infrastructure_status_matches_pes_capture(lab, lab_ctx):
    from tasks.infrastructure import read_status

    sample = json.loads((SAMPLES / "infra-status-json-replica-unreachable.json").read_text())
    master = lab_ctx.settings.master.name
    actual = [e for e in read_status(lab_ctx, master) if e["server"] == master]
    assert {k for e in actual for k in e} == {k for e in sample for k in e}
    # Row by row as PE's capture has them: the service, its display name, its URL and its kind (never the role)
    def rows(entries, server):
        return [(e["service"], e["display_name"], e["url"].replace(server, "HOST"), e["type"]) for e in entries
                if e["server"] == server]

    assert rows(actual, master) == rows(sample, "pe-primary.example.com")


def test_an_orchestrator_job_matches_pes_bodies_and_fails_naming_the_node(lab, lab_ctx):
    """The simulated orchestrator's job and job-nodes bodies have PE's keys; pe-ha follows a job to its end, and a
    node whose run fails fails the deploy, named."""
    from lab import core
    from pe_ha.errors import PostconditionFailed
    from tasks import orchestrator

    master, token = lab_ctx.settings.master.name, lab_ctx.settings.rbac_token()
    counts = orchestrator.run_puppet_everywhere.fn(lab_ctx, master, timeout_s=300)
    assert counts == {"finished": len(lab.hosts)}
    job = lab_ctx.api.deploy(token, master, "nodes {deactivated is null and expired is null}")
    body = lab_ctx.api.request("GET", master, 8143, f"/orchestrator/v1/jobs/{job}", token=token).json()
    sample = json.loads((SAMPLES / "orchestrator-job-200.json").read_text())
    assert [p for p in same_shape(sample, body) if not p.startswith(("$.options.scope", "$.userdata"))] == []
    while lab_ctx.api.job_state(token, master, job) not in ("finished", "failed", "stopped"):
        time.sleep(1)
    done = lab_ctx.api.request("GET", master, 8143, f"/orchestrator/v1/jobs/{job}", token=token).json()
    assert [e["state"] for e in done["status"]] == [e["state"] for e in sample["status"]]  # new, ready, running, finished
    assert done["status"][-1]["exit_time"] is None and isinstance(done["duration"], str)
    nodes = lab_ctx.api.request("GET", master, 8143, f"/orchestrator/v1/jobs/{job}/nodes", token=token).json()
    sample_nodes = json.loads((SAMPLES / "orchestrator-job-nodes-200.json").read_text())
    assert same_shape({k: v for k, v in sample_nodes.items() if k != "items"},
                      {k: v for k, v in nodes.items() if k != "items"}) == []
    assert {tuple(sorted(item)) for item in nodes["items"]} == {tuple(sorted(sample_nodes["items"][0]))}
    assert lab_ctx.api.request("GET", master, 8143, "/orchestrator/v1/jobs/987654", token=token,
                               ok=(404,)).json()["kind"] == "puppetlabs.orchestrator/unknown-job"

    agent = lab.host("agent1")
    core.node_run(agent, "pe-sim", "fault", "agent_fail")
    try:
        with pytest.raises(PostconditionFailed, match=f"ended failed: {agent.fqdn} failed"):
            orchestrator.run_puppet_everywhere.fn(lab_ctx, master, timeout_s=300)
    finally:
        core.node_run(agent, "pe-sim", "fault", "clear")
