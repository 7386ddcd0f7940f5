"""Idempotent Prefect set-up for pe-ha: the process work pool, the per-installation lock, the alert
webhook block and the automations. Running it twice changes nothing.

    python -m deployments.setup            # uses PEHA_INSTALLATION and PEHA_ALERT_WEBHOOK_URL
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.events.actions import SendNotification
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


def ensure_automations(block_id: str) -> dict[str, str]:
    wanted = [
        _automation(
            "pe-ha: a run failed or crashed",
            EventTrigger(expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                         match_related={"prefect.resource.id": "prefect.tag.pe-ha"},
                         posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            block_id, "pe-ha: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name }}",
            "Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }}: "
            "{{ flow_run.state.message }}"),
        _automation(
            "pe-ha: PE health degraded",
            EventTrigger(expect={"pe-ha.health.degraded"}, match={"prefect.resource.id": "pe-ha.installation.*"},
                         posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            block_id, "pe-ha: PE services degraded on {{ event.resource.name }}",
            "{{ event.payload }}"),
    ]
    result = {}
    for automation in wanted:
        try:
            existing = Automation.read(name=automation.name)
        except (ValueError, ObjectNotFound):
            existing = None
        if existing is None:
            automation.create()
            result[automation.name] = "created"
        else:
            result[automation.name] = "exists"
    return result


def apply_health_interval(seconds: int) -> str:
    """Set verify-health's schedule interval (the PEHA_HEALTH_INTERVAL_S setting); idempotent."""
    from prefect.client.schemas.schedules import IntervalSchedule

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("verify-health/verify-health")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--installation", default=os.environ.get("PEHA_INSTALLATION", "default"))
    p.add_argument("--webhook-url", default=os.environ.get("PEHA_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/pe-ha-alerts"))
    p.add_argument("--post-deploy", action="store_true", help="after `prefect deploy`: apply the health interval")
    p.add_argument("--health-interval-s", type=int, default=int(os.environ.get("PEHA_HEALTH_INTERVAL_S", "300")))
    args = p.parse_args(argv)
    if args.post_deploy:
        print(f"verify-health schedule every {args.health_interval_s} s: {apply_health_interval(args.health_interval_s)}")
        return 0
    print(f"work pool {WORK_POOL}: {ensure_work_pool()}")
    print(f"lock pe-ha:{args.installation}: {ensure_lock(args.installation)}")
    block_id = ensure_webhook_block(args.webhook_url)
    print(f"webhook block {WEBHOOK_BLOCK}: saved")
    for name, outcome in ensure_automations(block_id).items():
        print(f"automation {name!r}: {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
