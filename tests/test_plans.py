"""The dry-run plan is the run: for every procedure and its main parameter combinations, the (host, argv) each
step sent to the fake executor equals the rows that step's plan shows, every step compared. A concurrent
step's rows may come in any order; a poll step sends its rows again until what it waits for holds; a subflow
step sends its own procedure's facts reads and plan. Only the run's own values differ: the dump file's run id
and the snapshot the run exports, which the plan shows as a stand-in. A dry run only reads facts."""

from __future__ import annotations

import hashlib
import re

import pytest

from flows.copy_puppetdb import copy_puppetdb
from pe_ha import commands, context
from pe_ha.fake_executor import FakeExecutor
from pe_ha.psql import SEP
from tasks.copy_plan import PLANNED_SNAPSHOT
from tests.conftest import answer_agent_summary, answer_link_probe, fake_pe_api, make_settings, status_json

M, R, A1, A2 = "master.example.com", "replica.example.com", "agent1.example.com", "agent2.example.com"

pytestmark = pytest.mark.usefixtures("prefect_harness")


def answer_sql(host: str, sent: str) -> list[str]:
    """A small pe-puppetdb as psql prints it: one table, five rows, PostgreSQL 11."""
    if "server_version_num" in sent:
        return ["110022"]
    if "pg_export_snapshot" in sent:
        return ["00000003-0000001B-1"]
    if "pg_database_size" in sent:
        return ["1048576"]
    if "pg_table_size" in sent:
        return [f"certnames{SEP}8192"]
    if "count(*) FROM ONLY" in sent:
        return ["5"]
    if "c.relkind = 'r' ORDER BY 1" in sent:
        return ["certnames"]
    if "c.relkind = 'S'" in sent:
        return ["certname_id_seq"]
    return []


def scripted(fake: FakeExecutor) -> FakeExecutor:
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(R, ("puppet", "config", "delete", "server"), stdout="Deleted setting from 'main': 'server = m'")
    for host in (M, R):
        fake.script(M, ("puppet", "infrastructure", "status", "--host", host), stdout=status_json(host))
        fake.script(host, ("puppet", "infrastructure", "status"), stdout=status_json(host))
        fake.script(host, ("df",), stdout="Avail\n999999999999\n")
        fake.script(host, ("sha256sum",), stdout=hashlib.sha256(b"dump").hexdigest() + "  /var/tmp/pe-ha/x.dump\n")
    fake.script(M, ("getent", "ahostsv4", R), stdout="198.51.100.12 STREAM replica")
    fake.script(M, ("getent", "ahostsv4", A1), stdout="198.51.100.21 STREAM agent1")
    answer_link_probe(fake, [R])  # before the streams' rule: the probe is a bash pipeline too
    # a table stream's loader reports the rows it loaded
    fake.script(M, ("bash",), stdout="PEHA-ROWS certnames 5\n")
    fake.session_responder = answer_sql
    answer_agent_summary(fake)
    return fake


@pytest.fixture()
def env(tmp_path):
    settings = make_settings(tmp_path, backup_dir=tmp_path / "backups")
    fake = scripted(FakeExecutor())
    with context.using(executor=fake, api=fake_pe_api(settings), settings=settings):
        yield fake


SNAPSHOT_EXPORTED = "00000003-0000001B-1"  # what answer_sql exports


def _same_run(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Each run names its dump file after a run id of its own, and fills in the snapshot it exported where the plan
    shows a stand-in; the dry run and the run differ only there."""
    return tuple(re.sub(r"pe-puppetdb-[0-9a-f]{12}\.dump", "pe-puppetdb-<run>.dump", a)
                 .replace(SNAPSHOT_EXPORTED, PLANNED_SNAPSHOT) for a in argv)


def by_step(pairs: list[tuple[str, str, tuple[str, ...]]]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for key, host, argv in pairs:
        out.setdefault(key, []).append((host, _same_run(argv)))
    return out


def facts_reads(fake: FakeExecutor) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((c.host, _same_run(c.argv)) for c in fake.calls if c.kind == "run" and c.step == "facts")


def assert_plan_is_the_run(plan: list[dict], fake: FakeExecutor, *, facts: list | None = None,
                           subflows: dict[str, list[tuple[str, tuple[str, ...]]]] | None = None) -> None:
    """``facts``: the dry run's reads, which the run reads again first; ``subflows``: what each subflow step
    sends (its own facts reads and plan)."""
    sent = [(c.step, c.host, c.argv) for c in fake.calls if c.kind == "run"]
    assert [s for s in sent if not s[0]] == [], "commands sent outside any declared step"
    assert facts_reads(fake) == (facts or []), "the run read other facts than the dry run"
    sent = [s for s in sent if s[0] != "facts"]
    planned = by_step([(r["key"], r["host"], tuple(r["argv"])) for r in plan if r["argv"] is not None])
    ran = by_step(sent)
    concurrent = {r["key"] for r in plan if r["concurrent"]}
    polls = {r["key"] for r in plan if r["poll"]}
    assert set(ran) - set(r["key"] for r in plan) == set(), "a step ran that the plan does not show"
    plan_order = list(dict.fromkeys(r["key"] for r in plan))
    assert [k for k in plan_order if k in ran] == list(dict.fromkeys(s[0] for s in sent)), "steps ran out of order"
    for key in plan_order:
        want, got = planned.get(key, []), ran.get(key, [])
        if key in (subflows or {}):
            want, got = sorted((subflows or {})[key]), sorted(got)
        elif key in polls:
            got = list(dict.fromkeys(got))
        elif key in concurrent:
            want, got = sorted(want), sorted(got)
        assert got == want, f"step {key}: ran {got}, planned {want}"


def _provision(**kw):
    from flows.provision_replica import provision_replica

    return provision_replica, {"sync_timeout_s": 30, **kw}


def _enable(**kw):
    from flows.enable_replica import enable_replica

    return enable_replica, kw


def _promote(**kw):
    from flows.promote_replica import promote_replica

    return promote_replica, {"approve": True, **kw}


def _copy(**kw):
    return copy_puppetdb, {"approve": True, **kw}


def _forget(**kw):
    from flows.forget_replica import forget_replica

    return forget_replica, {"approve": True, **kw}


def _reinitialize(**kw):
    from flows.reinitialize_replica import reinitialize_replica

    return reinitialize_replica, {"approve": True, **kw}


def _failover(**kw):
    from flows.enable_ha_failover import enable_ha_failover

    return enable_ha_failover, {"host": M, **kw}


def _agent_failover(**kw):
    from flows.configure_agent_failover import Site, configure_agent_failover

    site = Site(name="east", value="east", server_list=["lb-east.example.com"], pcp_broker_list=["lb-east.example.com"])
    return configure_agent_failover, {"sites": [site], **kw}


def _health(**kw):
    from flows.verify_health import verify_health

    return verify_health, kw


CASES = {
    "provision": lambda: _provision(),
    "provision start_at=wait": lambda: _provision(start_at="wait"),
    "provision start_at=verify": lambda: _provision(start_at="verify"),
    "provision with the copy": lambda: _provision(copy_puppetdb=True),
    "enable agent-runs": lambda: _enable(),
    "enable job + drill": lambda: _enable(deploy="job", drill=True),
    **{f"enable start_at={s}": (lambda s=s: _enable(start_at=s, drill=True))
       for s in ("enable", "deploy", "remove-server", "drill")},
    "promote agent-runs": lambda: _promote(),
    "promote job": lambda: _promote(deploy="job", topology="mono"),
    "copy fast": lambda: _copy(),
    "copy documented": lambda: _copy(method="documented"),
    "forget": lambda: _forget(),
    "reinitialize two databases": lambda: _reinitialize(databases=["pe-rbac", "pe-classifier"]),
    "enable-ha-failover": lambda: _failover(),
    "configure-agent-failover": lambda: _agent_failover(),
    "verify-health": lambda: _health(),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_is_the_run(env, case):
    fake = env
    if case.startswith("promote"):
        fake.unreachable.add(M)  # the old master is gone, as promote requires
    if case == "provision with the copy":
        fake.pe_version = "2019.5.0"  # PE documents the manual copy beside provisioning up to 2019.5
    flow, params = CASES[case]()
    plan = flow(dry_run=True, **params)["plan"]
    facts = facts_reads(fake)
    assert {c.step for c in fake.calls if c.kind == "run"} <= {"facts"}, "a dry run reads facts and nothing else"
    subflows = {}
    for key in {r["key"] for r in plan if r["subflow"]}:
        fake.calls.clear()
        sub = copy_puppetdb(source=M, target=R, approve=True, dry_run=True)
        subflows[key] = ([(c.host, _same_run(c.argv)) for c in fake.calls if c.kind == "run"]
                         + [(r["host"], _same_run(tuple(r["argv"]))) for r in sub["plan"] if r["argv"]])
    fake.calls.clear()
    flow(**params)
    assert_plan_is_the_run(plan, fake, facts=facts, subflows=subflows)


def test_every_destructive_step_waits_for_an_approval_step(ctx):
    from flows._steps import Procedure, Step

    with pytest.raises(AssertionError, match="before any approval"):
        Procedure(ctx, "x", "y", [Step("act", "act", "h", lambda: None, destructive=True)])


def test_a_step_added_to_the_run_but_not_the_plan_fails_the_comparison(env):
    fake = env
    plan = [{"key": "promote", "host": R, "argv": ["puppet", "infrastructure", "promote", "replica"],
             "poll": False, "subflow": "", "concurrent": False}]
    fake.current_step = "promote"
    fake.run(R, ("puppet", "infrastructure", "promote", "replica"))
    fake.current_step = "unplanned"
    fake.run(R, tuple(commands.remove_files("/tmp/x")))
    with pytest.raises(AssertionError, match="a step ran that the plan does not show"):
        assert_plan_is_the_run(plan, fake)


# -- the summary artifact on every outcome, read back through the Prefect API -------------------------------


def latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no {key} artifact"
    return str(found[0].data)


def test_a_failed_promote_leaves_a_summary_naming_the_failing_step(env):
    fake = env
    fake.script(R, ("timeout", "3", "bash", "-c"), stdout="8140\n8081\n", override=True)  # the old master answers
    from flows.promote_replica import promote_replica

    state = promote_replica(approve=True, return_state=True)
    assert state.is_failed()
    summary = latest_artifact("promote-replica-summary")
    assert "# promote-replica: FAILED at step 'split-brain guard: is the old master gone?'" in summary
    assert "still answers on PE ports" in summary and "hint: promote only when the master is permanently offline" in summary
    assert "| puppet infrastructure promote replica |" not in summary  # never reached


def test_a_failed_copy_leaves_a_summary_naming_the_failing_step_and_cleans_up(env):
    fake = env
    fake.script(R, ("sha256sum",), stdout=hashlib.sha256(b"a flipped byte").hexdigest() + "  x.dump\n", override=True)
    from flows.copy_puppetdb import copy_puppetdb

    state = copy_puppetdb(method="documented", approve=True, return_state=True)
    assert state.is_failed() and "checksum mismatch" in state.message
    summary = latest_artifact("copy-puppetdb-summary")
    assert "# copy-puppetdb: FAILED at step 'transfer and verify checksum'" in summary
    assert "| remove the dump files |" in summary  # the cleanup ran after the failure
    assert not any(c.argv[:1] == ("runuser",) and "pg_restore" in " ".join(c.argv) for c in fake.calls)


@pytest.mark.parametrize(("method", "fails"), [("fast", True), ("documented", False)])
def test_a_link_that_cannot_be_measured_stops_only_the_fast_copy_and_before_any_change(env, method, fails):
    """The fast copy chooses its compression from the link's rate; the documented copy's forecast only reads it."""
    from flows.copy_puppetdb import copy_puppetdb

    env.script(M, commands.link_probe(R).argv, stdout="ssh: connect to host replica port 22: Connection refused\n",
               override=True)
    state = copy_puppetdb(method=method, approve=True, dry_run=True, return_state=True)
    assert state.is_failed() == fails
    if fails:
        assert "the link probe from master.example.com to replica.example.com printed no arrival times" in state.message
    assert [c.step for c in env.calls if c.kind == "run"] and {c.step for c in env.calls if c.kind == "run"} == {"facts"}
    assert sum(c.argv == commands.link_probe(R).argv for c in env.calls) == 1  # one probe for both methods' needs


def test_a_rejected_approval_ends_cancelled_with_its_summary_and_nothing_done(env, monkeypatch):
    from flows.forget_replica import forget_replica
    from pe_ha.errors import ApprovalRejected

    def rejected(ctx, book, what, *, approved_up_front, timeout_s=3600, allows=""):
        assert "puppet infrastructure forget" in allows  # the pause shows the rows it would allow
        raise ApprovalRejected(f"alice rejected: {what}")

    monkeypatch.setattr("flows._steps.require_approval", rejected)
    state = forget_replica(return_state=True)
    assert state.is_cancelled()
    assert "# forget-replica: not approved" in latest_artifact("forget-replica-summary")
    assert not any(c.argv[:3] == ("puppet", "infrastructure", "forget") for c in env.calls)


def test_the_fast_copy_sends_the_frame_around_its_jobs_in_the_planned_order(env):
    """The copy step is concurrent only in its jobs (streams and index builds): the staging database, schema
    frame and lists come first, in order, and the post-data, sequences and cleanup after, in order."""
    fake = env
    plan = copy_puppetdb(source=M, target=R, approve=True, dry_run=True)["plan"]
    rows = [(r["host"], _same_run(tuple(r["argv"]))) for r in plan if r["key"] == "copy" and r["argv"]]

    def is_job(row: tuple[str, tuple[str, ...]]) -> bool:
        text = " ".join(row[1])
        return "TO STDOUT" in text or ".build-" in text

    frame = [r for r in rows if not is_job(r)]
    assert len(frame) >= 8 and len(frame) < len(rows)
    fake.calls.clear()
    copy_puppetdb(source=M, target=R, approve=True)
    sent = [(c.host, _same_run(c.argv)) for c in fake.calls if c.kind == "run" and c.step == "copy"]
    assert [s for s in sent if s in frame] == frame
