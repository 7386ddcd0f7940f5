"""Puppet agent runs as the flows drive them: the lock wait, the exit codes, the bounded fan-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from pe_ha import commands
from pe_ha.errors import CommandFailed, WaitTimedOut
from pe_ha.executor import CommandResult
from tests.conftest import answer_agent_summary

M, R, A1, A2 = "master.example.com", "replica.example.com", "agent1.example.com", "agent2.example.com"

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_agent_lock_is_waited_for_then_fails_clearly(env, ctx):
    fake, _, _ = env
    fake.script(A1, ("puppet", "agent"), exit_code=1,
                stdout="Notice: Run of Puppet configuration client already in progress; skipping")
    from tasks.agent import agent_run

    with pytest.raises(WaitTimedOut, match="agent lock"):
        agent_run.fn(ctx, A1, commands.agent_run(), lock_wait_s=1)
    assert len(fake.commands_on(A1)) >= 2


@pytest.mark.parametrize("code", [1, 4, 6])
def test_agent_failures_are_failures(env, ctx, code):
    fake, _, _ = env
    fake.script(A1, ("puppet", "agent"), exit_code=code, stdout="Error: something")
    from tasks.agent import agent_run

    with pytest.raises(CommandFailed):
        agent_run.fn(ctx, A1, commands.agent_run())


PENDING_SUMMARY = (Path(__file__).parent / "contract" / "samples" / "agent-last-run-summary-noop-pending.yaml").read_text()


def test_a_noop_run_that_exits_0_with_a_pending_change_fails_the_no_changes_check(env, ctx):
    fake, _, _ = env
    fake.script(A1, ("puppet", "agent"), exit_code=0, stdout=(
        "Info: Applying configuration version '1796514648'\n"
        "Notice: /Stage[main]/Main/File[/etc/motd]/ensure: current_value 'absent', should be 'file' (noop)\n"))
    answer_agent_summary(fake, PENDING_SUMMARY, host=A1)
    from tasks.agent import agent_run

    with pytest.raises(CommandFailed, match=r"File\[/etc/motd\]"):
        agent_run(ctx, A1, commands.agent_run(noop=True, server_list=[R]), expect_no_changes=True)
    assert fake.commands_on(A1)[-1] == commands.agent_last_run_summary().argv


def test_a_noop_run_with_a_clean_summary_passes_the_no_changes_check(env, ctx):
    fake, _, _ = env
    fake.script(A1, ("puppet", "agent"), exit_code=0, stdout="Info: Applying configuration version '1796514764'\n")
    from tasks.agent import agent_run

    assert agent_run(ctx, A1, commands.agent_run(noop=True), expect_no_changes=True) == 0


def test_agent_fan_out_is_bounded_runs_every_node_and_names_the_failures(env, ctx):
    import threading
    import time as _time

    fake, _, settings = env
    hosts = [f"agent{i}.example.com" for i in range(1, 9)]
    in_flight, peak, lock = [0], [0], threading.Lock()

    def agent(host, argv):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        _time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        failing = host in ("agent3.example.com", "agent6.example.com")
        return CommandResult(host, argv, 4 if failing else 2, "", "Error: failures" if failing else "", 0.05)

    fake.script(None, ("puppet", "agent", "-t"), responder=agent)
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from tasks import agent as agent_tasks

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=64))  # type: ignore[arg-type]
    def fan_out():
        return agent_tasks.agent_runs(ctx, hosts, commands.agent_run(), limit=3)

    with pytest.raises(CommandFailed) as failed:
        fan_out()
    assert "agent3.example.com" in str(failed.value) and "agent6.example.com" in str(failed.value)
    assert "2 of 8 agent runs failed" in str(failed.value)
    assert sorted(c.host for c in fake.calls if c.argv[:3] == ("puppet", "agent", "-t")) == sorted(hosts)
    assert peak[0] == 3  # bounded by the limit, and the window was kept full
