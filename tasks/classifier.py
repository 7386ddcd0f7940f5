"""Tasks on PE's node classifier API: back up the hierarchy, and set per-site agent failover groups."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from pe_ha.context import RunContext
from pe_ha.errors import PreconditionFailed
from pe_ha.masking import mask
from tasks._base import READ, RETRY_CONNECT, logger

AGENT_PROFILE = "puppet_enterprise::profile::agent"


@task(name="backup-classifier", **READ)
def backup_groups(ctx: RunContext, backup_dir: str) -> str:
    """``GET /classifier-api/v1/groups`` to a timestamped file and a Prefect artifact. Returns the file path."""
    s = ctx.settings
    groups = ctx.api.groups(s.rbac_token())
    folder = Path(backup_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"classifier-{s.installation}-{stamp}.json"
    text = mask(json.dumps(groups, indent=2, sort_keys=True))
    path.write_text(text)
    path.chmod(0o600)
    create_markdown_artifact(
        key=f"classifier-backup-{s.installation}",
        markdown=f"# Classifier backup ({len(groups)} groups)\n\nSaved to `{path}` at {stamp}.\n"
                 f"Restore deliberately with `POST /classifier-api/v1/import-hierarchy` (it replaces every group).\n\n"
                 f"```json\n{text[:60000]}\n```\n",
        description=f"classifier hierarchy before a change, {stamp}")
    logger().info("classifier hierarchy (%d groups) saved to %s", len(groups), path)
    return str(path)


def site_rule(fact: str, value: str) -> list:
    """Agents whose trusted fact ``fact`` is ``value``, but no PE server node: those have the ``pe_server_version``
    fact, and get their ``server_list`` from PE Infrastructure Agent, a sibling of the site group. Matching both
    is a classification conflict, and PE fails their Puppet runs."""
    return ["and", ["=", ["trusted", "extensions", fact], value], ["not", ["~", ["fact", "pe_server_version"], ".+"]]]


@task(name="configure-site-group", task_run_name="site-group/{site}", **RETRY_CONNECT)
def ensure_site_group(ctx: RunContext, site: str, fact: str, value: str, server_list: list[str], pcp_broker_list: list[str]) -> dict:
    """Create or update the PE Agent child group for one site (idempotent). Returns the group and whether it changed."""
    s = ctx.settings
    token = s.rbac_token()
    api = ctx.api
    groups = api.groups(token)
    parent = next((g for g in groups if g["name"] == "PE Agent"), None)
    if parent is None:
        raise PreconditionFailed("the classifier has no PE Agent group", hint="point pe-ha at a PE primary server")
    name = f"PE Agent - {site}"
    rule = site_rule(fact, value)
    params = {"server_list": server_list, "pcp_broker_list": pcp_broker_list}
    existing = next((g for g in groups if g["name"] == name and g["parent"] == parent["id"]), None)
    if existing is not None:
        if existing.get("rule") == rule and existing.get("classes", {}).get(AGENT_PROFILE) == params:
            return {"group": existing, "changed": False}
        group = api.update_group(token, existing["id"], {"rule": rule, "classes": {AGENT_PROFILE: params}})
        return {"group": group, "changed": True}
    # A child group runs in its parent's environment: PE Agent's may not be production.
    group = api.create_group(token, {"name": name, "parent": parent["id"], "environment": parent.get("environment", "production"),
                                     "rule": rule, "classes": {AGENT_PROFILE: params},
                                     "description": f"pe-ha: agents at site {site} fail over through these servers"})
    return {"group": group, "changed": True}


@task(name="code-manager-configured", **READ)
def code_manager_auto_configure(ctx: RunContext, host: str | None = None) -> bool:
    """``code_manager_auto_configure`` on the PE Master group's ``puppet_enterprise::profile::master`` class."""
    groups = ctx.api.groups(ctx.settings.rbac_token(), host)
    for group in groups:
        if group.get("name") == "PE Master":
            params = (group.get("classes") or {}).get("puppet_enterprise::profile::master") or {}
            return params.get("code_manager_auto_configure") is True
    return False


@task(name="read-classifier", task_run_name="read-classifier/{host}", **READ)
def groups_on(ctx: RunContext, host: str) -> list[dict]:
    """Every node group, as ``host``'s classifier serves it."""
    return ctx.api.groups(ctx.settings.rbac_token(), host)


@task(name="enabled-replicas", task_run_name="enabled-replicas/{read_from}", **READ)
def enabled_replicas(ctx: RunContext, read_from: str) -> list[str]:
    """The replicas PE records as enabled: ``ha_enabled_replicas`` of the ``puppet_enterprise`` class on PE
    Infrastructure, beside the PE HA Replica group. Read from ``read_from`` (the replica's own, replicated
    classifier when the master is gone)."""
    return replicas_enabled_in(ctx.api.groups(ctx.settings.rbac_token(), read_from))


def replicas_enabled_in(groups: list[dict]) -> list[str]:
    found: list[str] = []
    for group in groups:
        pe = (group.get("classes") or {}).get("puppet_enterprise") or {}
        found += [r for r in (pe.get("ha_enabled_replicas") or []) if isinstance(r, str) and r not in found]
    return found


# Parameters PE's tuning pages name for its services (JVM heap, JRuby pool, PuppetDB threads, PostgreSQL memory):
# set in the console, they reach only the nodes of that group, so a promoted replica would run untuned.
TUNING_PARAMETERS = frozenset({
    "java_args", "jruby_max_active_instances", "jruby_max_requests_per_instance", "reserved_code_cache",
    "command_processing_threads", "shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size",
    "max_connections", "autovacuum_max_workers", "autovacuum_work_mem", "wal_buffers"})


def console_tuning(groups: list[dict]) -> list[str]:
    """Tuning parameters set in PE's own node groups: ``<group>: <class>::<parameter>``."""
    found = []
    for group in groups:
        if not str(group.get("name", "")).startswith("PE "):
            continue
        for cls, params in (group.get("classes") or {}).items():
            if not str(cls).startswith("puppet_enterprise::") or not isinstance(params, dict):
                continue
            found += [f"{group['name']}: {cls}::{name}" for name in sorted(params) if name in TUNING_PARAMETERS]
    return found


def console_r10k_private_key(groups: list[dict]) -> str | None:
    """The ``r10k_private_key`` PE Master's ``puppet_enterprise::profile::master`` sets in the console, if any."""
    for group in groups:
        if group.get("name") == "PE Master":
            params = (group.get("classes") or {}).get("puppet_enterprise::profile::master") or {}
            key = params.get("r10k_private_key")
            return str(key) if key else None
    return None


def replica_enabled(ctx: RunContext, replica: str, read_from: str) -> bool:
    """Was ``replica`` enabled (PE's own record, ``enabled_replicas``)?"""
    return replica in enabled_replicas(ctx, read_from)
