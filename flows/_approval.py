"""The approval pause: who approved, checked against the installation's approval policy.

Under the ``any`` policy an approval names its operator, as typed. Under ``identified`` and ``two-person``,
only an approver whose own RBAC token the run itself confirmed is taken: ``pe-ha approve`` seals the token to
this pause (``pe_ha.sealing``), the run opens it and asks RBAC whose it is, and records the login, never the
token. A refused answer leaves the run paused for a valid one until the pause's timeout.
"""

from __future__ import annotations

import json
import threading
import time

from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from pydantic import Field

from flows._common import Runbook, log
from pe_ha.approval import (
    SEALING_KEY_INPUT,
    STARTED_BY_INPUT,
    Answer,
    ApprovalPolicy,
    answer_problem,
    starter_note,
    up_front_problem,
)
from pe_ha.context import RunContext
from pe_ha.errors import ApiError, ApiUnavailable, ApprovalRejected, ApprovalTimedOut, AuthError, ValidationError
from pe_ha.masking import mask
from pe_ha.sealing import SealingKey


class Approval(RunInput):
    """The operator's answer to a destructive step's pause."""

    approve: bool = Field(description="Approve the step shown in the pause? false rejects and ends the run with nothing done.")
    operator: str = Field(min_length=1, max_length=100, description="Who approves (recorded in the run's log).")
    comment: str = Field(default="", max_length=500, description="Optional note for the record.")
    sealed_token: str = Field(default="", max_length=4000,
                              description="Filled in by `pe-ha approve --token-file`: the approver's RBAC token, "
                                          "sealed to this pause. Leave it empty in the UI.")


def check_up_front(policy: ApprovalPolicy, approve: bool) -> None:
    """Refuse ``approve=true`` where the policy wants an identified approver: before anything runs."""
    problem = up_front_problem(policy) if approve else None
    if problem:
        raise ValidationError(problem)


def _run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id)


def _read_input(run_id: str, key: str) -> str | None:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return json.loads(client.read_flow_run_input(run_id, key))  # type: ignore[arg-type]
    except Exception as exc:  # absent (404) is the usual case: a run started without an identity
        log().debug("run input %s not read: %s", key, exc)
        return None


def _publish_key(run_id: str, public: str, policy: ApprovalPolicy, started_by: str | None) -> None:
    """The public half of this pause's key, where `pe-ha approve` reads it (replacing an earlier pause's)."""
    from prefect.client.orchestration import get_client

    value = json.dumps({"public_key": public, "policy": policy.value, "started_by": started_by})
    with get_client(sync_client=True) as client:
        try:
            client.delete_flow_run_input(run_id, SEALING_KEY_INPUT)  # type: ignore[arg-type]
        except Exception:  # the first pause of the run has no earlier key to replace
            pass
        client.create_flow_run_input(run_id, SEALING_KEY_INPUT, value)  # type: ignore[arg-type]


TIMED_OUT = "pe-ha: nobody answered before the approval timeout"
# Prefect's own pause timeout is only a backstop, past pe-ha's: when it expires, the server's FailExpiredPauses
# service may fail the run first, with its own message, and then the run's own Failed state is a second one.
BACKSTOP_S = 3600


class _Deadline:
    """At the approval's deadline, answer the pause with a rejection marked as the timeout (retried while the
    server is away), so that the run leaves its pause Running and fails once, with pe-ha's reason."""

    def __init__(self, run_id: str, at: float) -> None:
        self._run_id, self._at, self._done = run_id, at, threading.Event()
        self._thread = threading.Thread(target=self._fire, name="pe-ha-approval-deadline", daemon=True)

    def __enter__(self) -> _Deadline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)

    def _fire(self) -> None:
        from prefect.client.orchestration import get_client

        if self._done.wait(max(0.0, self._at - time.monotonic())):
            return
        while not self._done.is_set():
            try:
                with get_client(sync_client=True) as client:
                    client.resume_flow_run(self._run_id, run_input={  # type: ignore[arg-type]
                        "approve": False, "operator": "pe-ha", "comment": TIMED_OUT})
                return
            except Exception:  # the server may be away: the pause waits for this answer
                self._done.wait(5)


def _leave_expired_pause() -> None:
    """Once a pause has expired, the server turns any state the run proposes into Failed("The flow was failed and
    never resumed"), which names neither the pause nor the step. Leave the pause first (the run is running
    again), so that the run's one Failed state, and the one alert it raises, carry pe-ha's reason."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Running

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Running(), force=True)  # type: ignore[arg-type]
    except Exception as exc:  # the run still fails, with Prefect's own message
        log().warning("could not leave the expired pause: %s", exc)


def identify(ctx: RunContext, answer: Approval, key: SealingKey, run_id: str) -> tuple[Answer, str | None]:
    """The answer with the login RBAC confirms for its sealed token (if any), and why it cannot be used."""
    typed = Answer(answer.approve, answer.operator, None, answer.comment)
    if not answer.sealed_token:
        return typed, None
    try:
        login = ctx.api.login(key.open(answer.sealed_token, context=run_id))
    except ValidationError as exc:
        return typed, exc.message
    except AuthError as exc:
        return typed, f"RBAC refused the approver's token ({exc.message}): log in again with puppet-access login"
    except ApiUnavailable as exc:
        return typed, f"RBAC could not be asked whose the token is ({exc.message}); approve again when it answers"
    except ApiError as exc:
        return typed, exc.message
    return Answer(answer.approve, answer.operator, login, answer.comment), None


def require_approval(ctx: RunContext, book: Runbook, what: str, *, approved_up_front: bool, timeout_s: int | None = None,
                     allows: str = "") -> str:
    """Pause for the operator's approval of ``what`` unless it was given up front. Raises ApprovalRejected, or
    ApprovalTimedOut when no valid answer comes within ``timeout_s`` (default: the approval_timeout_s setting).
    ``allows`` (markdown) shows what the approval lets run. Returns who approved."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    s = ctx.settings
    policy = s.approval_policy
    timeout_s = timeout_s or s.approval_timeout_s
    if approved_up_front:
        check_up_front(policy, True)
        log().warning("APPROVED UP FRONT (approve=True): %s", what)
        book.notes.append("approved up front by the approve=true parameter (approval policy 'any')")
        book.skip("operator approval", "given up front by parameter")
        return "parameter"
    run_id = _run_id()
    started_by = _read_input(run_id, STARTED_BY_INPUT) if policy is ApprovalPolicy.TWO_PERSON else None
    key = SealingKey.new()
    _publish_key(run_id, key.public, policy, started_by)
    how = (f"`pe-ha approve {run_id} --token-file FILE` (your own RBAC token)" if policy.needs_identity else
           f"the UI's Resume button, or `pe-ha approve {run_id} --operator NAME`")
    policy_text = f"**Approval policy:** {policy.describe()}." + (
        f" Started by PE user {started_by}." if started_by else "")
    allowed = f"## Approving lets these steps run\n\n{mask(allows)}\n\n" if allows else ""
    create_markdown_artifact(key=f"{book.procedure}-approval",
                             markdown=f"# Approval needed\n\n{what}\n\n{policy_text}\n\n{allowed}Approve with {how}.",
                             description="waiting for approval")
    log().warning("waiting for approval (policy %s): %s", policy.value, what)
    deadline = time.monotonic() + timeout_s
    timed_out = ApprovalTimedOut(f"no answer to the approval of {what!r} within {timeout_s} s: nothing after the "
                                 "approval ran", hint="start the procedure again when an approver is there; "
                                                      "approvals wait PEHA_APPROVAL_TIMEOUT_S")
    with book.step("operator approval"), _Deadline(run_id, deadline):
        while True:
            remaining = max(1, int(deadline - time.monotonic()))
            try:
                raw = pause_flow_run(wait_for_input=Approval.with_initial_data(
                    description=f"{what}\n\n{policy_text} Approve with {how}.", approve=False),
                    timeout=remaining + BACKSTOP_S, poll_interval=s.pause_poll_s)
            except FlowPauseTimeout:  # the backstop: the deadline's own answer never arrived
                _leave_expired_pause()
                raise timed_out from None
            if raw.comment == TIMED_OUT and not raw.approve and time.monotonic() >= deadline - 1:
                raise timed_out
            answer, problem = identify(ctx, raw, key, run_id)
            if not answer.approve:
                break  # a rejection changes nothing and ends the run, whoever sends it
            problem = problem or answer_problem(policy, answer, run=run_id, started_by=started_by)
            if problem is None:
                break
            log().error("approval by %s refused, still waiting: %s", answer.who, problem)
    book.notes.append(f"{'approved' if answer.approve else 'rejected'} by {answer.who} under the approval policy "
                      f"{policy.value!r}")
    starter = starter_note(policy, started_by)
    if starter:
        book.notes.append(starter)
    if not answer.approve:
        raise ApprovalRejected(f"{answer.who} rejected: {what}" + (f" ({answer.comment})" if answer.comment else ""))
    log().warning("approved by %s: %s %s", answer.who, what, f"({answer.comment})" if answer.comment else "")
    return answer.who
