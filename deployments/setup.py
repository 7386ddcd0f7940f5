"""Idempotent Prefect set-up for pe-ha: the process work pool, the per-installation lock, the alert
webhook block and the automations. Running it twice changes nothing; an automation whose definition
changed is updated.

    python -m deployments.setup            # reads pe-ha's settings (PEHA_* variables or .env), as the flows do
    python -m deployments.setup --no-alerts   # without a webhook: no alert automations, said plainly
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

WORK_POOL = "pe-ha"
WEBHOOK_BLOCK = "pe-ha-alerts"


def ensure_work_pool(name: str = WORK_POOL) -> str:
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return "exists"
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process", description="pe-ha HA procedures"))
            return "created"


def ensure_lock(installation: str) -> str:
    """The global concurrency limit ``pe-ha:<installation>`` with limit 1 (flows take it with strict=True)."""
    name = f"pe-ha:{installation}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return "exists"
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            return "created"


def ensure_webhook_block(url: str) -> str:
    """A custom webhook notification block; the demo points it at a local receiver, operators at their endpoint."""
    block = CustomWebhookNotificationBlock(name="pe-ha", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"})
    block.save(WEBHOOK_BLOCK, overwrite=True)
    return str(CustomWebhookNotificationBlock.load(WEBHOOK_BLOCK)._block_document_id)


def _automation(name: str, trigger: EventTrigger, block_id: str, subject: str, body: str) -> Automation:
    return Automation(name=name, description="pe-ha alert", enabled=True, trigger=trigger,
                      actions=[SendNotification(block_document_id=block_id, subject=subject, body=body)])


HEARTBEAT_S = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY in prefect.yaml's job variables
# Six missed heartbeats. After a restart the server judges the wait from its own clock, so a run that
# lived through a server outage looks silent for the outage plus one beat: 180 s keeps a 2-minute
# outage from marking live runs Crashed (measured: 75 s down marked a live run at 90 s).
CRASHED_AFTER_S = 6 * HEARTBEAT_S
CRASH_AUTOMATION = "pe-ha: mark a run Crashed when its heartbeats stop"


def crash_automation() -> Automation:
    """Prefect's "Detect zombie flows" automation, for pe-ha's runs: a run that sent a heartbeat and then
    neither another one nor a final state within CRASHED_AFTER_S is marked Crashed. The Crashed state then
    alerts through the failed-or-crashed automation, once."""
    return Automation(
        name=CRASH_AUTOMATION, description="pe-ha: no ghosts", enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": "prefect.tag.pe-ha"},
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=CRASHED_AFTER_S)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {CRASHED_AFTER_S} s: the worker or its machine died "
                                            "during the run")])


# The run's progress labels (flows/_steps.py) name the last finished step and how to go on from the next one.
PROGRESS = ("{% if flow_run.labels.get('pe-ha.last-finished-step') %} Last finished step: "
            "{{ flow_run.labels.get('pe-ha.last-finished-step') }}. Resume: "
            "{{ flow_run.labels.get('pe-ha.resume') }}.{% endif %}")


def wanted_automations(block_id: str) -> list[Automation]:
    """One alert per bad outcome: a procedure's failed or crashed run; for verify-health, its
    pe-ha.health.degraded event (which it emits for every failure, so its Failed run is not matched too)."""
    return [
        _automation(
            "pe-ha: a run failed or crashed",
            EventTrigger(expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                         match_related={"prefect.resource.id": "prefect.tag.ha-procedure"},
                         posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            block_id, "pe-ha: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name }}",
            "Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }}: "
            "{{ flow_run.state.message }}." + PROGRESS),
        _automation(
            "pe-ha: the health check crashed",
            EventTrigger(expect={"prefect.flow-run.Crashed"},
                         match_related={"prefect.resource.id": "prefect.tag.health"},
                         posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            block_id, "pe-ha: {{ flow.name }} run {{ flow_run.name }} crashed",
            "Flow run {{ flow_run.name }} crashed: {{ flow_run.state.message }}"),
        _installation_event("pe-ha: a run will outlive its change window", "pe-ha.window.overrun", block_id,
                            "pe-ha: a run on {{ event.resource.name }} will outlive its change window",
                            "{{ event.payload.message }}"),
        _installation_event("pe-ha: PE health degraded", "pe-ha.health.degraded", block_id,
                            "pe-ha: PE services degraded on {{ event.resource.name }}", "{{ event.payload }}"),
    ]


def _installation_event(name: str, event: str, block_id: str, subject: str, body: str) -> Automation:
    """An alert for each ``event`` that pe-ha emits about one of its installations."""
    return _automation(
        name,
        EventTrigger(expect={event}, match={"prefect.resource.id": "pe-ha.installation.*"},
                     posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        block_id, subject, body)


def ensure_automations(block_id: str | None) -> dict[str, str]:
    """The alert automations (with a webhook block) and the crash automation (always: it alerts no one itself)."""
    result = {}
    for automation in [*(wanted_automations(block_id) if block_id else []), crash_automation()]:
        try:
            existing = Automation.read(name=automation.name)
        except (ValueError, ObjectNotFound):
            existing = None
        if existing is None:
            automation.create()
            result[automation.name] = "created"
        elif _definition(existing) != _definition(automation):
            automation.id = existing.id
            automation.update()
            result[automation.name] = "updated"
        else:
            result[automation.name] = "exists"
    return result


def _definition(automation: Automation) -> dict:
    dumped = automation.model_dump(mode="json", include={"description", "enabled", "trigger", "actions"},
                                   exclude={"trigger": {"id"}})
    return _sets_sorted(dumped)


def _sets_sorted(value):
    """The trigger's sets (``after``, ``expect``, ``for_each``) dump as lists in set order, which two equal sets
    need not share: compare them sorted."""
    if isinstance(value, dict):
        return {k: _sets_sorted(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sets_sorted(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def apply_health_interval(installation: str, seconds: int) -> str:
    """Set the installation's verify-health schedule to the PEHA_HEALTH_INTERVAL_S setting; idempotent.

    prefect.yaml says ``schedules: null``, so ``prefect deploy`` keeps the schedule made here. (Prefect
    checks ``interval`` as a duration before it templates, so ``{{ $PEHA_HEALTH_INTERVAL_S }}`` is refused
    there.)"""
    from prefect.client.schemas.schedules import IntervalSchedule

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"verify-health/{installation}")
        schedules = client.read_deployment_schedules(deployment.id)
        if not schedules:
            client.create_deployment_schedules(deployment.id, [(IntervalSchedule(interval=timedelta(seconds=seconds)), True)])
            return "created"
        current = schedules[0]
        if getattr(current.schedule, "interval", None) == timedelta(seconds=seconds):
            return "unchanged"
        client.update_deployment_schedule(deployment.id, current.id,
                                          schedule=IntervalSchedule(interval=timedelta(seconds=seconds)))
        return "updated"


def _settings_defaults() -> dict:
    """Installation, webhook and health interval from pe-ha's settings (environment or .env), as the flows
    read them; the process environment alone, when the settings are not complete on this machine."""
    try:
        from pe_ha.settings import load_settings

        s = load_settings()
        return {"installation": s.installation, "webhook": s.alert_webhook_url, "interval": s.health_interval_s}
    except Exception:  # e.g. no PEHA_MASTER here: a set-up host need not hold the inventory
        return {"installation": os.environ.get("PEHA_INSTALLATION", "default"),
                "webhook": os.environ.get("PEHA_ALERT_WEBHOOK_URL"),
                "interval": int(os.environ.get("PEHA_HEALTH_INTERVAL_S", "300"))}


def refuse_unknown_parameters(installation: str) -> dict[str, str]:
    """``additionalProperties: false`` in each pe-ha deployment's parameter schema: with
    ``enforce_parameter_schema`` the server then refuses a run with a misspelt parameter when it is created
    (HTTP 409, naming it), instead of a run that crashes in the worker. ``prefect deploy`` writes the schema
    anew, so ``--post-deploy`` applies this each time."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    result = {}
    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[installation])))
        flows = {f.id: f.name for f in client.read_flows()}
        for deployment in deployments:
            name = f"{flows.get(deployment.flow_id, '?')}/{deployment.name}"
            schema = dict(deployment.parameter_openapi_schema or {})
            if schema.get("additionalProperties") is False:
                result[name] = "unchanged"
                continue
            schema["additionalProperties"] = False
            client.update_deployment(deployment.id, DeploymentUpdate(parameter_openapi_schema=schema))
            result[name] = "updated"
    return dict(sorted(result.items()))


def main(argv: list[str] | None = None) -> int:
    defaults = _settings_defaults()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--installation", default=defaults["installation"])
    p.add_argument("--webhook-url", default=defaults["webhook"], help="where alerts are posted (PEHA_ALERT_WEBHOOK_URL)")
    p.add_argument("--no-alerts", action="store_true", help="set up without alert automations (no webhook)")
    p.add_argument("--post-deploy", action="store_true",
                   help="after `prefect deploy`: the health interval, and unknown parameters refused")
    p.add_argument("--health-interval-s", type=int, default=defaults["interval"])
    args = p.parse_args(argv)
    if args.post_deploy:
        print(f"verify-health/{args.installation} every {args.health_interval_s} s: "
              f"{apply_health_interval(args.installation, args.health_interval_s)}")
        for name, outcome in refuse_unknown_parameters(args.installation).items():
            print(f"deployment {name}: unknown parameters refused ({outcome})")
        return 0
    if not args.webhook_url and not args.no_alerts:
        print("refused: no alert webhook. Set PEHA_ALERT_WEBHOOK_URL (or --webhook-url) so that failed procedures "
              "and degraded health reach someone, or pass --no-alerts to set up without alerts.")
        return 2
    print(f"work pool {WORK_POOL}: {ensure_work_pool()}")
    print(f"lock pe-ha:{args.installation}: {ensure_lock(args.installation)}")
    if args.no_alerts:
        for name, outcome in ensure_automations(None).items():
            print(f"automation {name!r}: {outcome}")
        print("alerts: NOT set up (--no-alerts): failed procedures and degraded health alert no one")
        return 0
    block_id = ensure_webhook_block(args.webhook_url)
    print(f"webhook block {WEBHOOK_BLOCK}: saved")
    for name, outcome in ensure_automations(block_id).items():
        print(f"automation {name!r}: {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
