"""The copy's last check, by PuppetDB itself: the target's PuppetDB runs on the copy and its PQL counts lie between
the source's before the copy and after it. Parsed from PuppetDB's own answers; judged on the fake executor."""

from __future__ import annotations

import json

import pytest

from pe_ha import commands, context
from pe_ha.errors import PostconditionFailed, ValidationError
from pe_ha.executor import CommandResult
from pe_ha.fake_executor import FakeExecutor
from tasks import puppetdb_query
from tasks.puppetdb_query import ACCEPTANCE_COUNTS, acceptance_problems
from tests.conftest import fake_pe_api, make_settings
from tests.test_plans import M, R, assert_plan_is_the_run, facts_reads, scripted

pytestmark = pytest.mark.usefixtures("prefect_harness")

SOURCE = {"nodes": 12, "factsets": 12, "catalogs": 12, "resources": 252, "reports": 36}


@pytest.mark.parametrize(("found", "after", "problems"), [
    (SOURCE, SOURCE, []),
    ({**SOURCE, "reports": 38}, {**SOURCE, "reports": 40}, []),  # the source grew; the target pulled some
    ({**SOURCE, "reports": 30}, {**SOURCE, "reports": 30}, []),  # the source's report TTL removed some
    ({**SOURCE, "reports": 35}, SOURCE, ["reports: 35 (the source had 36)"]),
    ({**SOURCE, "nodes": 0, "resources": 0}, {**SOURCE, "nodes": 13},
     ["nodes: 0 (the source had between 12 and 13)", "resources: 0 (the source had 252)"]),
    ({**SOURCE, "catalogs": 13}, SOURCE, ["catalogs: 13 (the source had 12)"]),
])
def test_each_count_must_lie_between_the_sources_before_and_after(found, after, problems):
    assert acceptance_problems(SOURCE, found, after) == problems


def test_the_query_is_one_quoted_command_on_the_nodes_own_curl_and_loopback():
    assert commands.puppetdb_query("reports[count()] {}").argv == (
        "/opt/puppetlabs/puppet/bin/curl", "--silent", "--show-error", "--fail", "--max-time", "120", "--get",
        "http://127.0.0.1:8080/pdb/query/v4", "--data-urlencode", "query=reports[count()] {}")
    with pytest.raises(ValidationError):
        commands.puppetdb_query("nodes {}\ncurl evil")


def answering(counts: dict[str, int] | None, host: str, fake: FakeExecutor, *, state: str = "running") -> None:
    """``host``'s PuppetDB answers ``counts`` (None: nothing listens) in PuppetDB's shape, ``[{"count": n}]``."""
    for name, pql in ACCEPTANCE_COUNTS.items():
        if counts is None:
            fake.script(host, commands.puppetdb_query(pql).argv, exit_code=7,
                        stderr="curl: (7) Failed to connect to 127.0.0.1 port 8080", override=True)
        else:
            fake.script(host, commands.puppetdb_query(pql).argv, stdout=json.dumps([{"count": counts[name]}]),
                        override=True)
    fake.script(host, commands.puppetdb_status().argv, stdout=json.dumps({"state": state}), override=True)


@pytest.fixture()
def env(tmp_path):
    settings = make_settings(tmp_path, backup_dir=tmp_path / "backups")
    fake = scripted(FakeExecutor())
    running = {"puppet", "pe-puppetdb"}  # both run on the replica before the copy

    def service(host: str, argv: tuple[str, ...]) -> CommandResult:
        name = argv[3]
        if len(argv) > 4:  # ensure=running|stopped
            (running.add if argv[4] == "ensure=running" else running.discard)(name)
        ensure = "running" if name in running else "stopped"
        return CommandResult(host, argv, 0, f"service {{ '{name}':\n  ensure => '{ensure}',\n}}\n", "", 0.0)

    fake.script(R, ("puppet", "resource", "service"), responder=service)
    answering(SOURCE, M, fake)
    answering(SOURCE, R, fake)
    with context.using(executor=fake, api=fake_pe_api(settings), settings=settings):
        yield fake


def test_pql_counts_reads_puppetdbs_answers_and_none_when_nothing_listens(env):
    ctx = context.given()
    assert puppetdb_query.pql_counts.fn(ctx, M) == SOURCE
    answering(None, M, env)
    assert puppetdb_query.pql_counts.fn(ctx, M) is None
    env.script(R, commands.puppetdb_query(ACCEPTANCE_COUNTS["nodes"]).argv, stdout='{"error": "x"}', override=True)
    with pytest.raises(PostconditionFailed, match="not one count"):
        puppetdb_query.pql_counts.fn(ctx, R)


@pytest.mark.parametrize("method", ["fast", "documented"])
def test_the_copy_ends_accepted_by_the_targets_puppetdb_and_the_plan_is_the_run(env, method):
    from flows.copy_puppetdb import copy_puppetdb

    plan = copy_puppetdb(method=method, approve=True, dry_run=True)["plan"]
    facts = facts_reads(env)
    assert [r for r in plan if r["key"] == "accept"][0]["poll"]
    env.calls.clear()
    result = copy_puppetdb(method=method, approve=True)
    assert result["puppetdb_acceptance"] == {"judged": True, "running_after_s": 0.0, "counts": SOURCE}
    assert_plan_is_the_run(plan, env, facts=facts)
    assert (M, commands.puppetdb_query(ACCEPTANCE_COUNTS["reports"]).argv) in facts  # read before the copy


def test_a_target_that_answers_less_than_the_source_fails_the_copy_and_keeps_the_old_database(env):
    from flows.copy_puppetdb import copy_puppetdb

    answering({**SOURCE, "reports": 20}, R, env)
    state = copy_puppetdb(method="fast", approve=True, return_state=True)
    assert state.is_failed()
    assert "does not answer as master.example.com's did: reports: 20 (the source had 36)" in state.message
    assert not any("DROP DATABASE" in " ".join(c.argv) and "_old" in " ".join(c.argv) for c in env.calls)


def test_a_target_puppetdb_that_never_runs_fails_the_copy_naming_its_state(env, monkeypatch):
    from flows import copy_puppetdb as module

    monkeypatch.setattr(module, "PUPPETDB_START_PATIENCE_S", 0)
    answering(SOURCE, R, env, state="starting")
    state = module.copy_puppetdb(method="documented", approve=True, return_state=True)
    assert state.is_failed() and "PuppetDB on replica.example.com was not running 0 s after the copy (last: starting)" \
        in state.message


@pytest.mark.parametrize(("setup", "why"), [
    ("source-silent", "PuppetDB on master.example.com did not answer on its loopback listener"),
    ("target-stopped", "pe-puppetdb was not running on replica.example.com before the copy"),
])
def test_a_copy_puppetdb_cannot_judge_says_so_in_the_plan_and_the_result(env, setup, why):
    from flows.copy_puppetdb import copy_puppetdb

    if setup == "source-silent":
        answering(None, M, env)
    else:
        env.run(R, commands.service("pe-puppetdb", "stopped").argv)  # stopped by an operator before the run
    plan = copy_puppetdb(method="documented", approve=True, dry_run=True)["plan"]
    accept = [r for r in plan if r["key"] == "accept"]
    assert len(accept) == 1 and why in accept[0]["command"] and accept[0]["argv"] is None
    result = copy_puppetdb(method="documented", approve=True)
    assert result["puppetdb_acceptance"]["judged"] is False and why in result["puppetdb_acceptance"]["why"]
    assert not any(c.argv[-1].endswith("/puppetdb-status") for c in env.calls)
