"""Approvals tied to a PE identity: the sealed token, the policy's decisions and the pause that applies them."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr

from pe_ha import context
from pe_ha.approval import STARTED_BY_INPUT, Answer, ApprovalPolicy, answer_problem, up_front_problem
from pe_ha.errors import ConfigurationError, ValidationError
from pe_ha.sealing import SealingKey, seal
from tests.conftest import make_settings

RUN = "3f0c8a52-0000-4000-8000-000000000001"
ANY, IDENTIFIED, TWO = ApprovalPolicy.ANY, ApprovalPolicy.IDENTIFIED, ApprovalPolicy.TWO_PERSON


# -- the sealed token ---------------------------------------------------------------------------------------

def test_a_sealed_token_opens_only_with_its_key_and_its_run():
    key = SealingKey.new()
    sealed = seal(key.public, SecretStr("tok-alice"), context=RUN)
    assert "tok-alice" not in sealed
    assert key.open(sealed, context=RUN).get_secret_value() == "tok-alice"
    with pytest.raises(ValidationError, match="does not open with this run's key"):
        key.open(sealed, context=RUN.replace("1", "2"))  # replayed to another run
    with pytest.raises(ValidationError, match="does not open"):
        SealingKey.new().open(sealed, context=RUN)  # an earlier pause's key
    raw = bytearray(__import__("base64").b64decode(sealed))
    raw[-1] ^= 1
    with pytest.raises(ValidationError, match="altered"):
        key.open(__import__("base64").b64encode(bytes(raw)).decode(), context=RUN)
    with pytest.raises(ValidationError):
        key.open("not base64 at all!", context=RUN)


def test_sealing_to_something_that_is_not_a_key_is_refused():
    with pytest.raises(ValidationError, match="not a key"):
        seal("bm90IGEga2V5", SecretStr("t"), context=RUN)


# -- the policy's decisions ----------------------------------------------------------------------------------

TYPED = Answer(True, "alice", None)
ALICE = Answer(True, "alice", "alice")
BOB = Answer(True, "bob", "bob")
REJECT_TYPED = Answer(False, "mallory", None)


@pytest.mark.parametrize("policy, answer, started_by, refused_with", [
    (ANY, TYPED, None, None),
    (ANY, ALICE, "alice", None),  # the any policy never looks at the starter
    (IDENTIFIED, TYPED, None, "has no PE identity"),
    (IDENTIFIED, ALICE, "alice", None),  # identified allows approving one's own run
    (IDENTIFIED, REJECT_TYPED, None, None),  # a rejection is always taken
    (TWO, TYPED, None, "has no PE identity"),
    (TWO, ALICE, "alice", "PE user alice started this run"),
    (TWO, BOB, "alice", None),
    (TWO, ALICE, None, None),  # started with no identity: any identified approver
    (TWO, REJECT_TYPED, "alice", None),
])
def test_answer_problem(policy, answer, started_by, refused_with):
    problem = answer_problem(policy, answer, run=RUN, started_by=started_by)
    if refused_with is None:
        assert problem is None
    else:
        assert problem is not None and refused_with in problem
        assert f"pe-ha approve {RUN} --token-file FILE" in problem  # every refusal says what to do


def test_approve_up_front_is_refused_where_an_identity_is_needed():
    assert up_front_problem(ANY) is None
    for policy in (IDENTIFIED, TWO):
        problem = up_front_problem(policy)
        assert problem and repr(policy.value) in problem and "pe-ha approve" in problem


def test_the_policy_is_a_setting_and_a_wrong_one_is_refused(tmp_path):
    assert make_settings(tmp_path).approval_policy is ANY
    assert make_settings(tmp_path, approval_policy="two-person").approval_policy is TWO
    with pytest.raises(ConfigurationError, match="PEHA_APPROVAL_POLICY.*'any', 'identified' or 'two-person'"):
        make_settings(tmp_path, approval_policy="nobody")


# -- the pause, in a flow run ---------------------------------------------------------------------------------

LOGINS = {"tok-alice": "alice", "tok-bob": "bob"}


def rbac_api(settings):
    """A PEApi whose RBAC knows two users' tokens; any other token is revoked."""
    from pe_ha.pe_api import PEApi

    def handler(request: httpx.Request) -> httpx.Response:
        token = json.loads(request.content).get("token")
        if request.url.path == "/rbac-api/v2/auth/token/authenticate" and token in LOGINS:
            return httpx.Response(200, json={"login": LOGINS[token], "expiration": "2099-01-01T00:00:00Z"})
        return httpx.Response(403, json={"kind": "puppetlabs.rbac/token-revoked", "msg": "revoked"})

    return PEApi(settings, transport=httpx.MockTransport(handler))


def run_pause(tmp_path, monkeypatch, policy: str, answers, *, started_by: str | None = None):
    """One flow run that pauses for approval under ``policy``; each pause gets the next answer, built from the
    key the run published (as `pe-ha approve` reads it). Returns (outcome or exception, log lines)."""
    import prefect.flow_runs
    from prefect import flow
    from prefect.client.orchestration import get_client

    import flows._approval as approval
    from flows._common import Runbook

    settings = make_settings(tmp_path, approval_policy=policy)
    pending = list(answers)
    logged: list[str] = []

    def pause_flow_run(wait_for_input, timeout, poll_interval):
        from prefect.runtime import flow_run

        with get_client(sync_client=True) as client:
            published = json.loads(client.read_flow_run_input(flow_run.id, "pe-ha-approval-key"))
        fields = pending.pop(0)(published["public_key"], str(flow_run.id))
        return wait_for_input(**fields)

    monkeypatch.setattr(prefect.flow_runs, "pause_flow_run", pause_flow_run)
    monkeypatch.setattr(approval, "log", lambda: type("L", (), {
        "warning": lambda self, *a: logged.append(a[0] % a[1:]), "error": lambda self, *a: logged.append(a[0] % a[1:]),
        "debug": lambda self, *a: None})())

    @flow(name="approval-under-test")
    def paused() -> str:
        from prefect.runtime import flow_run

        if started_by:
            with get_client(sync_client=True) as client:
                client.create_flow_run_input(flow_run.id, STARTED_BY_INPUT, json.dumps(started_by))
        return approval.require_approval(ctx, Runbook("test", "t"), "forget the replica", approved_up_front=False)

    with context.using(settings=settings, api=rbac_api(settings)) as ctx:
        try:
            return paused(), logged, pending
        except Exception as exc:  # the outcome under test
            return exc, logged, pending


def typed(name, approve=True):
    return lambda public, run: {"approve": approve, "operator": name}


def sealed(token, approve=True, name="x"):
    return lambda public, run: {"approve": approve, "operator": name,
                                "sealed_token": seal(public, SecretStr(token), context=run)}


def sealed_for_other_run(token):
    return lambda public, run: {"approve": True, "operator": "x",
                                "sealed_token": seal(public, SecretStr(token), context=RUN)}


@pytest.mark.usefixtures("prefect_harness")
def test_any_policy_takes_a_typed_name(tmp_path, monkeypatch):
    outcome, logged, left = run_pause(tmp_path, monkeypatch, "any", [typed("alice")])
    assert outcome == "alice (not identified)" and not left


@pytest.mark.usefixtures("prefect_harness")
def test_identified_refuses_the_form_and_replays_then_takes_rbacs_login(tmp_path, monkeypatch):
    outcome, logged, left = run_pause(tmp_path, monkeypatch, "identified", [
        typed("alice"), sealed_for_other_run("tok-alice"), sealed("tok-stolen"), sealed("tok-bob", name="alice")])
    assert outcome == "PE user bob (typed 'alice')" and not left  # RBAC's login, not the typed one
    refusals = [line for line in logged if "refused" in line]
    assert len(refusals) == 3
    assert "has no PE identity" in refusals[0]
    assert "does not open with this run's key" in refusals[1]
    assert "RBAC refused the approver's token" in refusals[2]
    assert not any("tok-" in line for line in logged)  # the token itself is never logged


@pytest.mark.usefixtures("prefect_harness")
def test_two_person_refuses_the_starter_and_takes_another_user(tmp_path, monkeypatch):
    outcome, logged, left = run_pause(tmp_path, monkeypatch, "two-person", [sealed("tok-alice"), sealed("tok-bob")],
                                      started_by="alice")
    assert outcome == "PE user bob (typed 'x')" and not left
    assert any("PE user alice started this run" in line for line in logged)


@pytest.mark.usefixtures("prefect_harness")
def test_a_rejection_is_taken_from_anyone_and_ends_the_run(tmp_path, monkeypatch):
    from pe_ha.errors import ApprovalRejected

    outcome, _, _ = run_pause(tmp_path, monkeypatch, "two-person", [typed("mallory", approve=False)],
                              started_by="alice")
    assert isinstance(outcome, ApprovalRejected) and "mallory (not identified) rejected" in outcome.message


@pytest.mark.usefixtures("prefect_harness")
def test_approve_true_is_refused_before_any_command_under_identified(tmp_path):
    from flows.forget_replica import forget_replica
    from pe_ha.fake_executor import FakeExecutor
    from tests.conftest import fake_pe_api

    settings = make_settings(tmp_path, approval_policy="identified")
    fake = FakeExecutor()
    with context.using(executor=fake, api=fake_pe_api(settings), settings=settings):
        state = forget_replica(approve=True, return_state=True)
    assert state.is_failed() and "approve=true is an approval without an identity" in state.message
    assert fake.calls == []


@pytest.mark.usefixtures("prefect_harness")
def test_an_approval_nobody_gives_in_time_fails_the_run_naming_the_step(tmp_path):
    """A pause past its timeout fails the run (so the failed-run automation alerts once), naming what waited."""
    from prefect import flow

    import flows._approval as approval
    from flows._common import Runbook
    from pe_ha.errors import ApprovalTimedOut

    settings = make_settings(tmp_path, approval_timeout_s=2, pause_poll_s=1)

    @flow(name="approval-nobody-gives")
    def paused() -> str:
        return approval.require_approval(ctx, Runbook("test", "t"), "forget the replica", approved_up_front=False)

    with context.using(settings=settings, api=rbac_api(settings)) as ctx:
        state = paused(return_state=True)
    assert state.is_failed()
    with pytest.raises(ApprovalTimedOut, match="no answer to the approval of 'forget the replica' within 2 s"):
        state.result()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # what the server keeps, and the alert reads
        stored = client.read_flow_run(state.state_details.flow_run_id).state
        history = client.read_flow_run_states(state.state_details.flow_run_id)
    assert stored.is_failed() and "no answer to the approval of 'forget the replica'" in stored.message
    assert [s.type.value for s in history].count("FAILED") == 1  # one Failed state: one alert
