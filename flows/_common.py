"""What every procedure flow shares: input checks, the plan for dry runs, topology, steps and the summary."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from flows._entry import settings_for_naming
from pe_ha.context import RunContext
from pe_ha.errors import PeHaError
from pe_ha.forecast import NOTHING, Estimate
from pe_ha.masking import mask
from tasks import infrastructure


def log():
    try:
        return get_run_logger()
    except Exception:  # called outside a run in unit tests
        import logging

        return logging.getLogger("pe_ha.flows")


@dataclass
class Runbook:
    """The record of one procedure run: the steps it took, and the summary artifact."""

    procedure: str
    target: str
    steps: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts of the run itself, e.g. who approved it
    started: float = field(default_factory=time.monotonic)
    forecast: dict[str, Estimate] = field(default_factory=dict)  # step title -> what the plan expected

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
        taken = {s["step"] for s in self.steps}
        expected = sum((e for title, e in self.forecast.items() if title in taken), NOTHING)
        md = [f"# {self.procedure}: {outcome}", "", f"Target: `{self.target}` — total {total:.1f} s"
              + (f" (forecast {expected.text()})" if self.forecast else ""), ""]
        with_forecast = bool(self.forecast)  # forecast and actual side by side
        md += ["| step | host | outcome | seconds |" + (" forecast |" if with_forecast else ""),
               "|---|---|---|---|" + ("---|" if with_forecast else "")]
        for s in self.steps:
            forecast = (f" {self.forecast[s['step']].text() if s['step'] in self.forecast else '-'} |"
                        if with_forecast else "")
            md.append(f"| {s['step']} | {s['host']} | {s['outcome']} | {s['seconds']} |" + forecast)
        if self.notes or notes:
            md += ["", "## Notes", *[f"- {mask(n)}" for n in [*self.notes, *notes]]]
        if next_steps:
            md += ["", "## What to do next", *[f"1. {n}" for n in next_steps]]
        text = "\n".join(md)
        create_markdown_artifact(key=f"{self.procedure}-summary", markdown=text,
                                 description=f"{self.procedure} on {self.target}: {outcome}")
        return text


def show_topology(ctx: RunContext, label: str, candidates: Sequence[str]) -> list[dict]:
    """Log the HA topology from ``puppet infrastructure status`` on the first host that answers."""
    for host in candidates:
        try:
            entries = infrastructure.read_status(ctx, host)
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


def run_name(procedure: str, parameter: str, fallback: str):
    """A flow_run_name callable: ``<procedure>/<host>``, using the configured host when the parameter is empty."""

    def name() -> str:
        from prefect.runtime import flow_run

        value = (flow_run.parameters or {}).get(parameter)
        if not value:
            try:
                s = settings_for_naming()
                value = {"master": s.master.name, "replica": s.replica.name if s.replica else "?"}.get(fallback, fallback)
            except PeHaError:
                value = fallback
        return f"{procedure}/{value}"

    return name


def remove_token_best_effort(ctx: RunContext, host: str) -> None:
    """Remove the staged token in a ``finally``: a failure here must not hide the run's real outcome."""
    from tasks import token

    try:
        token.remove_staged_token(ctx, host)
    except Exception as exc:  # the host may be unreachable; tell the operator what is left behind
        log().error("could not remove the staged RBAC token from %s (%s): delete %s there by hand", host, exc,
                    ctx.settings.remote_token_file)
