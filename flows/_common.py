"""What every procedure flow shares: input checks, the plan for dry runs, topology, steps and the summary."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field

from pe_ha import runtime
from pe_ha.errors import ApprovalRejected, ConfigurationError, PeHaError, PreconditionFailed, ValidationError
from pe_ha.masking import mask
from pe_ha.validation import hostname
from tasks import infrastructure


def log():
    try:
        return get_run_logger()
    except Exception:  # called outside a run in unit tests
        import logging

        return logging.getLogger("pe_ha.flows")


def inventory_host(name: str | None, *, default: str | None, what: str) -> str:
    """Validate a host parameter: an RFC 1123 name that is in the inventory."""
    if name is None:
        if default is None:
            raise ValidationError(f"{what}: no host given and none configured")
        name = default
    return runtime.settings().host(hostname(name, what=what)).name


def distinct(a: str, b: str, what: str) -> None:
    if a == b:
        raise ValidationError(f"{what}: {a} cannot be both the master and the replica")


def master_and_replica(master: str | None = None, replica: str | None = None) -> tuple[str, str]:
    """The master and the replica a procedure works on: the parameters, else the inventory's; never one host."""
    s = runtime.settings()
    master = inventory_host(master, default=s.master.name, what="master")
    replica = inventory_host(replica, default=s.replica.name if s.replica else None, what="replica")
    distinct(master, replica, "replica")
    return master, replica


@dataclass
class Runbook:
    """The record of one procedure run: the steps it took, and the summary artifact."""

    procedure: str
    target: str
    steps: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def step(self, name: str, host: str = "") -> Iterator[None]:
        started = time.monotonic()
        record = {"step": name, "host": host, "outcome": "running", "seconds": 0.0}
        self.steps.append(record)
        try:
            yield
            record["outcome"] = "done"
        except BaseException as exc:
            record["outcome"] = f"FAILED: {type(exc).__name__}"
            raise
        finally:
            record["seconds"] = round(time.monotonic() - started, 2)

    def skip(self, name: str, why: str) -> None:
        self.steps.append({"step": name, "host": "", "outcome": f"skipped ({why})", "seconds": 0.0})

    def publish_summary(self, *, outcome: str, next_steps: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
        total = time.monotonic() - self.started
        md = [f"# {self.procedure}: {outcome}", "", f"Target: `{self.target}` — total {total:.1f} s", "",
              "| step | host | outcome | seconds |", "|---|---|---|---|"]
        md += [f"| {s['step']} | {s['host']} | {s['outcome']} | {s['seconds']} |" for s in self.steps]
        if notes:
            md += ["", "## Notes", *[f"- {mask(n)}" for n in notes]]
        if next_steps:
            md += ["", "## What to do next", *[f"1. {n}" for n in next_steps]]
        text = "\n".join(md)
        create_markdown_artifact(key=f"{self.procedure}-summary", markdown=text,
                                 description=f"{self.procedure} on {self.target}: {outcome}")
        return text


def show_topology(label: str, candidates: Sequence[str]) -> list[dict]:
    """Log the HA topology from ``puppet infrastructure status`` on the first host that answers."""
    for host in candidates:
        try:
            entries = infrastructure.infrastructure_status.fn(host)
        except PeHaError as exc:
            log().info("topology %s: status on %s not available (%s)", label, host, exc.message)
            continue
        by_host: dict[str, list[str]] = {}
        for e in entries:
            by_host.setdefault(f"{e.get('server')} ({e.get('type')})", []).append(f"{e.get('display_name')}={e.get('state')}")
        lines = [f"  {h}: {', '.join(v)}" for h, v in by_host.items()]
        log().info("HA topology %s (from %s): %s\n%s", label, host, infrastructure.summarize(entries), "\n".join(lines))
        return entries
    log().warning("HA topology %s: no host answered puppet infrastructure status", label)
    return []


# -- approvals ------------------------------------------------------------------------------------------





class Approval(RunInput):
    """The operator's answer to a destructive step's pause."""

    approve: bool = Field(description="Approve the step shown in the pause? false rejects and ends the run with nothing done.")
    operator: str = Field(min_length=1, max_length=100, description="Who approves (recorded in the run's log).")
    comment: str = Field(default="", max_length=500, description="Optional note for the record.")


def require_approval(book: Runbook, what: str, *, approved_up_front: bool, timeout_s: int = 3600,
                     allows: str = "") -> str:
    """Pause for the operator's approval of ``what`` unless it was given up front. Raises ApprovalRejected.
    ``allows`` (markdown) shows what the approval lets run."""
    from prefect.flow_runs import pause_flow_run

    if approved_up_front:
        log().warning("APPROVED UP FRONT (approve=True): %s", what)
        book.skip("operator approval", "given up front by parameter")
        return "parameter"
    allowed = f"## Approving lets these steps run\n\n{mask(allows)}\n\n" if allows else ""
    create_markdown_artifact(key=f"{book.procedure}-approval", markdown=f"# Approval needed\n\n{what}\n\n{allowed}"
                             "Resume this run from the UI (or POST /api/flow_runs/<id>/resume) with approve=true to go on.",
                             description="waiting for approval")
    log().warning("waiting for approval: %s", what)
    poll = int(os.environ.get("PEHA_PAUSE_POLL_S", "2"))
    with book.step("operator approval"):
        answer = pause_flow_run(wait_for_input=Approval.with_initial_data(approve=False),
                                timeout=timeout_s, poll_interval=poll)
    if not answer.approve:
        raise ApprovalRejected(f"{answer.operator} rejected: {what}" + (f" ({answer.comment})" if answer.comment else ""))
    log().warning("approved by %s: %s %s", answer.operator, what, f"({answer.comment})" if answer.comment else "")
    return answer.operator


def run_name(procedure: str, parameter: str, fallback: str):
    """A flow_run_name callable: ``<procedure>/<host>``, using the configured host when the parameter is empty."""

    def name() -> str:
        from prefect.runtime import flow_run

        value = (flow_run.parameters or {}).get(parameter)
        if not value:
            try:
                s = runtime.settings()
                value = {"master": s.master.name, "replica": s.replica.name if s.replica else "?"}.get(fallback, fallback)
            except PeHaError:
                value = fallback
        return f"{procedure}/{value}"

    return name


# -- one procedure at a time per PE installation ----------------------------------------------------------



_lock_held: contextvars.ContextVar[bool] = contextvars.ContextVar("pe_ha_lock_held", default=False)
LOCK_LEASE_S = 60  # Prefect's minimum; a crashed holder frees the lock within about a minute
LOCK_ATTEMPTS = 3  # a timed-out wait for a lock that turns out free is asked again, at most this often


def lock_name(installation: str) -> str:
    return f"pe-ha:{installation}"


def _holder_variable(installation: str) -> str:
    return f"pe-ha-lock-holder-{installation}"


# The procedures that take the lock: a run of one of these, running or paused, is the holder.
LOCKING_PROCEDURES = ("provision-replica", "copy-puppetdb", "enable-replica", "promote-replica",
                      "enable-ha-failover", "forget-replica", "reinitialize-replica", "configure-agent-failover")


def _lock_is_taken(name: str) -> bool:
    """Whether the lock's slot is occupied now; when that cannot be read, it is taken (the refusal stands)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
        return limit.active_slots >= limit.limit
    except Exception as exc:
        log().debug("could not read the %s lock's slots: %s", name, exc)
        return True


def _who_holds(installation: str) -> str:
    """The run that holds the lock, as a waiter that timed out can tell: the holder's note, written as soon
    as the lock is taken, when the run it names is still active; otherwise (a note marked released, or
    none) the active run of a locking procedure of this installation."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import deployment, flow_run
    from prefect.variables import Variable

    active = {StateType.RUNNING, StateType.PAUSED}
    try:
        stored = Variable.get(_holder_variable(installation), default=None)
        note: dict[str, Any] = stored if isinstance(stored, dict) else {}
        with get_client(sync_client=True) as client:
            if note.get("id"):
                noted = client.read_flow_run(note["id"])
                if noted.state is not None and noted.state.type in active and str(noted.id) != str(flow_run.id):
                    return f"{note['name']} ({note['procedure']}, flow run {note['id']})"
            # Runs from deployments belong to the installation their deployment is named after.
            same_installation = (DeploymentFilter(name=DeploymentFilterName(any_=[installation]))
                                 if deployment.name else None)
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=sorted(active)))),
                deployment_filter=same_installation, limit=50)
        gone = {str(flow_run.id), str(note.get("released"))}
        holders = [r for r in runs if str(r.id) not in gone and any(r.name.startswith(p + "/") for p in LOCKING_PROCEDURES)]
        if holders:
            r = holders[0]
            return f"{r.name} (flow run {r.id})"
    except Exception as exc:  # the holder's name is informational; the refusal stands without it
        log().debug("could not tell who holds the lock: %s", exc)
    return "a run whose name could not be read"


def _note_holder(installation: str, procedure: str) -> None:
    try:
        from prefect.runtime import flow_run
        from prefect.variables import Variable

        Variable.set(_holder_variable(installation),
                     {"name": flow_run.name, "procedure": procedure, "id": str(flow_run.id)}, overwrite=True)
    except Exception as exc:  # informational only
        log().debug("could not record the lock holder: %s", exc)


def _note_released(installation: str) -> None:
    """Before the lock goes: this run, still Running for a moment, must not be named by the next waiter."""
    try:
        from prefect.runtime import flow_run
        from prefect.variables import Variable

        Variable.set(_holder_variable(installation), {"released": str(flow_run.id)}, overwrite=True)
    except Exception as exc:  # informational only
        log().debug("could not record the lock's release: %s", exc)


def check_run_is_for_this_installation(installation: str) -> None:
    """A run from a deployment must run with its installation's settings: the deployment is named after the
    installation, and only that installation's worker (with its settings) serves its work queue."""
    from prefect.runtime import deployment

    name = deployment.name
    if name and name != installation:
        raise ConfigurationError("PEHA_INSTALLATION",
            f"this run comes from the deployment for installation {name!r}, but the worker running it has the "
            f"settings of installation {installation!r}; nothing was changed",
            hint=f"run {name!r}'s worker with its own settings, serving only its queue: "
                 f"prefect worker start --pool pe-ha --work-queue {name}")


def installation_lock(procedure: str):
    """Decorator: the flow body runs holding the installation's global concurrency limit (limit 1, strict).

    A missing limit is an error (strict=True), never a silent pass. A second procedure waits up to
    PEHA_LOCK_WAIT_S, then fails naming the run that holds the lock. Subflows of a holder do not re-lock.
    Dry runs run nothing, so they take no lock.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if _lock_held.get():
                return fn(*args, **kwargs)
            s = runtime.settings()
            check_run_is_for_this_installation(s.installation)
            if kwargs.get("dry_run"):
                return fn(*args, **kwargs)
            name = lock_name(s.installation)
            wait = float(os.environ.get("PEHA_LOCK_WAIT_S", "900"))
            from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError

            for attempt in range(LOCK_ATTEMPTS):
                try:
                    with concurrency(name, occupy=1, timeout_seconds=wait, strict=True, lease_duration=LOCK_LEASE_S):
                        # Recorded with the lock, before any step: a waiter that gives up names this run.
                        _note_holder(s.installation, procedure)
                        token = _lock_held.set(True)
                        try:
                            log().info("holding the %s lock for %s", name, procedure)
                            return fn(*args, **kwargs)
                        finally:
                            _lock_held.reset(token)
                            _note_released(s.installation)
                except AcquireConcurrencySlotTimeoutError:
                    if attempt + 1 < LOCK_ATTEMPTS and not _lock_is_taken(name):
                        # The wait went on the server's answers (SQLite's "database is locked" is retried with
                        # backoff), not on a holder: refusing would name a holder that does not exist.
                        log().warning("the %s lock was free, but the server did not grant it within %g s; "
                                      "asking again", name, wait)
                        continue
                    raise PreconditionFailed(
                        f"another procedure holds the {name} lock: {_who_holds(s.installation)}; waited {wait:g} s",
                        hint="wait for that run to finish (or cancel it), then start this one again") from None
                except ConcurrencySlotAcquisitionError as exc:
                    raise PreconditionFailed(f"the concurrency limit {name} is missing ({exc})",
                                             hint="run `pe-ha setup` to create it") from None
            raise AssertionError("unreachable: the last attempt returns or raises")

        # Flow modules do not use `from __future__ import annotations`: Prefect builds the parameter
        # schema from these (wrapped) annotations, which must be real types, not strings.
        return wrapper

    return decorate




def remove_token_best_effort(host: str) -> None:
    """Remove the staged token in a ``finally``: a failure here must not hide the run's real outcome."""
    from tasks import token

    try:
        token.remove_staged_token(host)
    except Exception as exc:  # the host may be unreachable; tell the operator what is left behind
        log().error("could not remove the staged RBAC token from %s (%s): delete %s there by hand", host, exc,
                    runtime.settings().remote_token_file)
