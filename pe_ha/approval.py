"""Who may approve a destructive step: the installation's approval policy, decided from facts alone.

The policy is a worker setting (``PEHA_APPROVAL_POLICY``), never a run parameter: whoever starts a run
cannot weaken it. An identified approver is a PE login that RBAC confirmed for a token sealed to the
paused run (``pe_ha.sealing``); a name typed into the UI's form is not an identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The key, in the paused run's inputs, of the public half of its sealing key (read by `pe-ha approve`).
SEALING_KEY_INPUT = "pe-ha-approval-key"
# The key, in a run's inputs, of the login `pe-ha run` confirmed with RBAC for the person who started it.
STARTED_BY_INPUT = "pe-ha-started-by"

APPROVE_COMMAND = "pe-ha approve {run} --token-file FILE (the approver's own RBAC token)"


class ApprovalPolicy(StrEnum):
    ANY = "any"
    IDENTIFIED = "identified"
    TWO_PERSON = "two-person"

    @property
    def needs_identity(self) -> bool:
        return self is not ApprovalPolicy.ANY

    def describe(self) -> str:
        return {
            ApprovalPolicy.ANY: "any: an approval names its operator (typed in the UI or given to `pe-ha approve`)",
            ApprovalPolicy.IDENTIFIED: "identified: only `pe-ha approve` with the approver's own RBAC token; "
                                       "the UI's form is refused",
            ApprovalPolicy.TWO_PERSON: "two-person: only `pe-ha approve` with the approver's own RBAC token, and "
                                       "never the PE user who started the run",
        }[self]


@dataclass(frozen=True)
class Answer:
    """One answer to an approval pause, after the run checked any sealed token with RBAC."""

    approve: bool
    typed: str  # the operator name as typed; not an identity
    login: str | None  # the PE login RBAC confirmed, or None
    comment: str = ""

    @property
    def who(self) -> str:
        if self.login is None:
            return f"{self.typed} (not identified)"
        if self.typed and self.typed != self.login:
            return f"PE user {self.login} (typed {self.typed!r})"
        return f"PE user {self.login}"


def up_front_problem(policy: ApprovalPolicy) -> str | None:
    """Why the ``approve=true`` parameter, an approval with no identity, is refused under ``policy``."""
    if not policy.needs_identity:
        return None
    return (f"approve=true is an approval without an identity, and the approval policy is {policy.value!r}: "
            "start the run without it, and approve the pause with `pe-ha approve RUN --token-file FILE`")


def answer_problem(policy: ApprovalPolicy, answer: Answer, *, run: str, started_by: str | None) -> str | None:
    """Why ``answer`` cannot approve under ``policy`` (None: it can). A rejection is always taken: it changes
    nothing and ends the run."""
    if not answer.approve or not policy.needs_identity:
        return None
    if answer.login is None:
        return (f"the approval policy is {policy.value!r} and this approval has no PE identity "
                f"({answer.typed or 'no name'} came from the UI's form or the API): approve with "
                + APPROVE_COMMAND.format(run=run))
    if policy is ApprovalPolicy.TWO_PERSON and started_by is not None and answer.login == started_by:
        return (f"the approval policy is 'two-person' and PE user {answer.login} started this run: another PE "
                "user must approve it with " + APPROVE_COMMAND.format(run=run))
    return None


def starter_note(policy: ApprovalPolicy, started_by: str | None) -> str | None:
    """What the summary says about the starter's identity, where the policy depends on it."""
    if policy is not ApprovalPolicy.TWO_PERSON:
        return None
    if started_by is None:
        return ("this run was started with no PE identity (not by `pe-ha run --token-file`), so any identified "
                "approver could approve it, including whoever started it")
    return f"started by PE user {started_by}; the two-person policy kept that user from approving"
