"""Set-up's alert definitions: a degraded health check alerts once, a failed procedure once."""

from __future__ import annotations

from pathlib import Path

import yaml

from deployments.setup import CRASHED_AFTER_S, HEARTBEAT_S, crash_automation, main, wanted_automations

ROOT = Path(__file__).resolve().parent.parent


def _tags() -> dict[str, set[str]]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["entrypoint"].rpartition(":")[2].replace("_", "-"): set(d.get("tags") or []) for d in doc["deployments"]}


def test_a_degraded_health_check_matches_one_automation_only():
    automations = {a.name: a for a in wanted_automations("00000000-0000-0000-0000-000000000000")}
    failed_run = automations["pe-ha: a run failed or crashed"].trigger
    health_crash = automations["pe-ha: the health check crashed"].trigger
    degraded = automations["pe-ha: PE health degraded"].trigger
    tags = _tags()
    # the failed-run alert matches procedures only; verify-health's Failed run comes with its degraded event
    procedure_tag = failed_run.match_related.root["prefect.resource.id"].removeprefix("prefect.tag.")  # type: ignore[union-attr]
    assert procedure_tag not in tags["verify-health"]
    assert all(procedure_tag in t for name, t in tags.items() if name != "verify-health")
    assert health_crash.expect == {"prefect.flow-run.Crashed"}  # a crash emits no event: alerted by the run
    assert degraded.expect == {"pe-ha.health.degraded"}
    overrun = automations["pe-ha: a run will outlive its change window"]
    assert overrun.trigger.expect == {"pe-ha.window.overrun"}  # emitted once per run by flows/_steps.py
    assert "{{ event.payload.message }}" in overrun.actions[0].body  # type: ignore[union-attr]


def test_setup_refuses_without_a_webhook(capsys, monkeypatch):
    monkeypatch.delenv("PEHA_ALERT_WEBHOOK_URL", raising=False)
    assert main(["--installation", "x"]) == 2
    assert "no alert webhook" in capsys.readouterr().out


def test_every_deployment_is_named_after_the_installation_on_its_own_queue():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert len(doc["deployments"]) == 9
    for d in doc["deployments"]:
        assert d["name"] == "{{ $PEHA_INSTALLATION }}", d["entrypoint"]
        assert d["work_pool"]["name"] == "pe-ha", d["entrypoint"]
        assert d["work_pool"]["work_queue_name"] == "{{ $PEHA_INSTALLATION }}", d["entrypoint"]
        assert d["enforce_parameter_schema"] is True
    health = next(d for d in doc["deployments"] if d["entrypoint"].endswith(":verify_health"))
    assert health["schedules"] is None  # `prefect deploy` keeps the schedule that set-up made from the settings


def test_every_run_sends_heartbeats_and_one_that_stops_is_marked_crashed():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for d in doc["deployments"]:
        assert d["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S)
    trigger = crash_automation().trigger
    assert trigger.after == {"prefect.flow-run.heartbeat"} and "prefect.flow-run.heartbeat" in trigger.expect
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled"} <= trigger.expect
    tag = trigger.match_related.root["prefect.resource.id"].removeprefix("prefect.tag.")  # type: ignore[union-attr]
    assert all(tag in t for t in _tags().values())  # every pe-ha deployment, the health check too
    assert trigger.within.total_seconds() == CRASHED_AFTER_S >= 2 * HEARTBEAT_S  # one late heartbeat is no crash
    assert crash_automation().actions[0].state.value == "CRASHED"


def test_an_automations_sets_are_compared_sorted_and_its_actions_in_order():
    """The trigger's sets dump as lists in set order, which two equal sets need not share (a second `pe-ha setup`
    once reported the unchanged crash automation as `updated`)."""
    from deployments.setup import _sets_sorted

    assert _sets_sorted({"trigger": {"expect": ["b", "a"], "after": []}, "actions": [{"x": 2}, {"x": 1}]}) == \
        {"trigger": {"expect": ["a", "b"], "after": []}, "actions": [{"x": 2}, {"x": 1}]}
