"""One procedure at a time per installation: the lock, and the refusal that names the run holding it."""

from __future__ import annotations

import contextlib

import pytest

from pe_ha.executor import CommandResult
from tests.conftest import status_json

M, R, A1, A2 = "master.example.com", "replica.example.com", "agent1.example.com", "agent2.example.com"
TF = "/root/.puppetlabs/pe-ha.token"

pytestmark = pytest.mark.usefixtures("prefect_harness")


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
    monkeypatch.setenv("PEHA_LOCK_WAIT_S", "1")
    from flows.provision_replica import provision_replica

    holder = threading.Thread(target=lambda: provision_replica(sync_timeout_s=30))
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

    import flows._common as common

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
    monkeypatch.setenv("PEHA_LOCK_WAIT_S", "1")
    from flows.verify_health import verify_health

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
    from prefect.concurrency.sync import concurrency as real_concurrency

    import flows._common as common

    fake, _, _ = env
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M))
    asked = []

    def slow_then_granted(*args, **kwargs):
        asked.append(kwargs["timeout_seconds"])
        if len(asked) == 1:
            raise AcquireConcurrencySlotTimeoutError("timed out")
        return real_concurrency(*args, **kwargs)

    monkeypatch.setattr(common, "concurrency", slow_then_granted)
    from flows.provision_replica import provision_replica

    assert provision_replica(sync_timeout_s=30)["replica"] == R
    assert len(asked) == 2


def test_a_wait_that_timed_out_on_a_held_lock_is_refused_at_once(env, monkeypatch):
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError

    import flows._common as common

    fake, _, _ = env
    asked = []

    def held(*args, **kwargs):
        asked.append(1)
        raise AcquireConcurrencySlotTimeoutError("timed out")

    monkeypatch.setattr(common, "concurrency", held)
    monkeypatch.setattr(common, "_lock_is_taken", lambda name: True)
    from flows.forget_replica import forget_replica

    state = forget_replica(approve=True, return_state=True)
    assert state.is_failed() and "holds the pe-ha:unit lock" in state.message
    assert len(asked) == 1 and fake.calls == []
