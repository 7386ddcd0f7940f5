"""Faults that need the real Prefect stack: cancellation from the API, and a worker killed mid-flow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from lab import core
from lab.stack import PrefectStack, WebhookReceiver, free_port

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
        st.worker = st.start_worker("worker-a")  # type: ignore[attr-defined]
        st.hook = hook  # type: ignore[attr-defined]
        yield st
    finally:
        st.stop()
        hook.stop()


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
                 "run Crashed within 3 missed heartbeats, one alert with the resume command, lock free; re-run "
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
        limit = stack._request("GET", "/v2/concurrency_limits/pe-ha:lab").json()
        assert limit["active_slots"] == 0, limit  # the lock is free: its lease ended with the worker
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


def test_server_down_longer_than_the_lease_during_a_step(stack, fresh_lab, outcome):
    """Prefect's own lease renewal would cancel the run in the middle of the step (strict lock) once the server
    stays away: pe-ha's keeper lets the step finish and takes the lock again before the next one."""
    if stack.worker.poll() is not None:  # an earlier test's kill
        stack.worker = stack.start_worker("worker-c")
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_command", '"provision"')
    core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_seconds", "95")
    with outcome("fault", "the Prefect server is down for 75 s (the lock's lease is 60 s) during provision's "
                 "provision step", "the step finishes; the lock is taken again before the next step; the run "
                 "completes") as o:
        fr = stack.create_run("provision-replica", "lab", {"sync_timeout_s": 120})
        wait_until(lambda: remote_running(fresh_lab, M, "infrastructure provision"), 120, "the remote provision")
        stack.stop_server()
        down = time.monotonic()
        time.sleep(75)
        stack.start_server()
        away = time.monotonic() - down
        final = stack.wait(fr["id"], 400)
        assert final["state"]["type"] == "COMPLETED", stack.explain(fr["id"], 40)
        lines = stack._request("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [fr["id"]]}},
                                                              "limit": 200}).json()
        messages = [entry["message"] for entry in lines]
        assert any("took the pe-ha:lab lock again" in m for m in messages), "\n".join(messages[-40:])
        provisions = core.node_run(fresh_lab.master, "grep", "-c", "provision replica replica.lab.test",
                                   "/var/log/puppetlabs/sim/sim.log", check=False).stdout.strip()
        assert provisions == "1"
        limit = stack._request("GET", "/v2/concurrency_limits/pe-ha:lab").json()
        assert limit["active_slots"] == 0, limit  # the lock is free again after the run
        o.observed = (f"server away {away:.0f} s; the provision step finished, the lock was taken again before the "
                      "next step, and the run completed with one provision")
    core.node_run(fresh_lab.master, "pe-sim", "fault", "clear")
