"""Faults that need the real Prefect stack: cancellation from the API, and a worker killed mid-flow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flows._lock import RENEWED_AFTER_FAILURES, TAKEN_AGAIN
from lab import core
from lab.pgserver import LocalPostgres
from lab.stack import PrefectStack, WebhookReceiver, free_port
from tests.lab.conftest import lab_up

pytestmark = [pytest.mark.lab, pytest.mark.prefect]
M, R = "master.lab.test", "replica.lab.test"


@pytest.fixture(scope="module")
def stack(lab, tmp_path_factory):
    hook = WebhookReceiver(port=free_port()).start()
    env = core.lab_env()
    env.update({"PEHA_LOCK_WAIT_S": "150"})
    st = PrefectStack(home=tmp_path_factory.mktemp("prefect-faults"), port=free_port(), extra_env=env)
    try:
        st.start_server()
        st.setup_and_deploy("lab", hook.url)
        st.worker = st.start_worker("worker-a")
        st.hook = hook
        yield st
    finally:
        st.stop()
        hook.stop()


@pytest.fixture(scope="module")
def pg_stack(lab, tmp_path_factory):
    """The same, with the Prefect server on PostgreSQL (the README's set-up for scale)."""
    pg = LocalPostgres(data_dir=Path("/var/tmp/pe-ha-prefect-pg") / str(free_port()), port=free_port())
    hook = WebhookReceiver(port=free_port()).start()
    env = core.lab_env()
    env.update({"PEHA_LOCK_WAIT_S": "150", "PEHA_HEALTH_INTERVAL_S": "86400"})
    st = PrefectStack(home=tmp_path_factory.mktemp("prefect-faults-pg"), port=free_port(), extra_env=env)
    try:
        st.database_url = pg.start().url
        st.start_server()
        st.setup_and_deploy("lab", hook.url)
        st.worker = st.start_worker("worker-pg")
        yield st
    finally:
        st.stop()
        hook.stop()
        pg.stop()


def remote_running(lab, host: str, pattern: str) -> bool:
    return core.node_run(lab.host(host.split(".")[0]), "pgrep", "-f", pattern, check=False).returncode == 0


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_cancel_from_the_api_kills_the_remote_command(stack, fresh_lab, outcome):
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_command", '"provision"')
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_seconds", "90")
    with outcome("fault", "cancel from the API during a remote command", "run Cancelled; remote process killed") as o:
        fr = stack.create_run("provision-replica", "lab", {"sync_timeout_s": 60})
        wait_until(lambda: remote_running(fresh_lab, M, "infrastructure provision"), 120, "the remote provision")
        started = time.monotonic()
        stack.cancel(fr["id"])
        final = stack.wait(fr["id"], 90)
        took = time.monotonic() - started
        assert final["state"]["type"] == "CANCELLED"
        wait_until(lambda: not remote_running(fresh_lab, M, "infrastructure provision"), 15, "the remote kill")
        o.observed = f"Cancelled {took:.0f} s after the API call; the remote provision process is gone"
    core.node_run(fresh_lab.master, "pe-sim", "fault", "clear")


def alerts_for(stack, run_name: str) -> list[str]:
    return [json.dumps(a) for a in stack.hook.received if run_name in json.dumps(a)]


def _kill_worker_and_flow_runs(stack) -> None:
    """SIGKILL the worker and every flow-run process it started (a crashed worker host)."""
    out = subprocess.run(["pgrep", "-f", str(stack.home)], capture_output=True, text=True).stdout.split()
    victims = {int(p) for p in out} | {stack.worker.pid}
    for proc in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()[1:]:
        pid, _, args = proc.strip().partition(" ")
        if "prefect" in args and ("flow_run" in args or "prefect.engine" in args or "worker start" in args):
            victims.add(int(pid))
    server = {stack.server.pid} if stack.server else set()
    for pid in victims - server:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_worker_killed_mid_flow(stack, fresh_lab, outcome):
    with outcome("fault", "the worker is killed (SIGKILL) in the middle of enable_replica's deploy step",
                 "run Crashed within 6 missed heartbeats, one alert with the resume command, lock free; re-run "
                 "from 'deploy' finishes without repeating the enable") as o:
        prov = stack.wait(stack.create_run("provision-replica", "lab", {"sync_timeout_s": 120})["id"], 300)
        assert prov["state"]["type"] == "COMPLETED", stack.explain(prov["id"])
        core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_command", '"agent"')
        core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_seconds", "120")
        fr = stack.create_run("enable-replica", "lab", {"topology": "mono"})
        wait_until(lambda: remote_running(fresh_lab, M, "pe_sim.py puppet agent"), 180, "the deploy step")
        wait_until(lambda: stack.flow_run(fr["id"]).get("labels", {}).get("pe-ha.last-finished-step")
                   == "puppet infrastructure enable replica", 60, "the run's progress labels")
        _kill_worker_and_flow_runs(stack)
        killed = time.monotonic()
        core.node_run(fresh_lab.master, "pe-sim", "fault", "clear")
        crashed = stack.wait(fr["id"], 300, until={"CRASHED"})  # no ghost: its heartbeats stopped
        crashed_after = time.monotonic() - killed
        assert "no heartbeat" in crashed["state"]["message"]
        name = crashed["name"]  # the run's own name (enable-replica/<replica>), given when it started
        wait_until(lambda: alerts_for(stack, name), 60, "the crash alert")
        time.sleep(5)  # a second alert for the same crash would arrive by now
        alerts = alerts_for(stack, name)
        assert len(alerts) == 1, alerts
        assert "Last finished step: puppet infrastructure enable replica" in alerts[0], alerts[0]
        assert "start_at=deploy" in alerts[0], alerts[0]
        assert_lock_free(stack)  # the lock is free: its lease ended with the worker
        stack.worker = stack.start_worker("worker-b")
        rerun = stack.create_run("enable-replica", "lab", {"topology": "mono", "start_at": "deploy"})
        final = stack.wait(rerun["id"], 300)
        freed_after = time.monotonic() - killed
        assert final["state"]["type"] == "COMPLETED", final["state"]
        enables = core.node_run(fresh_lab.master, "grep", "-c", "enable replica replica.lab.test",
                                "/var/log/puppetlabs/sim/sim.log", check=False).stdout.strip()
        assert enables == "1"
        conf = core.node_run(fresh_lab.host("agent1"), "cat", "/etc/puppetlabs/puppet/puppet.conf").stdout
        assert f"server_list = {M}:8140,{R}:8140" in conf
        o.observed = (f"run marked Crashed {crashed_after:.0f} s after the kill (heartbeats stopped), one alert naming "
                      f"the last finished step and start_at=deploy; the lock was free; the re-run completed "
                      f"{freed_after:.0f} s after the kill; `enable replica` ran once")


def server_away(stack, seconds: float = 75) -> float:
    """Stop the Prefect server for longer than the lock's 60 s lease, then start it again; seconds away."""
    stack.stop_server()
    down = time.monotonic()
    time.sleep(seconds)
    stack.start_server()
    return time.monotonic() - down


def run_logs(stack, run_id: str) -> list[str]:
    return [entry["message"] for entry in stack._request("POST", "/logs/filter", json={
        "logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}).json()]


def sim_log_count(host, text: str) -> str:
    return core.node_run(host, "grep", "-c", text, "/var/log/puppetlabs/sim/sim.log", check=False).stdout.strip()


def how_the_lock_survived(messages: list[str]) -> str:
    """The keeper's own account: the lease renewed once the server was back (it had not been revoked yet), or
    the lapsed lease taken again at the next step boundary. Either way the run never went on without it."""
    if any(TAKEN_AGAIN in m for m in messages):
        return "the lapsed lease was taken again before the next step"
    if any(RENEWED_AFTER_FAILURES in m for m in messages):
        return "the lease was renewed once the server was back, before it was revoked"
    raise AssertionError("the lock's keeper logged neither a renewal after the outage nor a new lease:\n"
                         + "\n".join(messages[-40:]))


def assert_lock_free(stack) -> None:
    limit = stack._request("GET", "/v2/concurrency_limits/pe-ha:lab").json()
    assert limit["active_slots"] == 0, limit


def ride_out_server_outage(stack, run_id: str) -> tuple[float, str]:
    """Take the server away now for longer than the lock's lease, bring it back, and wait for the run, which must
    complete: how long the server was away, and how the lock survived (from the run's own log)."""
    away = server_away(stack)
    final = stack.wait(run_id, 400)
    assert final["state"]["type"] == "COMPLETED", stack.explain(run_id, 40)
    return away, how_the_lock_survived(run_logs(stack, run_id))


def ensure_worker(stack) -> None:
    if stack.worker.poll() is not None:  # an earlier test's kill
        stack.worker = stack.start_worker("worker-c")


def ensure_enabled_replica(stack, lab) -> None:
    """A provisioned and enabled replica (the worker-kill test leaves one; alone, this makes one)."""
    state = json.loads(core.node_run(lab.master, "cat", "/opt/puppetlabs/sim/state.json").stdout)
    if state.get("role") == "master" and state.get("replica") == R and state.get("replica_enabled"):
        return
    lab_up(lab)
    for flow, params in (("provision-replica", {"sync_timeout_s": 120}), ("enable-replica", {"topology": "mono"})):
        run = stack.wait(stack.create_run(flow, "lab", params)["id"], 300)
        assert run["state"]["type"] == "COMPLETED", stack.explain(run["id"])


def test_server_down_longer_than_the_lease_during_promote(stack, lab, outcome):
    """Prefect's own lease renewal would cancel the run in the middle of the promotion (strict lock) once the
    server stays away: pe-ha's keeper lets the step finish and takes the lock again before the next one."""
    ensure_worker(stack)
    ensure_enabled_replica(stack, lab)
    core.node_run(lab.host("replica"), "pe-sim", "fault", "slow_command", '"promote"')
    core.node_run(lab.host("replica"), "pe-sim", "fault", "slow_seconds", "95")
    core.outage(lab.master, "drop")  # the master is gone for good: promote's precondition
    try:
        with outcome("fault", "the Prefect server (on SQLite) is down for 75 s (the lock's lease is 60 s) during "
                     "promote's promote step", "the step finishes; the lock is renewed or taken again before the next step; "
                     "the run completes; the promotion ran once") as o:
            fr = stack.create_run("promote-replica", "lab", {"approve": True})
            wait_until(lambda: remote_running(lab, R, "infrastructure promote"), 180, "the remote promote")
            away, kept = ride_out_server_outage(stack, fr["id"])
            assert sim_log_count(lab.host("replica"), "promote replica replica.lab.test") == "1"
            state = json.loads(core.node_run(lab.host("replica"), "cat", "/opt/puppetlabs/sim/state.json").stdout)
            assert state["role"] == "master"
            assert_lock_free(stack)
            o.observed = (f"server away {away:.0f} s; the promote step finished; {kept}; the run completed, and "
                          "the promotion ran once")
    finally:
        core.outage(lab.master, "restore")
        core.node_run(lab.host("replica"), "pe-sim", "fault", "clear")


def test_server_down_longer_than_the_lease_during_copy(pg_stack, fresh_lab, outcome):
    """The same during the documented copy's transfer, with the server on PostgreSQL: the copy still ends
    verified against its snapshot."""
    stack = pg_stack
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_command", '"transfer"')
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_seconds", "95")
    with outcome("fault", "the Prefect server (on PostgreSQL) is down for 75 s (the lock's lease is 60 s) during "
                 "copy_puppetdb's transfer step (documented method)", "the step finishes; the lock is renewed or taken again; the "
                 "copy is restored and verified; the run completes") as o:
        fr = stack.create_run("copy-puppetdb", "lab", {"method": "documented", "approve": True})
        wait_until(lambda: remote_running(fresh_lab, M, "pe_sim.py pe-sim scp-hook"), 180, "the transfer")
        away, kept = ride_out_server_outage(stack, fr["id"])
        summary = stack._request("POST", "/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [fr["id"]]}, "key": {"any_": ["copy-puppetdb-summary"]}}}).json()
        assert "verify the copy against the source snapshot" in summary[0]["data"], summary
        assert_lock_free(stack)
        o.observed = (f"server away {away:.0f} s; the transfer finished; {kept}; the copy was restored and "
                      "verified against the source snapshot, and the run completed")
    core.node_run(fresh_lab.master, "pe-sim", "fault", "clear")


@pytest.fixture()
def impatient_worker(stack):
    """The same deployments, served by a worker whose approvals wait 20 s."""
    with stack.worker_with("worker-impatient", {"PEHA_APPROVAL_TIMEOUT_S": "20"}):
        yield stack


def test_an_approval_nobody_answers(impatient_worker, fresh_lab, outcome):
    stack = impatient_worker
    with outcome("fault", "nobody answers copy_puppetdb's approval (approval timeout 20 s)",
                 "the run fails at the timeout with pe-ha's reason, one alert naming what waited; nothing after the "
                 "approval ran; the lock is free") as o:
        fr = stack.create_run("copy-puppetdb", "lab", {"method": "documented"})
        stack.wait(fr["id"], 180, until={"PAUSED"})
        paused = time.monotonic()
        final = stack.wait(fr["id"], 180)
        assert final["state"]["type"] == "FAILED", stack.explain(fr["id"])
        assert "no answer to the approval" in final["state"]["message"], final["state"]
        name = final["name"]
        wait_until(lambda: alerts_for(stack, name), 60, "the alert")
        time.sleep(5)  # a second alert for the same failure would arrive by now
        alerts = alerts_for(stack, name)
        assert len(alerts) == 1 and "no answer to the approval" in alerts[0], alerts
        tasks = stack._request("POST", "/task_runs/filter", json={
            "flow_runs": {"id": {"any_": [fr["id"]]}}, "limit": 200}).json()
        names = sorted(task["name"] for task in tasks)
        assert "pg-dump/master.lab.test" in names  # the dump runs before the approval, the restore after it
        assert not [n for n in names if n.startswith(("set-service", "pg-restore"))], names
        assert_lock_free(stack)
        o.observed = (f"Failed {time.monotonic() - paused:.0f} s after the pause with pe-ha's reason; one alert; "
                      "no task of a step after the approval ran; the lock was free")
