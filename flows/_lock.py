"""One procedure at a time per PE installation: the lock, its lease, and what happens when the lease is lost.

The lock is the global concurrency limit ``pe-ha:<installation>`` (limit 1), taken strictly: a missing limit
is an error, never a silent pass. Its lease is kept by pe-ha, not by Prefect's renewal thread: Prefect's gives
up after three failed renewals and then either cancels the run in the middle of a step or lets it run on
without the lock. pe-ha's keeper retries for as long as the run holds the lock, and whether the lock still
holds is decided only between steps (``at_step_boundary``): a step already running always finishes. Before
the next step, a lease that lapsed is taken again when no other run held the lock meanwhile; otherwise the
procedure stops there, with the finished steps in its summary.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from flows._common import log
from pe_ha.context import RunContext
from pe_ha.errors import ConfigurationError, LockLost, PreconditionFailed

LOCK_LEASE_S = 60  # Prefect's minimum; a crashed holder frees the lock within about a minute
LOCK_ATTEMPTS = 3  # a timed-out wait for a lock that turns out free is asked again, at most this often
RENEW_EVERY_S = LOCK_LEASE_S / 4  # three more tries fit in a lease after a failed one
RETRY_AFTER_S = 2.0
# How the keeper's two ways through a server outage begin in the run's log (the fault tests read them there).
RENEWED_AFTER_FAILURES = "the lock's lease is renewed again after"
TAKEN_AGAIN = "took the lock again"
MARGIN_S = 5.0  # a lease this close to its end counts as lapsed: the next step could outlive it
# At a step boundary, a slot not free by then is held by someone else. After a server restart, the server's
# repossessor frees an expired lease's slot within seconds (leases on disk; measured about 10 s).
REACQUIRE_WAIT_S = LOCK_LEASE_S + 30

# The procedures that take the lock: a run of one of these, running or paused, is the holder.
LOCKING_PROCEDURES = ("provision-replica", "copy-puppetdb", "enable-replica", "promote-replica",
                      "enable-ha-failover", "forget-replica", "reinitialize-replica", "configure-agent-failover")

_held: contextvars.ContextVar[LeaseKeeper | None] = contextvars.ContextVar("pe_ha_lease_keeper", default=None)


def lock_name(installation: str) -> str:
    return f"pe-ha:{installation}"


def _holder_variable(installation: str) -> str:
    return f"pe-ha-lock-holder-{installation}"


def _renew_with_prefect(lease_id: UUID, duration: float) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.renew_concurrency_lease(lease_id=lease_id, lease_duration=duration)


def _is_gone(exc: BaseException) -> bool:
    """The server's answer that the lease no longer exists (it expired and was revoked)."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    if isinstance(exc, ObjectNotFound):
        return True
    return isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code in (404, 410)


@dataclass
class LeaseKeeper:
    """Renews the lock's lease in a thread, never giving up while the run holds the lock."""

    lease_id: UUID
    duration: float = LOCK_LEASE_S
    renew: Callable[[UUID, float], None] = _renew_with_prefect
    clock: Callable[[], float] = time.monotonic
    lost: bool = False  # the server said the lease is gone
    failures: int = 0
    last_renewed: float = field(default=0.0)
    # Taken where the keeper is made (the flow's context): its thread has none, and the run's log must hear it.
    logger: Any = field(default_factory=log)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.last_renewed = self.clock()

    def renew_once(self) -> bool:
        try:
            self.renew(self.lease_id, self.duration)
        except Exception as exc:  # any failure is retried; only the step boundary decides what it means
            if _is_gone(exc):
                self.lost = True
            self.failures += 1
            if self.failures == 1 or self.lost:
                self.logger.warning("could not renew the lock's lease (%s: %s); retrying, and the next step starts "
                              "only if the lock still holds", type(exc).__name__, exc)
            return False
        if self.failures:
            self.logger.info("%s %d failed attempts", RENEWED_AFTER_FAILURES, self.failures)
        self.failures, self.last_renewed = 0, self.clock()
        return True

    def holds(self) -> bool:
        return not self.lost and self.clock() - self.last_renewed < self.duration - MARGIN_S

    def replace(self, lease_id: UUID) -> None:
        self.lease_id, self.lost, self.failures, self.last_renewed = lease_id, False, 0, self.clock()

    def start(self) -> LeaseKeeper:
        def loop() -> None:
            wait = RENEW_EVERY_S
            while not self._stop.wait(wait):
                wait = RENEW_EVERY_S if self.renew_once() else RETRY_AFTER_S

        self._thread = threading.Thread(target=loop, name="pe-ha-lease-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _acquire(name: str, timeout_s: float, holder_id: str | None) -> UUID:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency._sync import acquire_concurrency_slots_with_lease

    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(holder_id)) if holder_id else None
    response = acquire_concurrency_slots_with_lease([name], 1, timeout_seconds=timeout_s, strict=True,
                                                    lease_duration=LOCK_LEASE_S, holder=holder)
    return response.lease_id


def _release(lease_id: UUID) -> None:
    from prefect.concurrency._sync import release_concurrency_slots_with_lease

    try:
        release_concurrency_slots_with_lease(lease_id)
    except Exception as exc:  # an unreleased lease expires by itself within LOCK_LEASE_S
        log().warning("could not release the lock's lease (%s); it expires within %d s", exc, LOCK_LEASE_S)


def _this_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _noted_holder(installation: str) -> dict:
    from prefect.variables import Variable

    stored = Variable.get(_holder_variable(installation), default=None)
    return stored if isinstance(stored, dict) else {}


def at_step_boundary(ctx: RunContext, next_step: str) -> None:
    """Before ``next_step``: go on only while this run holds the lock. A lapsed lease is taken again when the
    slot is free and no other run held it meanwhile (the holder's note still names this run); otherwise
    LockLost, and the procedure stops here with nothing of ``next_step`` done."""
    keeper = _held.get()
    if keeper is None or keeper.holds():
        return
    s = ctx.settings
    name = lock_name(s.installation)
    run_id = _this_run_id()
    log().warning("the %s lock's lease lapsed (%s); taking it again before step %r",
                  name, "revoked by the server" if keeper.lost else f"{keeper.failures} failed renewals", next_step)
    deadline = time.monotonic() + s.lock_wait_s
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError

    while True:
        try:
            lease_id = _acquire(name, REACQUIRE_WAIT_S, run_id)
            break
        except AcquireConcurrencySlotTimeoutError:
            raise LockLost(f"the {name} lock's lease lapsed and another run holds the lock now "
                           f"({_who_holds(s.installation)}); stopped before step {next_step!r}",
                           hint=_resume_hint(next_step)) from None
        except Exception as exc:  # the server is still away: wait for it, up to the lock wait
            if time.monotonic() >= deadline:
                raise LockLost(f"the Prefect server did not answer for {s.lock_wait_s:g} s, so the {name} lock "
                               f"could not be confirmed ({exc}); stopped before step {next_step!r}",
                               hint=_resume_hint(next_step)) from None
            time.sleep(RETRY_AFTER_S)
    note = _noted_holder(s.installation)
    if run_id and note.get("id") != run_id:
        _release(lease_id)
        raise LockLost(f"the {name} lock's lease lapsed and another run held the lock meanwhile ({note}); "
                       f"stopped before step {next_step!r}", hint=_resume_hint(next_step))
    keeper.replace(lease_id)
    log().warning("%s: %s (no other run held it meanwhile); going on with step %r", TAKEN_AGAIN, name, next_step)


def _resume_hint(next_step: str) -> str:
    return (f"nothing of step {next_step!r} ran. Check the installation (`pe-ha status`, verify-health), then start "
            "the procedure again, with start_at at this step's phase where the procedure offers one")


def _lock_is_taken(name: str) -> bool:
    """Whether the lock's slot is occupied now; when that cannot be read, it is taken (the refusal stands)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
        return limit.active_slots >= limit.limit
    except Exception as exc:  # unreadable counts as taken: the refusal stands
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

    active = {StateType.RUNNING, StateType.PAUSED}
    try:
        note = _noted_holder(installation)
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
    return ("no active run of a locking procedure: if none is running, the slot outlived its holder (a Prefect "
            "server restarted with its leases in memory); see `prefect gcl inspect` and the README's lock section")


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
    """Decorator: the flow body runs holding the installation's lock (see the module's docstring).

    A second procedure waits up to the ``lock_wait_s`` setting, then fails naming the run that holds the lock.
    Subflows of a holder do not re-lock. Dry runs run nothing, so they take no lock.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(ctx: RunContext, *args, **kwargs):
            if _held.get() is not None:
                return fn(ctx, *args, **kwargs)
            s = ctx.settings
            check_run_is_for_this_installation(s.installation)
            if kwargs.get("dry_run"):
                return fn(ctx, *args, **kwargs)
            name = lock_name(s.installation)
            keeper = LeaseKeeper(_take(name, s.lock_wait_s, s.installation)).start()
            # Recorded with the lock, before any step: a waiter that gives up names this run.
            _note_holder(s.installation, procedure)
            token = _held.set(keeper)
            try:
                log().info("holding the %s lock for %s", name, procedure)
                return fn(ctx, *args, **kwargs)
            finally:
                _held.reset(token)
                keeper.stop()
                _note_released(s.installation)
                _release(keeper.lease_id)

        # Flow modules do not use `from __future__ import annotations`: Prefect builds the parameter
        # schema from these (wrapped) annotations, which must be real types, not strings.
        return wrapper

    return decorate


def _take(name: str, wait: float, installation: str) -> Any:
    """The lock's first lease: wait up to ``wait`` seconds for it, else refuse naming the holder."""
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError

    for attempt in range(LOCK_ATTEMPTS):
        try:
            return _acquire(name, wait, _this_run_id())
        except AcquireConcurrencySlotTimeoutError:
            if attempt + 1 < LOCK_ATTEMPTS and not _lock_is_taken(name):
                # The wait went on the server's answers (SQLite's "database is locked" is retried with
                # backoff), not on a holder: refusing would name a holder that does not exist.
                log().warning("the %s lock was free, but the server did not grant it within %g s; asking again",
                              name, wait)
                continue
            raise PreconditionFailed(
                f"another procedure holds the {name} lock: {_who_holds(installation)}; waited {wait:g} s",
                hint="wait for that run to finish (or cancel it), then start this one again") from None
        except ConcurrencySlotAcquisitionError as exc:
            raise PreconditionFailed(f"the concurrency limit {name} is missing ({exc})",
                                     hint="run `pe-ha setup` to create it") from None
    raise AssertionError("unreachable: the last attempt returns or raises")
