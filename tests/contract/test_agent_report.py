""""No changed resources", judged as Puppet means it: on Puppet's own ``last_run_summary.yaml`` (captured samples)
and on real Puppet runs (Debian's puppet-agent 7.23.0, installed by ``make setup``), never on the exit code alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pe_ha.agent_report import (
    SummaryUnreadable,
    applied_config_version,
    changed_resources,
    no_changes_problem,
    parse_summary,
)
from tests.contract.test_samples import sample


def test_a_noop_summary_with_a_pending_change_counts_it():
    summary = parse_summary(sample("agent-last-run-summary-noop-pending.yaml"))
    assert (summary.changed, summary.out_of_sync, summary.noop_events, summary.failed) == (0, 1, 1, 0)
    assert summary.pending


def test_a_clean_summary_has_nothing_pending():
    summary = parse_summary(sample("agent-last-run-summary-clean.yaml"))
    assert not summary.pending and summary.total == 8


def test_the_pending_resource_is_named_from_the_runs_output():
    output = sample("agent-noop-pending-output.txt")
    assert changed_resources(output) == ["File[/etc/motd]"]
    problem = no_changes_problem(sample("agent-last-run-summary-noop-pending.yaml"), output)
    assert problem is not None and "File[/etc/motd]" in problem and "out of sync 1" in problem


def test_a_clean_summary_passes():
    assert no_changes_problem(sample("agent-last-run-summary-clean.yaml"), "Notice: Applied catalog in 0.01 seconds") is None


@pytest.mark.parametrize("text", ["", "---\n", "not: [yaml", "---\nversion:\n  config: 1\n",
                                  "---\nresources:\n  out_of_sync: many\n"])
def test_a_missing_or_partial_summary_is_a_problem_not_a_pass(text):
    with pytest.raises(SummaryUnreadable):
        parse_summary(text)
    assert no_changes_problem(text, "") is not None


def test_a_summary_of_another_configuration_version_is_not_this_runs():
    output = "Info: Applying configuration version '1796514999'\nNotice: Applied catalog in 0.01 seconds"
    assert applied_config_version(output) == "1796514999"
    problem = no_changes_problem(sample("agent-last-run-summary-clean.yaml"), output)
    assert problem is not None and "did not write its summary" in problem


def test_a_changed_resource_line_is_named_without_noop():
    output = ("Notice: /Stage[main]/Puppet_enterprise::Profile::Agent/Pe_ini_setting[server_list]/value: value changed "
              "'a' to 'b'\nNotice: /Stage[main]/Main/File[/tmp/a/b.conf]/content: content changed '{md5}1' to '{md5}2'")
    assert changed_resources(output) == ["Pe_ini_setting[server_list]", "File[/tmp/a/b.conf]"]


# -- real Puppet -----------------------------------------------------------------------------------------------


@pytest.fixture()
def puppet_apply(tmp_path: Path):
    """``puppet apply`` of one manifest in its own conf, var and public dirs, as ``puppet agent -t`` runs (verbose,
    detailed exit codes); returns (exit code, output, last_run_summary.yaml)."""
    puppet = shutil.which("puppet")
    assert puppet, "Debian's puppet-agent is missing: make setup installs it"
    manifest = tmp_path / "site.pp"
    target = tmp_path / "pending.conf"
    manifest.write_text(f"file {{ '{target}': ensure => file, content => \"x\\n\" }}\n")

    def run(*, noop: bool) -> tuple[int, str, str]:
        argv = [puppet, "apply", "--verbose", "--detailed-exitcodes", "--color", "false",
                *(f"--{d}={tmp_path / d}" for d in ("confdir", "vardir", "codedir", "publicdir")), str(manifest)]
        if noop:
            argv.append("--noop")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout + done.stderr, (tmp_path / "publicdir" / "last_run_summary.yaml").read_text()

    return run


def test_a_real_noop_run_with_a_pending_change_exits_0_and_fails_the_check(puppet_apply, tmp_path):
    code, output, summary = puppet_apply(noop=True)
    assert code == 0  # what the exit code alone would have passed
    problem = no_changes_problem(summary, output)
    assert problem is not None and f"File[{tmp_path / 'pending.conf'}]" in problem


def test_a_real_noop_run_with_nothing_pending_passes_the_check(puppet_apply):
    assert puppet_apply(noop=False)[0] == 2  # applied: the file now exists
    code, output, summary = puppet_apply(noop=True)
    assert code == 0 and applied_config_version(output) is not None
    assert no_changes_problem(summary, output) is None
