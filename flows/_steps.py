"""One declaration per step: the dry-run plan and the run both come from the same ``Step`` list.

A procedure declares its steps in the guide's order, each with the commands it will send, built once. A dry
run publishes those rows and runs nothing; a run executes the same steps, so the plan is the run. Cleanup
steps (``always``) also run after a failure; the summary artifact is published on every outcome.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from prefect.client.schemas.objects import State
from prefect.states import Cancelled

from flows import _history as history
from flows._approval import check_up_front, require_approval
from flows._common import Runbook, log
from flows._lock import at_step_boundary
from pe_ha.commands import Command
from pe_ha.context import RunContext
from pe_ha.errors import ApprovalRejected, PeHaError, PreconditionFailed, ValidationError
from pe_ha.forecast import ChangeWindow, Forecast, StepForecast, duration, window_minutes_problem
from pe_ha.masking import mask


@dataclass(frozen=True)
class Step:
    """One step of a procedure.

    ``commands`` are the (host, command) pairs the step sends, in order, built once and handed to its tasks.
    ``note`` says what the step does beyond them (an API read). A ``poll`` step sends its commands again until
    what it waits for holds. ``shown`` maps a stand-in a command carries (the snapshot a run exports) to how
    the plan names it. A ``subflow`` step runs another procedure, which plans its own steps. ``phase`` names the
    ``start_at`` choice the step belongs to: it is skipped when the run starts at a later one. A ``concurrent``
    step sends its commands at once, so they may arrive in any order. An ``approval``
    step pauses for the operator and shows the rows it would allow. An ``always`` step is cleanup: it runs
    at its place, or after a failure, once the step named by ``armed_by`` has started. ``needs`` names earlier
    steps whose results the action takes, in order, as its arguments (``None`` for one that did not finish,
    as a cleanup step may find). A ``timed`` step's action also takes ``expected_s``, the forecast's expected
    seconds for it (0 without a forecast): a long step's progress says how much of it is left.
    """

    key: str
    title: str
    host: str
    action: Callable[..., Any]
    commands: Sequence[tuple[str, Command]] = ()
    note: str = ""
    poll: bool = False
    shown: dict[str, str] = field(default_factory=dict)
    subflow: str = ""
    concurrent: bool = False
    destructive: bool = False
    approval: str = ""
    always: bool = False
    armed_by: str = ""
    phase: str | None = None
    needs: tuple[str, ...] = ()
    timed: bool = False

    def rows(self) -> list[dict]:
        flags = ", ".join(f for f, on in (("destructive", self.destructive), ("needs approval", bool(self.approval)),
                                         ("always runs", self.always), ("repeated until it holds", self.poll),
                                         (f"runs {self.subflow}", bool(self.subflow))) if on)
        common = {"key": self.key, "step": self.title, "poll": self.poll, "subflow": self.subflow,
                  "concurrent": self.concurrent, "flags": flags}
        out = [{**common, "host": host, "command": mask(self._shown(command.shell())), "argv": list(command.argv)}
               for host, command in self.commands]
        if self.note or not out:
            out.append({**common, "host": self.host, "command": mask(self.note or self.title), "argv": None})
        return out

    def _shown(self, text: str) -> str:
        for stand_in, name in self.shown.items():
            text = text.replace(stand_in, name)
        return text


def _starting(ctx: RunContext, procedure: str, step: Step) -> None:
    ctx.executor.step_started(procedure, step.key)


T = TypeVar("T")


def read_facts(ctx: RunContext, procedure: str, read: Callable[[], T], *, approve: bool | None = None) -> T:
    """Read what a procedure is planned from, before anything is planned or changed (a dry run reads them too):
    only reads run here. A procedure that asks for approval passes its ``approve``: an up-front approval the
    policy refuses is bad input, refused before any remote read."""
    if approve is not None:
        check_up_front(ctx.settings.approval_policy, approve)
    _starting(ctx, procedure, Step("facts", "read facts (read-only)", "", lambda: None))
    started = time.monotonic()
    facts = read()
    log().info("%s: facts read in %.1f s (reads only)", procedure, time.monotonic() - started)
    return facts


@dataclass(frozen=True)
class Finished:
    """How a procedure's run ended: ``completed``, with each step's result by key, or ``not approved``, with
    nothing after the approval done (the flow then ends Cancelled, saying why)."""

    outcome: Literal["completed", "not approved"]
    results: dict[str, Any]
    message: str = ""

    @property
    def completed(self) -> bool:
        return self.outcome == "completed"

    def cancelled(self) -> State:
        return Cancelled(message=self.message)


@dataclass(frozen=True)
class Outcome:
    """What the summary says when the procedure completes."""

    text: str
    next_steps: Sequence[str] = ()
    notes: Sequence[str] = ()


class ProgressLabels:
    """Writes a run's progress labels from a thread. On SQLite a write can wait seconds for the database (the
    server answers 503 and the client retries): a step must not wait for a label. Only the latest value is
    written; ``close`` waits a bounded time for it."""

    def __init__(self, flow_run_id: Any) -> None:
        self._flow_run_id = flow_run_id
        self._latest: dict[str, Any] | None = None
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._write_loop, name="pe-ha-progress-labels", daemon=True)
        self._thread.start()

    @classmethod
    def for_this_run(cls) -> ProgressLabels | None:
        from prefect.runtime import flow_run

        return cls(flow_run.id) if flow_run.id else None

    def set(self, labels: dict[str, Any]) -> None:
        with self._changed:
            self._latest = labels
            self._changed.notify()

    def close(self, timeout_s: float = 15) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join(timeout_s)

    def _write_loop(self) -> None:
        from prefect.client.orchestration import get_client

        pending: dict[str, Any] | None = None
        with get_client(sync_client=True) as client:
            while True:
                with self._changed:
                    while self._latest is None and pending is None and not self._closing:
                        self._changed.wait()
                    if self._latest is not None:
                        pending, self._latest = self._latest, None
                    closing = self._closing
                if pending is None:
                    return
                try:
                    client.update_flow_run_labels(self._flow_run_id, pending)
                    pending = None
                except Exception as exc:  # kept and tried again: on SQLite, a label write collides with the
                    # run's own state writes (the server reads, then updates, and answers 503 when it loses)
                    log().debug("could not record the run's progress yet: %s", exc)
                    if closing:
                        return
                    with self._changed:
                        self._changed.wait(1.0)


@dataclass
class Procedure:
    """A procedure's steps and its record; ``run`` executes them, ``plan`` shows them."""

    ctx: RunContext
    name: str
    target: str
    steps: list[Step]
    phases: Sequence[str] = ()
    start_at: str | None = None
    topology_on: str | None = None  # shows the HA topology from this host first and last (patronictl's way)
    facts: Sequence[str] = ()  # what the plan was made from, one line each (read before anything changed)
    results: dict[str, Any] = field(default_factory=dict)
    progress: ProgressLabels | None = None
    forecast: Forecast | None = None  # how long each step should take, from the same facts
    past: Mapping[str, Sequence[float]] = field(default_factory=dict)  # per step, actual over expected in past runs
    window: ChangeWindow | None = None  # the change window booked for this run: it must hold the forecast
    model: Forecast | None = field(default=None, init=False)  # the forecast before history corrected it
    overrun_alerted: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.book = Runbook(self.name, self.target)
        self.book.notes.extend(f"planned from: {fact}" for fact in self.facts)
        if self.forecast is not None:
            self.model = self.forecast  # what past runs are compared with: the model, never a corrected figure
            self.forecast = self.forecast.corrected(self.past)
            self.book.forecast = {s.title: f.estimate for s in self.steps if (f := self.forecast.of(s.key))}
            self.book.notes.extend(f"forecast: {line}" for line in self.forecast_lines())
        if self.topology_on:
            self.steps = [topology(self.ctx, "before", self.topology_on), *self.steps,
                          topology(self.ctx, "after", self.topology_on)]
        seen_approval = False
        for step in self.steps:
            seen_approval = seen_approval or bool(step.approval)
            if step.destructive and not seen_approval:
                raise AssertionError(f"{self.name}: destructive step {step.key!r} comes before any approval step")
            if step.phase is not None and step.phase not in self.phases:
                raise AssertionError(f"{self.name}: step {step.key!r} has an unknown phase {step.phase!r}")

    def selected(self) -> list[Step]:
        """The steps this run takes: those of an earlier ``start_at`` phase are left out."""
        if not self.start_at or not self.phases:
            return list(self.steps)
        first = list(self.phases).index(self.start_at)
        return [s for s in self.steps if s.phase is None or list(self.phases).index(s.phase) >= first]

    def plan_rows(self, steps: Sequence[Step] | None = None) -> list[dict]:
        return [row for step in (self.selected() if steps is None else steps) for row in step.rows()]

    def plan(self) -> dict:
        """The dry run: publish the rows from ``start_at`` on; nothing runs."""
        rows = self.plan_rows()
        md = [f"# Dry run: {self.name} ({self.target})", "",
              "Nothing was run. These steps would run, in order"
              + (f" (from start_at={self.start_at})" if self.start_at else "") + ":", "",
              "| # | step | host | command | |", "|---|---|---|---|---|"]
        md += [f"| {i} | {r['step']} | {r['host']} | `{r['command']}` | {r['flags']} |" for i, r in enumerate(rows, 1)]
        forecast = self.forecast_rows()
        if forecast:
            md += ["", "## Forecast", "", "| step | expected | range | does not serve meanwhile |", "|---|---|---|---|",
                   *[f"| {f['step']} | {f['expected']} | {f['range']} | {f['unavailable'] or '-'} |" for f in forecast],
                   "", *[f"- {line}" for line in self.forecast_lines()]]
        if self.facts:
            md += ["", "## Planned from these facts (read, nothing changed)", *[f"- {mask(f)}" for f in self.facts]]
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        create_markdown_artifact(key=f"{self.name}-plan", markdown="\n".join(md), description=f"dry run of {self.name}")
        if forecast:  # the same figures, for pe-ha run --window to read
            create_table_artifact(key=f"{self.name}-forecast", table=forecast,
                                  description=f"forecast of {self.name}, per step (seconds)")
        log().info("dry run: %d planned rows, nothing executed", len(rows))
        return {"dry_run": True, "plan": rows, "facts": list(self.facts),
                "forecast": {"steps": forecast, "lines": self.forecast_lines()}}

    def _told(self, key: str) -> StepForecast | None:
        """The forecast this run shows for a step (history-corrected), if it has one."""
        return self.forecast.of(key) if self.forecast is not None else None

    def forecast_rows(self) -> list[dict]:
        """One row per step this run takes that the forecast covers."""
        if self.forecast is None:
            return []
        rows = []
        for step in self.selected():
            found = self._told(step.key)
            if found is not None:
                e = found.estimate
                rows.append({"key": step.key, "step": step.title, "expected_s": round(e.expected_s, 1),
                             "low_s": round(e.low_s, 1), "high_s": round(e.high_s, 1),
                             "expected": duration(e.expected_s), "range": f"{duration(e.low_s)} to {duration(e.high_s)}",
                             "unavailable": found.unavailable, "basis": found.basis})
        return rows

    def forecast_lines(self) -> list[str]:
        if self.forecast is None:
            return []
        steps = self.selected()
        lines = self.forecast.lines([s.key for s in steps])
        if self.window is not None:
            misfit = self._window_misfit(steps)
            lines.insert(1, f"change window until {self.window.ends:%Y-%m-%d %H:%M} UTC: "
                            + (f"does NOT fit: {misfit}" if misfit else "the forecast's high end fits"))
        return lines

    def _window_misfit(self, steps: Sequence[Step]) -> str | None:
        """Why the booked window cannot hold these steps' forecast from now, or None when it can (or nothing
        is booked or forecast)."""
        if self.window is None or self.forecast is None:
            return None
        return self.window.misfit(self.forecast.total(s.key for s in steps), dt.datetime.now(dt.UTC))

    def run(self, outcome: Callable[[dict[str, Any]], Outcome], *, approve: bool = False) -> Finished:
        """Run the steps in order; the summary is published whatever happens. A rejected approval ends the run
        Cancelled with nothing after it done."""
        steps = self.selected()
        if any(step.approval for step in steps):
            check_up_front(self.ctx.settings.approval_policy, approve)
        self._check_window(steps)
        skipped = [s for s in self.steps if s not in steps]
        for step in skipped:
            self.book.skip(step.title, f"start_at={self.start_at}")
        try:
            return self._run(steps, outcome, approve)
        finally:
            if self.progress is not None:
                self.progress.close()
            self._record_timings()

    def _check_window(self, steps: Sequence[Step]) -> None:
        """At the start, from the facts just read: a forecast the booked window cannot hold starts nothing."""
        misfit = self._window_misfit(steps)
        if misfit:
            raise PreconditionFailed(f"{self.name} did not start, and nothing was changed: {misfit}",
                                     hint="book a longer window or a smaller step, then schedule the run again "
                                          "(pe-ha plan shows the forecast from today's facts)")

    def _watch_window(self, remaining: Sequence[Step]) -> None:
        """After each step: when the steps left are expected to end after the window, one alert says so. The run
        goes on: a destructive procedure stopped halfway is worse than a window overrun."""
        if self.window is None or self.forecast is None or self.overrun_alerted:
            return
        expected_end = self.window.overrun(self.forecast.total(s.key for s in remaining), dt.datetime.now(dt.UTC))
        if expected_end is None:
            return
        self.overrun_alerted = True
        step = self.book.steps[-1]["step"] if self.book.steps else "the start"
        message = (f"{self.name} will outlive its change window: after {step!r} it is expected to end at "
                   f"{expected_end:%Y-%m-%d %H:%M} UTC, past the window's end at {self.window.ends:%H:%M} UTC; "
                   "it goes on (its steps must finish)")
        log().warning("%s", message)
        from prefect.events import emit_event
        from prefect.runtime import flow_run

        emit_event(event="pe-ha.window.overrun",
                   resource={"prefect.resource.id": f"pe-ha.installation.{self.ctx.settings.installation}",
                             "prefect.resource.name": self.ctx.settings.installation},
                   related=[{"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                             "prefect.resource.role": "flow-run", "prefect.resource.name": str(flow_run.name)}],
                   payload={"message": message, "step": step, "expected_end": expected_end.isoformat(),
                            "window_ends": self.window.ends.isoformat()})

    def _record_timings(self) -> None:
        """The steps that finished, with what the model expected of them: the next plan learns from them."""
        if self.model is None:
            return
        key_of = {s.title: s.key for s in self.steps}
        rows = []
        for taken in self.book.steps:
            found = self.model.of(key_of.get(taken["step"], ""))
            if taken["outcome"] == "done" and found is not None and found.estimate.expected_s > 0:
                # expected_s is the model's (what history corrects); forecast_* is what this run was told
                told = self._told(found.key)
                shown = told.estimate if told is not None else found.estimate
                rows.append({"step": found.key, "seconds": taken["seconds"],
                             "expected_s": round(found.estimate.expected_s, 2),
                             "forecast_s": round(shown.expected_s, 2), "forecast_low_s": round(shown.low_s, 2),
                             "forecast_high_s": round(shown.high_s, 2)})
        try:
            history.record(self.ctx, self.name, rows)
        except Exception as exc:  # the run's outcome stands; only the next forecast learns less
            log().warning("step timings not recorded: %s", exc)

    def _run(self, steps: list[Step], outcome: Callable[[dict[str, Any]], Outcome], approve: bool) -> Finished:
        started: set[str] = set()
        done: set[str] = set()
        current: Step | None = None
        try:
            for index, step in enumerate(steps):
                if step.always and step.armed_by and step.armed_by not in started:
                    continue
                at_step_boundary(self.ctx, step.title)  # a step starts only while this run holds the lock
                current = step
                if step.approval:
                    self._approve(step, steps[index + 1:], approve)
                    done.add(step.key)
                    self._watch_window(steps[index + 1:])  # a late approval may have used the window up
                    continue
                started.add(step.key)
                _starting(self.ctx, self.name, step)
                with self.book.step(step.title, step.host):
                    self.results[step.key] = self._act(step)
                done.add(step.key)
                self._note_progress(step, steps[index + 1:])
                self._watch_window(steps[index + 1:])
            current = None
        except ApprovalRejected as exc:
            self._cleanup(steps, started, done)
            self.book.publish_summary(outcome="not approved", notes=[exc.message],
                                      next_steps=["Nothing after the approval ran. Start the procedure again when it "
                                                  "should go ahead."])
            return Finished("not approved", self.results, f"{self.name} ended with nothing done: {exc.message}")
        except BaseException as exc:
            self._cleanup(steps, started, done)
            self._publish_failure(current, exc)
            raise
        final = outcome(self.results)
        self.book.publish_summary(outcome=final.text, next_steps=final.next_steps, notes=final.notes)
        return Finished("completed", self.results)

    def _act(self, step: Step) -> Any:
        needed = [self.results.get(key) for key in step.needs]
        if not step.timed:
            return step.action(*needed)
        found = self._told(step.key)
        return step.action(*needed, expected_s=found.estimate.expected_s if found is not None else 0.0)

    def resume_hint(self, remaining: Sequence[Step]) -> str:
        """How to go on after the last finished step, should the run die now."""
        phases = [s.phase for s in remaining if s.phase]
        if phases:
            return f"pe-ha run {self.name} --param start_at={phases[0]} (with this run's other parameters)"
        if not remaining:
            return "nothing: every step finished"
        return (f"no start_at for this procedure: check the installation with verify-health, then run {self.name} "
                "again (pe-ha plan shows what it would do)")

    def _note_progress(self, finished: Step, remaining: Sequence[Step]) -> None:
        """The run's labels name its last finished step and how to go on: the crash alert reads them, since a
        run whose worker died cannot say so itself."""
        if self.progress is None:
            self.progress = ProgressLabels.for_this_run()
        if self.progress is not None:
            self.progress.set({"pe-ha.last-finished-step": finished.title,
                               "pe-ha.resume": self.resume_hint(remaining)})

    def _approve(self, step: Step, remaining: Sequence[Step], approve: bool) -> None:
        rows = [r for s in remaining for r in s.rows()]
        table = ["| step | host | command |", "|---|---|---|",
                 *[f"| {r['step']} | {r['host']} | `{r['command']}` |" for r in rows]]
        forecast = [f"- {line}" for line in self.forecast_lines()]
        allows = "\n".join(table + (["", "Forecast (from the start of the run):", *forecast] if forecast else []))
        require_approval(self.ctx, self.book, step.approval, approved_up_front=approve, allows=allows)

    def _cleanup(self, steps: Sequence[Step], started: set[str], done: set[str]) -> None:
        """After a failure: the armed cleanup steps that have not run yet. Each failure is logged, never raised:
        the run's real error must get through."""
        for step in steps:
            if not step.always or step.key in done or (step.armed_by and step.armed_by not in started):
                continue
            try:
                _starting(self.ctx, self.name, step)
                with self.book.step(step.title, step.host):
                    self._act(step)
            except Exception as exc:  # the original failure is what the operator must see
                log().error("cleanup step %r failed: %s", step.title, exc)

    def _publish_failure(self, step: Step | None, exc: BaseException) -> None:
        where = f" at step {step.title!r}" if step else ""
        message = exc.message if isinstance(exc, PeHaError) else f"{type(exc).__name__}: {exc}"
        hint = exc.hint if isinstance(exc, PeHaError) else None
        cancelled = type(exc).__name__ in ("TerminationSignal", "KeyboardInterrupt", "CancelledError")
        try:
            self.book.publish_summary(
                outcome=("CANCELLED" if cancelled else "FAILED") + where,
                notes=[f"error: {message}"] + ([f"hint: {hint}"] if hint else []),
                next_steps=[hint or "Read the failing step's log lines above, fix the cause, then run the procedure "
                                    "again (steps already done are safe to repeat, or use start_at where offered)."])
        except Exception as publish_error:  # a lost summary must not replace the run's real error
            log().error("could not publish the summary: %s", publish_error)


def change_window(minutes: float | None) -> ChangeWindow | None:
    """The window booked for this run (``window_minutes``), from its scheduled start: checked as bad input before
    anything is read."""
    problem = window_minutes_problem(minutes)
    if problem:
        raise ValidationError(problem)
    if minutes is None:
        return None
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time  # the run's expected start: for a run started now, its creation
    # a plain datetime: Prefect's may be pendulum's, which will not subtract a standard one
    starts = dt.datetime.fromtimestamp(scheduled.timestamp(), dt.UTC) if scheduled else dt.datetime.now(dt.UTC)
    return ChangeWindow(starts, float(minutes))


def topology(ctx: RunContext, label: str, host: str) -> Step:
    """Show the HA topology (``puppet infrastructure status`` on ``host``); a host that does not answer is logged."""
    from flows._common import show_topology
    from pe_ha import commands

    return Step(f"topology-{label}", f"show the HA topology {label}", host, lambda: show_topology(ctx, label, [host]),
                commands=[(host, commands.infrastructure_status())])


# -- the RBAC token steps several procedures share ----------------------------------------------------


def check_token(ctx: RunContext, master: str, min_validity_s: float) -> Step:
    from tasks import token

    return Step("check-token", "check RBAC token lifetime", "worker",
                lambda: token.validate_token(ctx, min_validity_s=min_validity_s, master=master),
                note=f"POST https://{master}:4433/rbac-api/v2/auth/token/authenticate: valid for {min_validity_s:g} s more")


def stage_token(ctx: RunContext, host: str) -> Step:
    from pe_ha import commands
    from tasks import token

    path = ctx.settings.remote_token_file
    return Step("stage-token", "stage RBAC token", host, lambda: token.stage_token(ctx, host),
                commands=[(host, commands.make_dir(path.rsplit("/", 1)[0]))],
                note=f"then write {path} over SFTP, mode 0600 (the token never reaches argv or a log)")


def remove_token(ctx: RunContext, host: str) -> Step:
    from flows._common import remove_token_best_effort
    from pe_ha import commands

    return Step("remove-token", "remove the staged RBAC token", host, lambda: remove_token_best_effort(ctx, host),
                commands=[(host, commands.remove_files(ctx.settings.remote_token_file))],
                always=True, armed_by="stage-token")


# -- the puppet service, paused around a procedure that runs Puppet itself ---------------------------------


def pause_puppet_service(ctx: RunContext, host: str) -> tuple[Step, Step]:
    """Stop the ``puppet`` service on ``host`` before a procedure whose own Puppet runs a background run would
    collide with (peadm's add_replica stops it on the primary around provisioning), and start it again after,
    also after a failure, unless it was stopped to begin with."""
    from pe_ha import commands
    from tasks import services

    def stop() -> str:
        """Stops the service; returns the state it was in."""
        state = services.service_state(ctx, host, "puppet")
        if state != "stopped":  # running, or not readable: stopping is harmless and idempotent
            services.set_service(ctx, host, "puppet", "stopped")
        return state

    def restart(state_before: str | None) -> None:
        if state_before == "stopped":
            log().info("the puppet service on %s was stopped before this procedure: left stopped", host)
            return
        services.set_service(ctx, host, "puppet", "running")

    stop_step = Step("stop-puppet", "stop the puppet service (its background runs would collide)", host, stop,
                     commands=[(host, commands.service_state("puppet")), (host, commands.service("puppet", "stopped"))],
                     note="left stopped if it was stopped already")
    start_step = Step("start-puppet", "start the puppet service again", host, restart, always=True,
                      armed_by="stop-puppet", needs=("stop-puppet",), commands=[(host, commands.service("puppet", "running"))],
                      note="also after a failure; not when it was stopped before the procedure")
    return stop_step, start_step
