"""The whole HA lifecycle against the lab, each step checked from the hosts' real state.

provision (with the parallel PuppetDB copy where PE documents it, 2019.5; elsewhere that is refused and the copy
runs on its own after provisioning) -> enable with the drill -> cut the master off and promote, which
lists what still points at the old master (empty after the clean-up) -> enable_ha_failover with the old master ->
reinitialize one database -> forget.
"""

from __future__ import annotations

import json
import time

import pytest

from lab import core, inspect
from pe_ha import context
from pe_ha.ssh import FabricExecutor
from tests.lab.conftest import lab_settings

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_harness")]
M, R, A1, A2 = "master.lab.test", "replica.lab.test", "agent1.lab.test", "agent2.lab.test"


class CountingExecutor(FabricExecutor):
    count = 0
    remote_seconds = 0.0

    def run(self, host, argv, **kw):
        CountingExecutor.count += 1
        started = time.monotonic()
        try:
            return super().run(host, argv, **kw)
        finally:
            CountingExecutor.remote_seconds += time.monotonic() - started


def sim_state(ex, host):
    return json.loads(ex.run(host, ["cat", "/opt/puppetlabs/sim/state.json"], stream=False).stdout)


# What PE's status API lists (SOURCES.md "Status API facts"): 10 services on the master (8140: 4, 4433: 3,
# 8143: orchestrator and broker-service, 8081: 1) and 6 on the replica.
HEALTHY_SERVICES = 16


def puppet_conf(ex, host):
    return ex.run(host, ["cat", "/etc/puppetlabs/puppet/puppet.conf"], stream=False).stdout


def rows(settings, host, table):
    with inspect.connect(settings.host(host).address) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_full_lifecycle(fresh_lab, record_property):
    wall, count = run_lifecycle(fresh_lab)
    record_property("lifecycle_wall_s", round(wall, 1))
    record_property("remote_commands", count)


def run_lifecycle(lab) -> tuple[float, int]:
    """The lifecycle on a freshly brought-up lab; returns (wall seconds, remote commands)."""
    from flows.copy_puppetdb import copy_puppetdb
    from flows.enable_replica import enable_replica
    from flows.promote_replica import promote_replica, still_pointing_at
    from flows.provision_replica import provision_replica
    from flows.verify_health import verify_health

    settings = lab_settings()
    check = FabricExecutor(settings, line_sink=lambda *a: None)  # the test's own eyes, not counted
    started = time.monotonic()
    CountingExecutor.count, CountingExecutor.remote_seconds = 0, 0.0
    beside = lab.profile.pe_line <= (2019, 5)  # PE documents the manual copy beside provisioning up to 2019.5
    with context.using(settings=settings, executor=CountingExecutor(settings)) as ctx:
        if not beside:  # refused by name, before anything changes
            refused = provision_replica(copy_puppetdb=True, sync_timeout_s=120, return_state=True)
            assert refused.is_failed() and "documents no manual PuppetDB copy during provisioning" in refused.message
            assert sim_state(check, R)["role"] == "agent"
        # 1. provision, with the manual PuppetDB copy during the sync where PE documents it, else after it alone
        provision_replica(copy_puppetdb=beside, sync_timeout_s=120)
        assert sim_state(check, R)["role"] == "replica"
        if not beside:
            copied = copy_puppetdb(approve=True)
            assert copied["method"] == "fast"
            # judged by the replica's PuppetDB (the simulator's counts on its loopback listener)
            accepted = copied["puppetdb_acceptance"]
            assert accepted["judged"] is True and accepted["counts"]["resources"] > 0, accepted
        for key_file in lab.profile.secret_key_files:  # the PE version's own step, before provisioning
            assert check.run(R, ["cat", key_file], stream=False).stdout == check.run(M, ["cat", key_file], stream=False).stdout
        hiera = "/etc/puppetlabs/puppet/hiera.yaml"  # copied (Hiera is not replicated), readable by PE's services
        assert check.run(R, ["cat", hiera], stream=False).stdout == check.run(M, ["cat", hiera], stream=False).stdout
        assert check.run(R, ["stat", "-c", "%a %U", hiera, *lab.profile.secret_key_files], stream=False).stdout.splitlines() \
            == ["644 root"] * (1 + len(lab.profile.secret_key_files))
        assert rows(settings, R, "catalog_resources") == rows(settings, M, "catalog_resources") > 0
        assert verify_health(installation="lab")["healthy"] == HEALTHY_SERVICES
        assert sim_state(check, M).get("puppet_service", "running") == "running"  # paused around provisioning only

        # 2. enable with the failover drill
        enable_replica(topology="mono", drill=True)
        assert "server =" not in puppet_conf(check, R).replace("server_list", "")
        assert f"server_list = {M}:8140,{R}:8140" in puppet_conf(check, A1)
        assert "pe-ha-failover-drill" not in check.run(M, ["iptables", "-S"], stream=False).stdout
        assert sim_state(check, M).get("puppet_service", "running") == "running"  # paused around enable only
        groups = {g["name"] for g in ctx.api.groups(settings.rbac_token())}
        assert {"PE HA Master", "PE HA Replica"} <= groups
        # an operator's own group, pinned to the master and naming it: PE's promote does not touch it
        ctx.api.create_group(settings.rbac_token(), {
            "name": "Monitoring", "parent": next(g["id"] for g in ctx.api.groups(settings.rbac_token())
                                                 if g["name"] == "All Nodes"),
            "environment": "production", "rule": ["or", ["=", "name", M]],
            "classes": {"site::monitoring": {"collector": f"https://{M}:9090"}}})

        # 3. the master dies; promote the replica
        core.outage(lab.master, "drop")
        try:
            promoted = promote_replica(approve=True)
        finally:
            core.outage(lab.master, "restore")
        assert sim_state(check, R)["role"] == "master"
        assert f"server_list = {R}:8140" in puppet_conf(check, A2)
        still = [line.split(". Fix: ")[0] for line in promoted["still_points_at_old_master"]]
        assert still[:2] == [f"classifier group 'Monitoring' (on {R}): {M} is pinned to it",
                             f"classifier group 'Monitoring' (on {R}): class site::monitoring parameter collector "
                             f"is 'https://{M}:9090'"]
        assert still[2:] in ([], [f"PuppetDB on {R}: {M} is still an active node"])
        # the clean-up the list names: unpin, re-point the parameter, purge the old master
        token = settings.rbac_token()
        api = ctx.api
        api.request("POST", R, 4433, "/classifier-api/v1/commands/unpin-from-all", token=token, json={"nodes": [M]})
        monitoring = next(g for g in api.groups(token, R) if g["name"] == "Monitoring")
        api.request("POST", R, 4433, f"/classifier-api/v1/groups/{monitoring['id']}", token=token,
                    json={"classes": {"site::monitoring": {"collector": f"https://{R}:9090"}}})
        check.run(R, ["puppet", "node", "purge", M], stream=False)
        assert still_pointing_at(ctx, M, R, [A1, A2]) == []

    after_promote(lab, settings, check)
    wall = time.monotonic() - started
    print(f"\nlifecycle: {wall:.1f} s wall, {CountingExecutor.count} remote commands, "
          f"{CountingExecutor.remote_seconds:.1f} s inside remote commands")
    check.close()
    return wall, CountingExecutor.count


def after_promote(lab, settings, check) -> None:
    """The failed master back as the replica, one database reinitialized, then that replica forgotten."""
    from flows.enable_ha_failover import enable_ha_failover
    from flows.forget_replica import forget_replica
    from flows.reinitialize_replica import reinitialize_replica
    from flows.verify_health import verify_health

    swapped = lab_settings(master=settings.replica.model_dump(), replica=settings.master.model_dump())
    with context.using(settings=swapped, executor=CountingExecutor(swapped)):
        # 4. the failed master becomes the new replica
        assert enable_ha_failover(host=M, topology="mono", replication_timeout_secs=120, promoted=R)["server_removed"]
        assert sim_state(check, M)["role"] == "replica"
        assert "server =" not in puppet_conf(check, M).replace("server_list", "")  # as after enable
        assert verify_health(installation="lab")["healthy"] == HEALTHY_SERVICES

        # 5. reinitialize one database on the new replica: a marker only the replica had disappears
        check.run(M, ["runuser", "-u", "postgres", "--", "psql", "-h", "/run/postgresql", "-d", "pe-rbac", "-c",
                      "CREATE TABLE pe_ha_marker (x int)"], stream=False)
        reinitialize_replica(databases=["pe-rbac"], approve=True)
        out = check.run(M, ["runuser", "-u", "postgres", "--", "psql", "-h", "/run/postgresql", "-d", "pe-rbac", "-At",
                            "-c", "SELECT to_regclass('pe_ha_marker') IS NULL"], stream=False).stdout
        assert out.strip() == "t"

        # 6. the new replica is destroyed for good: forget it
        core.outage(lab.master, "drop")
        try:
            forget_replica(approve=True)
        finally:
            core.outage(lab.master, "restore")
        assert sim_state(check, R).get("replica") is None
        status = json.loads(check.run(R, ["puppet", "infrastructure", "status", "--format", "json"], stream=False).stdout)
        assert {e["server"] for e in status} == {R}
