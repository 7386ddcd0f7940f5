"""One procedure at a time per installation: the lock, and the refusal that names the run holding it."""

from __future__ import annotations

import contextlib
import contextvars

import pytest

from flows._lock import TAKEN_AGAIN
from pe_ha import context
from pe_ha.executor import CommandResult
from tests.conftest import status_json
from tests.test_plans import latest_artifact

M, R, A1, A2 = "master.example.com", "replica.example.com", "agent1.example.com", "agent2.example.com"
TF = "/root/.puppetlabs/pe-ha.token"

pytestmark = pytest.mark.usefixtures("prefect_harness")


def short_lock_wait():
    """The unit settings with a one-second lock wait, in place of the installed ones for the block."""
    ctx = context.given()
    assert ctx is not None, "the env fixture gives the flows a context"
    return context.using(settings=ctx.settings.model_copy(update={"lock_wait_s": 1}), executor=ctx.executor,
                         api=ctx.api)


@contextlib.contextmanager
def provision_holding_the_lock(fake, monkeypatch):
    """provision-replica in a thread, held inside its provision command (so holding the lock) until the block ends."""
    import threading
    import time as _time

    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(R))
    release = threading.Event()

    def slow_provision(host, argv):
        release.wait(20)
        return CommandResult(host, argv, 0, "provisioned", "", 0.0)

    fake.script(M, ("puppet", "infrastructure", "provision"), responder=slow_provision)
    from flows.provision_replica import provision_replica

    holder = threading.Thread(target=contextvars.copy_context().run,  # the flow runs in the test's context
                              args=(lambda: provision_replica(sync_timeout_s=30),))
    with short_lock_wait():
        holder.start()
        try:
            deadline = _time.monotonic() + 20
            while not any(c[:3] == ("puppet", "infrastructure", "provision") for c in fake.commands_on(M)):
                assert _time.monotonic() < deadline
                _time.sleep(0.05)
            yield
        finally:
            release.set()
            holder.join(30)


def test_second_procedure_on_the_same_installation_is_refused_naming_the_holder(env, monkeypatch):
    fake, _, _ = env
    from flows.forget_replica import forget_replica

    with provision_holding_the_lock(fake, monkeypatch):
        state = forget_replica(approve=True, return_state=True)
        assert state.is_failed()
        assert "holds the pe-ha:unit lock" in state.message and "provision-replica" in state.message
        assert not any(c[:3] == ("puppet", "infrastructure", "forget") for c in fake.commands_on(M))


def test_a_stale_holder_note_never_names_the_wrong_run(env, monkeypatch):
    """The holder's note may still name the previous holder (it is written just after the lock is taken): the
    refusal must name the run that really holds the lock, never a finished one."""
    from prefect import flow
    from prefect.variables import Variable

    import flows._lock as common

    @flow(name="copy-puppetdb-earlier")
    def earlier() -> None:
        return None

    finished = earlier(return_state=True)
    Variable.set("pe-ha-lock-holder-unit", {"name": "copy-puppetdb/replica.example.com", "procedure": "copy-puppetdb",
                                            "id": str(finished.state_details.flow_run_id)}, overwrite=True)
    monkeypatch.setattr(common, "_note_holder", lambda installation, procedure: None)  # the new note is late
    fake, _, _ = env
    from flows.forget_replica import forget_replica

    with provision_holding_the_lock(fake, monkeypatch):
        state = forget_replica(approve=True, return_state=True)
        assert state.is_failed() and "provision-replica/" in state.message, state.message
        assert "copy-puppetdb" not in state.message


def test_verify_health_takes_no_lock(env, monkeypatch):
    from flows.verify_health import verify_health

    with short_lock_wait():
        assert verify_health()["healthy"] >= 1


def test_the_holder_is_noted_with_the_lock_and_marked_released_before_it_goes(env, monkeypatch):
    from prefect.variables import Variable

    fake, _, _ = env
    with provision_holding_the_lock(fake, monkeypatch):
        note = Variable.get("pe-ha-lock-holder-unit")
        assert note["procedure"] == "provision-replica" and note["name"].startswith("provision-replica/")
        holder_id = note["id"]
    assert Variable.get("pe-ha-lock-holder-unit") == {"released": holder_id}


def test_a_wait_that_timed_out_on_a_free_lock_asks_again(env, monkeypatch):
    """A slow server (SQLite's 'database is locked', retried with backoff) can use up the wait while nobody
    holds the lock: the procedure asks again instead of naming a holder that does not exist."""
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError

    import flows._lock as common

    real_acquire = common._acquire

    fake, _, _ = env
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M))
    asked = []

    def slow_then_granted(name, timeout_s, holder_id):
        asked.append(timeout_s)
        if len(asked) == 1:
            raise AcquireConcurrencySlotTimeoutError("timed out")
        return real_acquire(name, timeout_s, holder_id)

    monkeypatch.setattr(common, "_acquire", slow_then_granted)
    from flows.provision_replica import provision_replica

    assert provision_replica(sync_timeout_s=30)["replica"] == R
    assert len(asked) == 2


def test_a_wait_that_timed_out_on_a_held_lock_is_refused_at_once(env, monkeypatch):
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError

    import flows._lock as common

    fake, _, _ = env
    asked = []

    def held(name, timeout_s, holder_id):
        asked.append(1)
        raise AcquireConcurrencySlotTimeoutError("timed out")

    monkeypatch.setattr(common, "_acquire", held)
    monkeypatch.setattr(common, "_lock_is_taken", lambda name: True)
    from flows.forget_replica import forget_replica

    state = forget_replica(approve=True, return_state=True)
    assert state.is_failed() and "holds the pe-ha:unit lock" in state.message
    assert len(asked) == 1 and fake.calls == []


# -- the lease: kept by pe-ha, judged only between steps ---------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_renewals_keep_the_lock_until_the_lease_would_end_and_a_revoked_lease_is_lost_at_once():
    from uuid import uuid4

    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    from flows._lock import LOCK_LEASE_S, MARGIN_S, LeaseKeeper

    answers: list[BaseException | None] = []

    def renew(lease_id, duration):
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    clock = Clock()
    keeper = LeaseKeeper(uuid4(), renew=renew, clock=clock)
    answers += [httpx.ConnectError("server restarting")] * 3
    for _ in range(3):
        clock.now += 10
        assert keeper.renew_once() is False
    assert keeper.failures == 3 and keeper.holds()  # 30 s without renewal: the lease still runs
    clock.now = 1000.0 + LOCK_LEASE_S - MARGIN_S
    assert not keeper.holds()  # too close to the lease's end for another step to start
    answers.append(None)
    assert keeper.renew_once() and keeper.holds() and keeper.failures == 0

    request = httpx.Request("POST", "http://x/api/v2/concurrency_limits/leases/1/renew")
    answers.append(PrefectHTTPStatusError("gone", request=request, response=httpx.Response(404, request=request)))
    assert keeper.renew_once() is False
    assert keeper.lost and not keeper.holds()


def lapse_during_provision(fake, on_lapse):
    """Script a provision whose provision command lets the lock's lease lapse on the server (revoked, as the
    server does when a lease ends unrenewed), then calls ``on_lapse``."""
    from flows import _lock

    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M))

    def provision(host, argv):
        keeper = _lock._held.get()
        assert keeper is not None
        _lock._release(keeper.lease_id)
        keeper.lost = True
        on_lapse()
        return CommandResult(host, argv, 0, "provisioned", "", 0.0)

    fake.script(M, ("puppet", "infrastructure", "provision"), responder=provision)


def test_a_lapsed_lease_is_taken_again_at_the_next_step_when_no_one_else_held_it(env, caplog):
    fake, _, _ = env
    lapse_during_provision(fake, lambda: None)
    from flows.provision_replica import provision_replica

    assert provision_replica(sync_timeout_s=30)["replica"] == R  # the step finished, and the procedure went on
    assert f"{TAKEN_AGAIN}: pe-ha:unit" in caplog.text


def test_a_lapsed_lease_another_run_held_meanwhile_stops_before_the_next_step(env):
    from prefect.variables import Variable

    fake, _, _ = env

    def another_run_came_and_went():
        Variable.set("pe-ha-lock-holder-unit", {"released": "0b6a1a3e-0000-4000-8000-000000000002"}, overwrite=True)

    lapse_during_provision(fake, another_run_came_and_went)
    from flows.provision_replica import provision_replica

    state = provision_replica(sync_timeout_s=30, return_state=True)
    assert state.is_failed() and "another run held the lock meanwhile" in state.message
    provisioned = [i for i, c in enumerate(fake.calls) if c.argv[:3] == ("puppet", "infrastructure", "provision")]
    assert len(provisioned) == 1
    after = [c for c in fake.calls[provisioned[0] + 1:] if c.host == M and "status" not in c.argv]
    summary = latest_artifact("provision-replica-summary")
    assert "stopped before step" in summary and "| puppet infrastructure provision replica | " in summary
    assert not [c for c in after if c.argv[:2] == ("puppet", "agent")]  # nothing after the boundary ran
