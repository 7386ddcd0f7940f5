"""What a Puppet agent run did, read as Puppet reports it: its ``last_run_summary.yaml`` and its output.

The exit code alone cannot say "no changed resources" for a noop run: ``--noop`` events are not counted as
changes (Puppet's ``lib/puppet/transaction/report.rb``), so ``puppet agent -t --noop`` exits 0 with changes
pending. The summary's ``resources.out_of_sync`` and ``events.noop`` count them; the run's output names them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CONFIG_VERSION = re.compile(r"Applying configuration version '([^']*)'")
# "Notice: /Stage[main]/Main/File[/tmp/x]/ensure: current_value 'absent', should be 'file' (noop)"
_EVENT = re.compile(r"^(?:\w+: )?(?P<path>/?Stage\[.*?)/(?P<param>[a-z_][\w]*): (?P<message>.*)$")
_RESOURCE = re.compile(r"([A-Z][\w:]*)\[(.*?)\](?=/|$)")


class SummaryUnreadable(ValueError):
    """The summary file is missing or not what Puppet writes."""


@dataclass(frozen=True)
class RunSummary:
    """The counts of ``last_run_summary.yaml`` that decide "no changed resources"."""

    config_version: str | None
    total: int
    changed: int
    out_of_sync: int
    failed: int
    noop_events: int
    failure_events: int

    @property
    def pending(self) -> bool:
        """Resources that are not in their desired state, changed now or (noop) left to change."""
        return self.changed > 0 or self.out_of_sync > 0 or self.noop_events > 0


def parse_summary(text: str) -> RunSummary:
    """Parse ``last_run_summary.yaml`` (plain YAML, unlike ``last_run_report.yaml``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SummaryUnreadable(f"last_run_summary.yaml is not YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("resources"), dict):
        raise SummaryUnreadable("last_run_summary.yaml has no resources section (the run did not finish)")
    resources, events = data["resources"], data.get("events") or {}
    version = (data.get("version") or {}).get("config")

    def count(section: dict, key: str) -> int:
        value = section.get(key, 0)
        if not isinstance(value, int):
            raise SummaryUnreadable(f"last_run_summary.yaml: {key} is {value!r}, not a count")
        return value

    return RunSummary(config_version=None if version is None else str(version),
                      total=count(resources, "total"), changed=count(resources, "changed"),
                      out_of_sync=count(resources, "out_of_sync"), failed=count(resources, "failed"),
                      noop_events=count(events, "noop"), failure_events=count(events, "failure"))


def applied_config_version(output: str) -> str | None:
    """The configuration version the run applied, from its ``Info: Applying configuration version`` line."""
    found = _CONFIG_VERSION.findall(_ANSI.sub("", output))
    return found[-1] if found else None


def changed_resources(output: str) -> list[str]:
    """Resources the run's output shows changing or (``(noop)``) left to change, as ``Type[title]``, in order."""
    names: list[str] = []
    for line in _ANSI.sub("", output).splitlines():
        match = _EVENT.match(line.strip())
        if not match:
            continue
        found = _RESOURCE.findall(match["path"])
        if found:
            name = f"{found[-1][0]}[{found[-1][1]}]"
            if name not in names and not name.startswith(("Stage[", "Class[")):
                names.append(name)
    return names


def no_changes_problem(summary_text: str, output: str) -> str | None:
    """Why this run does not show "no changed resources", or None when it does.

    ``summary_text`` is the agent's ``last_run_summary.yaml`` read after the run, ``output`` the run's own output;
    the summary must be this run's (same configuration version), else the check cannot be judged.
    """
    try:
        summary = parse_summary(summary_text)
    except SummaryUnreadable as exc:
        return str(exc)
    applied = applied_config_version(output)
    if applied is not None and summary.config_version is not None and applied != summary.config_version:
        return (f"last_run_summary.yaml is of configuration version {summary.config_version}, not the "
                f"{applied} this run applied: the run did not write its summary")
    if summary.failed or summary.failure_events:
        return f"{summary.failed} resource(s) failed"
    if summary.pending:
        named = changed_resources(output)
        what = ", ".join(named[:10]) + (f" and {len(named) - 10} more" if len(named) > 10 else "") if named \
            else "see the run's output"
        return (f"{summary.out_of_sync or summary.changed} resource(s) not in their desired state "
                f"(changed {summary.changed}, out of sync {summary.out_of_sync}, noop events {summary.noop_events}): "
                f"{what}")
    return None
