"""Faults injected into the lab while flows run; outcomes asserted from the hosts' real state."""

from __future__ import annotations

import contextvars
import json
import threading
import time

import pytest

from lab import core, tokens
from pe_ha import commands, context
from pe_ha.errors import ConnectError, WaitTimedOut
from pe_ha.ssh import FabricExecutor
from tests.lab.conftest import lab_settings

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_harness")]
M, R, A1 = "master.lab.test", "replica.lab.test", "agent1.lab.test"


def quiet(settings) -> FabricExecutor:
    return FabricExecutor(settings, line_sink=lambda *a: None)


def sim_state(ex, host) -> dict:
    return json.loads(ex.run(host, ["cat", "/opt/puppetlabs/sim/state.json"], stream=False).stdout)


def fingerprint(settings, host, db="pe-puppetdb") -> dict:
    from lab import inspect
    from tasks.puppetdb import fingerprint_in

    with inspect.reader(settings.host(host).address, db) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return fingerprint_in(conn)


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # the thing being waited for may not answer yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_ssh_connection_drops_mid_command(fresh_lab, outcome):
    from tasks.infrastructure import provision_replica
    from tasks.services import set_service

    settings = lab_settings()
    ex = quiet(settings)
    check = quiet(settings)
    with outcome("fault", "the SSH connection drops in the middle of a long command",
                 "clear ConnectError; remote command gone; only idempotent tasks retry") as o:
        errors: list[BaseException] = []

        def long_command():
            try:
                ex.run(A1, ["bash", "-c", "sleep 41.5"], timeout_s=120)
            except BaseException as exc:  # noqa: BLE001 (recorded for the assertion)
                errors.append(exc)

        t = threading.Thread(target=long_command)
        t.start()
        wait_for(lambda: check.run(A1, ["pgrep", "-f", "^sleep 41.5"], check=False).exit_code == 0, 10, "the command")
        core.node_run(fresh_lab.host("agent1"), "pkill", "-KILL", "-f", "sshd: root@pts")  # the session dies
        t.join(30)
        assert not t.is_alive() and errors and isinstance(errors[0], ConnectError)
        time.sleep(1)
        assert check.run(A1, ["pgrep", "-f", "^sleep 41.5"], check=False).exit_code == 1
        assert provision_replica.retries == 0 and set_service.retries >= 1
        o.observed = (f"{type(errors[0]).__name__} ({errors[0].message[:60]}); remote process gone; provision has "
                      f"{provision_replica.retries} retries, set_service {set_service.retries}")
    ex.close()
    check.close()


def test_master_cut_off_during_provision(fresh_lab, outcome):
    from flows.provision_replica import provision_replica

    settings = lab_settings(ssh_connect_timeout_s=2)
    check = quiet(settings)
    # keep the replica's PuppetDB "starting" so that the cut lands in the bounded wait
    core.node_run(fresh_lab.replica, "pe-sim", "fault", "puppetdb_stuck_starting")
    with outcome("fault", "the master is cut off during provision_replica",
                 "bounded wait fails with the last status seen; re-run after restore completes") as o:
        result: dict = {}
        with context.using(settings=settings):
            t = threading.Thread(target=contextvars.copy_context().run, args=(  # the flow runs in this context
                lambda: result.update(state=provision_replica(sync_timeout_s=8, return_state=True)),))
            t.start()
            wait_for(lambda: sim_state(check, R).get("provisioned"), 60, "provision to run")
            time.sleep(2)  # the provision command returns; the flow is in its bounded wait
            core.outage(fresh_lab.master, "drop")
            try:
                t.join(120)
            finally:
                core.outage(fresh_lab.master, "restore")
                core.node_run(fresh_lab.replica, "pe-sim", "fault", "clear")
            state = result["state"]
            assert state.is_failed() and "not fully operational" in state.message
            rerun = provision_replica(sync_timeout_s=90, start_at="wait")
        assert rerun["services"] == 6
        o.observed = f"failed: {state.message.split(':', 1)[1].strip()[:80]}…; re-run from 'wait': 6 of 6 services"
    check.close()


def test_replica_cut_off_mid_copy(fresh_lab, outcome):
    from flows.copy_puppetdb import copy_puppetdb
    from lab import pdbgen

    pdbgen.generate(fresh_lab, 60, resources=400, reports=10)
    settings = lab_settings(ssh_connect_timeout_s=2)
    check = quiet(settings)
    before_source = fingerprint(settings, M)
    before_target = fingerprint(settings, R)
    with outcome("fault", "the replica is cut off mid-transfer during copy_puppetdb (fast)",
                 "source untouched; target's live database untouched, services as before; re-run completes") as o:
        result: dict = {}
        core.outage(fresh_lab.replica, "slow", rate="20mbit")
        with context.using(settings=settings):
            t = threading.Thread(target=contextvars.copy_context().run, args=(  # the flow runs in this context
                lambda: result.update(state=copy_puppetdb(approve=True, return_state=True)),))
            t.start()
            wait_for(lambda: check.run(M, ["pgrep", "-f", "COPY public"], check=False).exit_code == 0, 60,
                     "the table streams")
            core.outage(fresh_lab.replica, "drop")
            time.sleep(20)  # longer than the streams' ssh keepalive bound (3 x 5 s)
            core.outage(fresh_lab.replica, "restore")
            core.outage(fresh_lab.replica, "fast")
            t.join(300)
            state = result["state"]
        assert state.is_failed(), state
        assert fingerprint(settings, M) == before_source
        assert fingerprint(settings, R) == before_target  # the live pe-puppetdb was never touched
        with context.using(settings=settings):
            again = copy_puppetdb(approve=True)
        assert fingerprint(settings, R)["rows:catalog_resources"] == before_source["rows:catalog_resources"]
        o.observed = f"run failed ({state.message[:70]}…); source and live target unchanged; re-run: {again['tables']} tables"
    check.close()


def service_states(ex, host) -> dict[str, str]:
    out = {}
    for name in ("puppet", "pe-puppetdb"):
        text = ex.run(host, ["puppet", "resource", "service", name], stream=False).stdout
        out[name] = "running" if "'running'" in text else "stopped"
    return out


def test_replica_cut_off_mid_restore(fresh_lab, outcome):
    from flows.copy_puppetdb import copy_puppetdb
    from lab import pdbgen

    pdbgen.generate(fresh_lab, 200, resources=600, reports=10)  # a restore of several seconds
    settings = lab_settings(ssh_connect_timeout_s=2)
    check = quiet(settings)
    before_source = fingerprint(settings, M)
    services_before = service_states(check, R)
    with outcome("fault", "the replica is cut off mid-restore during copy_puppetdb (documented)",
                 "run fails saying the target is not a verified copy; source untouched; services as before; "
                 "re-run completes") as o:
        result: dict = {}
        with context.using(settings=settings):
            t = threading.Thread(target=contextvars.copy_context().run, args=(  # the flow runs in this context
                lambda: result.update(state=copy_puppetdb(method="documented", approve=True, return_state=True)),))
            t.start()
            # "[p]g_restore": the pattern must not match the wrapper shell of this very probe
            wait_for(lambda: check.run(R, ["pgrep", "-f", "[p]g_restore --clean"], check=False).exit_code == 0, 120,
                     "pg_restore")
            core.outage(fresh_lab.replica, "drop")
            # Longer than the executor's dead-link bound (10 s of silence, then a probe with the 2 s connect
            # timeout): a shorter drop is ridden out by TCP and the restore simply finishes and verifies.
            time.sleep(20)
            core.outage(fresh_lab.replica, "restore")
            t.join(400)
            state = result["state"]
        assert state.is_failed(), state
        assert "NOT a verified copy" in state.message, state.message
        assert fingerprint(settings, M) == before_source
        wait_for(lambda: service_states(check, R) == services_before, 60, "the replica's services as before")
        with context.using(settings=settings):
            again = copy_puppetdb(method="documented", approve=True)
        assert fingerprint(settings, R) == before_source
        assert service_states(check, R) == services_before
        o.observed = (f"failed: {state.message.split(':', 1)[1].strip()[:90]}…; source unchanged; puppet and "
                      f"pe-puppetdb running again; re-run verified {again['tables']} tables")
    check.close()


def test_space_runs_out_during_the_dump(fresh_lab, outcome):
    from flows.copy_puppetdb import copy_puppetdb
    from lab import pdbgen

    pdbgen.generate(fresh_lab, 60, resources=400, reports=10)
    settings = lab_settings(dump_dir="/var/tmp/tight")
    check = quiet(settings)
    from lab import inspect

    with inspect.connect(settings.host(M).address) as conn:
        size = int(conn.execute("SELECT pg_database_size('pe-puppetdb')").fetchone()[0])
    room = size // 2 + 80 * 2**20  # passes the check (size/2 + 64 MiB) with a little to spare
    for node in (fresh_lab.master, fresh_lab.replica):
        core.node_run(node, "bash", "-c", f"mkdir -p /var/tmp/tight && mount -t tmpfs -o size={room} tmpfs /var/tmp/tight")
    # Another writer takes the rest of the space as soon as the dump file appears (after the check passed).
    filler = core.node_popen(fresh_lab.master, "bash", "-c",
                             "for i in $(seq 3000); do ls /var/tmp/tight/pe-ha/*.dump >/dev/null 2>&1 && break; sleep 0.01; done; "
                             "fallocate -l $(df --output=avail -B1 /var/tmp/tight | tail -1) /var/tmp/tight/other-writer")
    before_target = fingerprint(settings, R)
    with outcome("fault", "space runs out during the dump (another writer fills the folder after the check)",
                 "fails cleanly; its partial dump files removed; target untouched") as o:
        with context.using(settings=settings):
            state = copy_puppetdb(method="documented", approve=True, return_state=True)
        filler.wait(30)
        assert state.is_failed(), state
        assert "No space left" in state.message or "space" in state.message.lower(), state.message
        left = core.node_run(fresh_lab.master, "bash", "-c", "ls -A /var/tmp/tight/pe-ha | wc -l").stdout.strip()
        assert left == "0", "a partial dump was left behind"
        assert core.node_run(fresh_lab.master, "test", "-e", "/var/tmp/tight/other-writer", check=False).returncode == 0
        assert fingerprint(settings, R) == before_target
        o.observed = f"failed: {state.message.split(':', 1)[-1].strip()[:90]}…; 0 files of its own left; target unchanged"
    for node in (fresh_lab.master, fresh_lab.replica):
        core.node_run(node, "umount", "/var/tmp/tight", check=False)
    check.close()


def test_dump_folder_too_small(fresh_lab, outcome):
    from flows.copy_puppetdb import copy_puppetdb

    core.node_run(fresh_lab.replica, "bash", "-c", "mkdir -p /var/tmp/small && mount -t tmpfs -o size=1m tmpfs /var/tmp/small")
    core.node_run(fresh_lab.master, "mkdir", "-p", "/var/tmp/small")
    settings = lab_settings(dump_dir="/var/tmp/small")
    with outcome("fault", "the replica's dump folder is a 1 MiB tmpfs", "refused by the free-space check before dumping") as o:
        with context.using(settings=settings):
            state = copy_puppetdb(method="documented", approve=True, return_state=True)
        assert state.is_failed() and "MiB free" in state.message
        leftovers = core.node_run(fresh_lab.master, "bash", "-c", "ls /var/tmp/pe-ha 2>/dev/null | wc -l").stdout.strip()
        assert leftovers == "0"
        o.observed = "refused: " + state.message.split(":", 1)[1].strip()[:100]


def test_corrupted_transfer_is_never_restored(fresh_lab, outcome):
    from flows.copy_puppetdb import copy_puppetdb

    settings = lab_settings()
    before_target = fingerprint(settings, R)
    core.node_run(fresh_lab.master, "pe-sim", "fault", "corrupt_transfer")
    with outcome("fault", "one byte flipped in transit (test hook around scp)",
                 "checksum mismatch; nothing restored") as o:
        with context.using(settings=settings):
            state = copy_puppetdb(method="documented", approve=True, return_state=True)
        assert state.is_failed() and "checksum mismatch" in state.message
        assert fingerprint(settings, R) == before_target
        o.observed = "failed: " + state.message.split(":", 1)[1].strip()[:90] + "; target unchanged"


def test_token_revoked_mid_procedure(fresh_lab, outcome):
    from flows.provision_replica import provision_replica

    settings = lab_settings()
    with outcome("fault", "the RBAC token becomes invalid in the middle of a procedure",
                 "the 401 fails the run, never swallowed; nothing provisioned") as o:
        core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_command", '"provision"')
        core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_seconds", "4")
        token = settings.rbac_token().get_secret_value()
        timer = threading.Timer(2.5, lambda: tokens.expire_token_in(fresh_lab, token, 0))
        timer.start()
        with context.using(settings=settings):
            state = provision_replica(sync_timeout_s=30, return_state=True)
        timer.join()
        assert state.is_failed() and "401" in state.message and "token-expired" in state.message
        assert not sim_state(quiet(settings), R).get("provisioned")
        tokens.issue_admin_token(fresh_lab, lifetime_s=4 * 3600)
        o.observed = "failed: " + state.message[state.message.find("Error: RBAC"):][:90]


def test_short_lived_token_is_refused_up_front(fresh_lab, outcome):
    from flows.provision_replica import provision_replica

    settings = lab_settings()
    with outcome("fault", "a token that would expire during the sync", "refused before provisioning") as o:
        tokens.expire_token_in(fresh_lab, settings.rbac_token().get_secret_value(), 300)
        with context.using(settings=settings):
            state = provision_replica(sync_timeout_s=60, return_state=True)
        tokens.issue_admin_token(fresh_lab, lifetime_s=4 * 3600)
        assert state.is_failed() and "expires in" in state.message
        o.observed = "refused: " + state.message[state.message.find("the RBAC token"):][:90]


def test_puppetdb_stuck_starting(fresh_lab, outcome):
    from flows.provision_replica import provision_replica

    settings = lab_settings()
    core.node_run(fresh_lab.replica, "pe-sim", "fault", "puppetdb_stuck_starting")
    with outcome("fault", "PuppetDB stuck in `starting` after provisioning", "bounded wait ends with a clear message") as o:
        with context.using(settings=settings):
            started = time.monotonic()
            state = provision_replica(sync_timeout_s=6, return_state=True)
        assert state.is_failed() and "starting" in state.message and time.monotonic() - started < 60
        o.observed = "failed after the bound: " + state.message[state.message.find("replica "):][:100]


def test_agent_lock_held(fresh_lab, outcome):
    from tasks.agent import agent_run

    settings = lab_settings()
    core.node_run(fresh_lab.host("agent1"), "pe-sim", "fault", "agent_lock")
    with outcome("fault", "another agent run holds the lock", "waits (bounded), then fails clearly") as o:
        with context.using(settings=settings) as ctx:
            with pytest.raises(WaitTimedOut) as info:
                agent_run.fn(ctx, A1, commands.agent_run(), lock_wait_s=4)
        o.observed = info.value.message[:100]


def test_enable_ha_failover_ends_on_time(fresh_lab, outcome):
    from flows.enable_ha_failover import enable_ha_failover

    settings = lab_settings()
    check = quiet(settings)
    core.node_run(fresh_lab.replica, "pe-sim", "fault", "slow_command", '"enable_ha_failover"')
    core.node_run(fresh_lab.replica, "pe-sim", "fault", "slow_seconds", "60")
    # make the replica the master first (as after a promotion) so that the command is accepted
    core.node_run(fresh_lab.replica, "bash", "-c", "/usr/bin/python3 - <<'X'\nimport json\np='/opt/puppetlabs/sim/state.json'\n"
                  "s=json.load(open(p)); s.update(role='master', master='replica.lab.test'); json.dump(s, open(p,'w'))\nX")
    core.node_run(fresh_lab.replica, "pe-sim", "ensure-services")  # a promoted replica runs the master's services
    with outcome("fault", "enable_ha_failover with plan_timeout_s=8 and a plan that would run 60 s",
                 "ends at the plan's bound, remote command killed") as o:
        with context.using(settings=settings):
            started = time.monotonic()
            state = enable_ha_failover(host=M, replication_timeout_secs=5, plan_timeout_s=8, promoted=R,
                                       return_state=True)
            took = time.monotonic() - started
        assert state.is_failed() and "plan_timeout_s=8" in state.message
        assert took < 40
        time.sleep(1)
        assert check.run(R, ["pgrep", "-f", "^/usr/bin/python3 /opt/puppetlabs/sim/pe_sim.py puppet infrastructure run"],
                         check=False).exit_code == 1
        o.observed = f"failed after {took:.0f} s: {state.message[state.message.find('enable_ha_failover did'):][:80]}"
    check.close()
