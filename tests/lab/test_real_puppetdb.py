"""The copy judged by PuppetDB itself: on the lab's ``2021.7-real`` profile, the master's pe-puppetdb is built by
Debian's real PuppetDB 7.12.1 (its own migrations) and filled through its command API; after pe-ha's copy the
replica's real PuppetDB starts on the copy, answers the master's PQL, and stores new data. A copy whose sequences
were set back is caught by pe-ha's comparison, and shown to break PuppetDB's next writes.

The module brings its own lab up and gives the session's lab back when it is done, so it does not depend on
the order of test modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import core, inspect, pdbgen, realpuppet, realserver, schemadiff
from lab.config import LabConfig
from pe_ha import context
from tests.lab.conftest import lab_settings, lab_up

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_harness")]
NODES = 12
M, R = "master.lab.test", "replica.lab.test"


def real_lab_up(cfg: LabConfig) -> LabConfig:
    """The real profile from nothing: a fresh lab whose master's PuppetDB built and filled pe-puppetdb."""
    realpuppet.stop_all(cfg)
    realserver.stop_all(cfg)
    core.up(cfg, verbose=False)
    realserver.up(cfg, NODES)
    return cfg


@pytest.fixture(scope="module")
def real_lab(lab):
    """The lab as PE 2021.7 with real PuppetDB on master and replica; the master's PuppetDB keeps running."""
    assert realpuppet.installed(), "Debian's puppetdb is missing: make setup installs it"
    assert realserver.installed(), "Debian's puppetserver or puppet agent is missing: make setup installs them"
    cfg = LabConfig(agents=lab.agents, sync_seconds=lab.sync_seconds, pdb_nodes=0, pe="2021.7-real")
    try:
        yield real_lab_up(cfg)
    finally:
        realpuppet.stop_all(cfg)
        realserver.stop_all(cfg)
        lab_up(lab)


@pytest.fixture()
def replica_puppetdb(real_lab):
    db = realpuppet.RealPuppetDB(real_lab, real_lab.replica)
    yield db
    db.stop()


def superuser_sql(cfg: LabConfig, host: str, query: str, database: str = "pe-puppetdb") -> list[str]:
    out = core.node_run(cfg.host(host), "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
                        "-d", database, "-c", query, as_postgres=True).stdout
    return [line for line in out.splitlines() if line]


@pytest.mark.parametrize("method", ["fast", "documented"])
def test_the_copy_is_accepted_by_the_replicas_real_puppetdb(real_lab, replica_puppetdb, method):
    from flows.copy_puppetdb import copy_puppetdb

    master = realpuppet.RealPuppetDB(real_lab, real_lab.master)
    assert master.running()
    source = realpuppet.answers(master)
    assert len(source["nodes"]) >= NODES and source["reports"][0]["count"] >= NODES * 3
    # The replica's pe-puppetdb runs, as on a provisioned replica: the copy stops it and starts it again (the real JVM)
    core.node_run(real_lab.replica, "puppet", "resource", "service", "pe-puppetdb", "ensure=running")
    with context.using(settings=lab_settings()):
        result = copy_puppetdb(method=method, approve=True)

    # The flow's own last step: the replica's real PuppetDB ran on the copy and counted what the master's did
    accepted = result["puppetdb_acceptance"]
    assert accepted["judged"] is True, accepted
    assert accepted["counts"]["reports"] == source["reports"][0]["count"]
    assert accepted["counts"]["nodes"] == len(source["nodes"])
    assert replica_puppetdb.start() == 0.0  # already running: the copy's start step started it
    assert realpuppet.answers(replica_puppetdb) == source  # node by node: timestamps and latest report hashes

    # PuppetDB's next writes on the copy: a new node's facts, catalog and reports take ids from the sequences
    new = f"new-{method}.lab.test"
    for command, version, payload in realpuppet.node_commands(new, index=900, reports=2, resources=5, producer=M):
        replica_puppetdb.submit(command, version, new, payload)
    after = realpuppet.answers(replica_puppetdb)
    assert len(after["nodes"]) == len(source["nodes"]) + 1
    assert after["reports"][0]["count"] == source["reports"][0]["count"] + 2


def test_a_copy_with_its_sequences_set_back_is_caught_and_breaks_puppetdbs_writes(real_lab, replica_puppetdb):
    from flows.copy_puppetdb import copy_puppetdb
    from tasks.puppetdb import differences, fingerprint_in

    with context.using(settings=lab_settings()):
        copy_puppetdb(method="fast", approve=True)
    superuser_sql(real_lab, R, "SELECT count(setval(c.oid::regclass, 1, false)) FROM pg_class c "
                               "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'S'")

    # pe-ha's own comparison, the one the copy makes before it swaps the staging database in
    with inspect.connect(real_lab.master.address) as conn:
        expected = fingerprint_in(inspect.Rows(conn))
    with inspect.connect(real_lab.replica.address) as conn:
        found = differences(expected, fingerprint_in(inspect.Rows(conn)))
    behind = {key for key in found if key.startswith("sequence:")}
    assert {"sequence:reports_id_seq", "sequence:factsets_id_seq", "sequence:certname_id_seq"} <= behind, found

    # Forced in anyway: PuppetDB starts and serves reads, and its next writes collide with the copied ids.
    replica_puppetdb.start()
    assert len(replica_puppetdb.query("nodes[certname] {}")) >= NODES
    offset = replica_puppetdb.log_size()
    node = "after-the-copy.lab.test"  # a new node: its certname and factset take ids the copy already has
    command, version, facts = realpuppet.node_commands(node, index=0, reports=0, resources=1, producer=M)[0]
    with pytest.raises(realpuppet.PuppetDBError, match="not processed|HTTP 503"):
        replica_puppetdb.submit(command, version, node, facts, wait_s=20)
    assert replica_puppetdb.query(f'nodes[certname] {{ certname = "{node}" }}') == []  # invisible to PQL
    log = replica_puppetdb.log_since(offset)
    assert "duplicate key value violates unique constraint" in log, log[-2000:]
    # The failed command stays in PuppetDB's queue and is processed again at its next start, on whatever database
    # it finds then (seen here: on the next copy, one node more than the master has). Dropped, so it cannot.
    replica_puppetdb.drop_queue()
    # And the broken database goes, so the replica is again a node that was never provisioned: provisioning's check
    # run stores facts through the replica's Puppet Server into whatever pe-puppetdb it finds there.
    pdbgen.create_database(real_lab, real_lab.replica)


RECONSTRUCTION_DIFF = Path(__file__).parent / "pdbschema-vs-puppetdb-7.12.1.txt"


def test_the_reconstructed_schema_differs_from_puppetdbs_own_only_as_written_down(real_lab):
    """lab/pdbschema.py at migration 80 with INHERITS children against what PuppetDB 7.12.1's migrations built:
    tables, columns and types, indexes, constraints, sequences, triggers, functions, owners and grants. Each
    difference is listed in the reviewed file beside this test and explained in docs/simulator.md; a change on
    either side fails here until the listing is reviewed again."""
    schemadiff.build_reconstruction(real_lab, real_lab.replica)
    with inspect.connect(real_lab.master.address) as conn:
        real = schemadiff.describe(conn)
    with inspect.connect(real_lab.replica.address, "pdbschema-reconstruction") as conn:
        reconstruction = schemadiff.describe(conn)
    assert len(real) > 300 and len(reconstruction) > 250  # both sides were read
    found = schemadiff.render(schemadiff.compare(real, reconstruction))
    assert found == RECONSTRUCTION_DIFF.read_text(), (
        "the reconstruction and PuppetDB's schema differ otherwise than written down; review, then update "
        f"{RECONSTRUCTION_DIFF.name} and docs/simulator.md:\n{found}")


def test_the_lifecycle_on_real_puppetdb(real_lab):
    """Provision, the copy (accepted by the replica's real PuppetDB), enable with the drill (the real agent failing
    over to the replica's real Puppet Server), promote, and the rest; then the real agent's pending change caught.
    Last in the module, since it promotes the replica. The tests above leave the replica unprovisioned, its
    PuppetDB stopped with nothing queued, and its database a working copy or empty; run
    alone or after anything else, it starts from a fresh lab."""
    from pe_ha.ssh import FabricExecutor
    from tests.lab.test_lifecycle import run_lifecycle, sim_state

    check = FabricExecutor(lab_settings(), line_sink=lambda *a: None)
    unprovisioned = sim_state(check, R)["role"] == "agent" and sim_state(check, M)["role"] == "master"
    check.close()
    run_lifecycle(real_lab if unprovisioned else real_lab_up(real_lab))
    replica = realpuppet.RealPuppetDB(real_lab, real_lab.replica)
    assert replica.running()  # the promoted replica's own PuppetDB, on the copy, still serves
    assert len(replica.query("nodes[certname] {}")) >= NODES

    # The agents were Puppet's own: the drill (enable's first managed node, master cut off) could only pass through
    # the replica's real Puppet Server, which stored the node's runs; the summary is the real agent's (only it
    # times fact generation).
    node = real_lab.agent_hosts[0]
    stored = sorted(real_lab.replica.path(f"{realserver.VARDIR}/reports/{node.fqdn}").glob("*.yaml"))
    assert stored, "no agent run of the test node reached the replica's Puppet Server"
    assert "fact_generation" in node.path("/opt/puppetlabs/puppet/public/last_run_summary.yaml").read_text()
    # ... and the promoted replica's PuppetDB stored them through Puppet Server's terminus, on the copied database
    stored = replica.query(f'nodes[certname, catalog_timestamp, facts_timestamp, report_timestamp] '
                           f'{{ certname = "{node.fqdn}" }}')
    assert stored and all(stored[0][k] for k in ("catalog_timestamp", "facts_timestamp", "report_timestamp")), stored

    # A real `puppet agent -t --noop` exits 0 with a change pending; pe-ha's check reads the real summary and names
    # the resource. The pending change: the node's server_list no longer what the lifecycle classified.
    from pe_ha import commands
    from pe_ha.errors import CommandFailed
    from tasks.agent import agent_run

    settings = lab_settings()
    with context.using(settings=settings) as ctx:
        assert agent_run.fn(ctx, node.fqdn, commands.agent_run(), expect_no_changes=False) in (0, 2)  # converged
        assert agent_run.fn(ctx, node.fqdn, commands.agent_run(noop=True), expect_no_changes=True) == 0
        conf = ("--section", "main", "--confdir", "/etc/puppetlabs/puppet")
        classified = core.node_run(node, "/usr/bin/puppet", "config", "print", "server_list", *conf).stdout.strip()
        assert classified, "the lifecycle left the node no server_list"
        core.node_run(node, "/usr/bin/puppet", "config", "set", "server_list",
                      f"{classified},elsewhere.lab.test:8140", *conf)  # still reaches its server first
        with pytest.raises(CommandFailed) as failed:
            agent_run.fn(ctx, node.fqdn, commands.agent_run(noop=True), expect_no_changes=True)
    assert failed.value.exit_code == 0  # the noop run itself "succeeded"
    assert "Exec[puppet.conf server_list]" in str(failed.value), str(failed.value)
    assert "elsewhere.lab.test" in node.path("/etc/puppetlabs/puppet/puppet.conf").read_text()  # noop: left as is
