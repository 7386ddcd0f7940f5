"""Each lab PE profile is the PE it claims to be (PostgreSQL major, PuppetDB schema, PE's owners and ACL), and
the PuppetDB copy (both methods) and the whole lifecycle work on it.

The default profile (2019.8) is what every other lab test meets; this module brings up each profile in turn
and leaves the session's lab as it found it (re-created) when it is done.
"""

from __future__ import annotations

import pytest

from lab import core, pdbgen
from lab.config import LabConfig
from lab.pdbschema import migrations
from lab.profiles import DEFAULT_PROFILE, PROFILES
from pe_ha import context
from tests.lab.conftest import lab_settings, lab_up

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_harness")]
M, R = "master.lab.test", "replica.lab.test"


# The real-PuppetDB profile has its own module (tests/lab/test_real_puppetdb.py): its data comes from PuppetDB.
SIMULATED = sorted(name for name, p in PROFILES.items() if not p.real_puppetdb)


@pytest.fixture(scope="module")
def session_lab_given_back(lab):
    """After this module's profiles, whatever order they ran in, the session's own lab again."""
    yield
    lab_up(lab)


@pytest.fixture(scope="module", params=SIMULATED)
def profile_lab(request, lab, session_lab_given_back):
    """The lab brought up as PE ``param`` with 20 PuppetDB nodes, as ``python -m lab up --pe P --pdb-nodes 20``."""
    return lab_up(LabConfig(agents=lab.agents, sync_seconds=lab.sync_seconds, pdb_nodes=20, pe=request.param))


def superuser_sql(cfg: LabConfig, host: str, query: str, database: str = "pe-puppetdb") -> list[tuple[str, ...]]:
    out = core.node_run(cfg.host(host), "psql", "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h",
                        "/run/postgresql", "-d", database, "-c", query, as_postgres=True).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line]


def test_profile_is_the_pe_it_claims(profile_lab):
    cfg = profile_lab
    p = cfg.profile
    for host in (M, R):
        assert superuser_sql(cfg, host, "SHOW server_version_num")[0][0].startswith(str(p.pg_major))
        version = superuser_sql(cfg, host, "SELECT version()")[0][0]
        assert version.startswith(f"PostgreSQL {p.pg_major}.")
        assert {"citext", "pg_trgm", "pgcrypto"} <= {r[0] for r in superuser_sql(cfg, host, "SELECT extname FROM pg_extension")}
        assert superuser_sql(cfg, host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'pe-puppetdb'") \
            == [("pe-postgres",)]
        acl = superuser_sql(cfg, host, "SELECT a.grantee, a.privilege_type FROM pg_database d, aclexplode(d.datacl) a "
                                       "WHERE d.datname = 'pe-puppetdb'")
        assert ("0", "CONNECT") not in acl and ("0", "TEMPORARY") not in acl  # CONNECT revoked from PUBLIC
    assert superuser_sql(cfg, M, "SELECT 1 FROM pg_roles WHERE rolname = 'pe-puppetdb-migrator'") == [("1",)]
    # pe-ha needs no role of its own: PE's roles only (the copy tests below run without one)
    assert superuser_sql(cfg, M, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'pe-ha%'") == []
    owners = {r[0] for r in superuser_sql(cfg, M, (
        "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'i')"))}
    assert owners == {"pe-puppetdb"}

    children = superuser_sql(cfg, M, (
        "SELECT p.relname, p.relkind, c.relname, c.relkind FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE c.relkind IN ('r', 'p') ORDER BY 3"))
    parents = {(r[0], r[1]) for r in children}
    if p.partitioning in ("inherits", "events"):
        # plain tables with INHERITS children; PuppetDB 6.9 (events) has not partitioned reports yet
        assert parents == ({("reports", "r"), ("resource_events", "r")} if p.partitioning == "inherits"
                           else {("resource_events", "r")})
        triggers = superuser_sql(cfg, M, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'resource_events'::regclass "
                                         "AND NOT tgisinternal")
        assert triggers == [("insert_resource_events_trigger",)]
    elif p.partitioning == "declarative":
        assert parents == {("reports", "p"), ("resource_events", "p")}  # declarative PARTITION BY RANGE
    else:  # PuppetDB 8.7: LIST (latest) over *_latest and the day-partitioned *_historical
        assert parents == {("reports", "p"), ("resource_events", "p"), ("reports_historical", "p"),
                           ("resource_events_historical", "p")}
        assert {"reports_latest", "resource_events_latest"} <= {r[2] for r in children}
    partitioned = "resource_events_" if p.partitioning == "events" else "reports_"
    assert any(r[2].startswith(partitioned) and r[2].endswith("z") and len(r[2]) == len(f"{partitioned}20261122z")
               for r in children)

    tables = {r[0] for r in superuser_sql(cfg, M, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                                   "AND tablename !~ '_[0-9]{8}z$'")}
    split = {"certnames_status", "reports_latest", "reports_historical", "resource_events_latest",
             "resource_events_historical"}
    assert len(tables - {"workspaces", "workspace_memberships"} - split) == 19
    assert (split <= tables) == (p.partitioning == "latest")
    trgm = {r[0] for r in superuser_sql(cfg, M, "SELECT indexname FROM pg_indexes WHERE indexdef ~ 'trgm_ops'")}
    assert {"fact_paths_path_trgm", "packages_name_trgm"} <= trgm
    assert ("catalog_resources_file_trgm" in trgm) == (84 not in migrations(p))  # dropped by PuppetDB 8.1
    if p.partitioning == "latest":  # every node's newest report, and its events, in *_latest
        nodes, latest = superuser_sql(cfg, M, "SELECT (SELECT count(*) FROM certnames), (SELECT count(*) FROM "
                                              "reports_latest)")[0]
        assert int(nodes) == int(latest) > 0
        assert int(superuser_sql(cfg, M, "SELECT count(*) FROM resource_events_latest")[0][0]) > 0
        assert int(superuser_sql(cfg, M, "SELECT count(DISTINCT tableoid) FROM reports_historical")[0][0]) > 1

    from lab.pdbschema import SEQUENCE_TABLES

    for seq, table in SEQUENCE_TABLES.items():
        last, top = superuser_sql(cfg, M, f"SELECT (SELECT last_value FROM {seq}), (SELECT coalesce(max(id), 0) FROM {table})")[0]
        assert int(last) > 1000 and int(last) > int(top), (seq, last, top)


def test_profile_refuses_flags_its_pe_version_lacks(profile_lab):
    r = core.node_run(profile_lab.replica, "puppet", "infrastructure", "reinitialize", "replica", "--db", "pe-rbac",
                      "--bogus-flag", "-y", check=False)
    assert r.returncode != 0 and "Unknown option '--bogus-flag'" in r.stderr
    # a bogus flag after --enable: the command is refused either way, naming the first flag the version lacks
    r = core.node_run(profile_lab.master, "puppet", "infrastructure", "provision", "replica", R, "--enable",
                      "--bogus-flag", check=False)
    lacks = "--enable" if profile_lab.profile.pe_line < (2019, 7) else "--bogus-flag"  # --enable came with 2019.7
    assert r.returncode != 0 and f"Unknown option '{lacks}'" in r.stderr
    r = core.node_run(profile_lab.replica, "puppet", "infrastructure", "reinitialize", "replica", "--db",
                      "pe-inventory", "-y", check=False)
    if "pe-inventory" in profile_lab.profile.reinitialize_databases:
        assert "must be one of" not in r.stderr
    else:
        assert r.returncode != 0 and "must be one of" in r.stderr


def comparable(settings, host: str) -> dict:
    """What the copy must carry, read by the test itself over its own connection (not through pe-ha's session)."""
    from lab import inspect
    from tasks.puppetdb import catalog_inventory, sequence_values

    with inspect.connect(settings.host(host).address) as conn:
        tables = [r[0] for r in conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                             "c.relnamespace WHERE nspname = 'public' AND relkind = 'r'")]
        rows = {t: conn.execute(f'SELECT count(*) FROM ONLY public."{t}"').fetchone()[0] for t in tables}
        inventory = catalog_inventory(inspect.Rows(conn))
        sequences = sequence_values(inspect.Rows(conn))
    return {"rows": rows, "sequences": sequences, **inventory}


def puppetdb_style_inserts(cfg: LabConfig, host: str) -> None:
    """What PuppetDB does next on the copy: a new node, and a report in today's partition (ids from the sequences)."""
    today = superuser_sql(cfg, host, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')")[0][0]
    split = cfg.profile.partitioning == "latest"
    into = f"reports_{today}z" if cfg.profile.partitioning == "inherits" else "reports"
    superuser_sql(cfg, host, (
        'SET ROLE "pe-puppetdb"; '
        "INSERT INTO certnames (certname) VALUES ('new-node.lab.test'); "
        + ("INSERT INTO certnames_status (certname) VALUES ('new-node.lab.test'); " if split else "")
        + f"INSERT INTO {into} (hash, certname, start_time, end_time, receive_time, producer_timestamp"
        + (", latest" if split else "") + ") "
        "VALUES (digest('pe-ha-copy-test', 'sha1'), 'new-node.lab.test', now(), now(), now(), now()"
        + (", true" if split else "") + ")"))


@pytest.mark.parametrize("method", ["fast", "documented"])
def test_copy_carries_everything_on_the_profile(profile_lab, method):
    from flows.copy_puppetdb import copy_puppetdb

    cfg = profile_lab
    if cfg.pe == DEFAULT_PROFILE:
        pytest.skip("the default profile's copies run in tests/lab/test_lifecycle.py (fast) and tests/reliability "
                    "(documented)")
    pdbgen.generate(cfg, 5, resources=50, reports=3, host=cfg.replica)  # an older, smaller copy on the replica
    assert comparable(lab_settings(), R)["sequences"] != comparable(lab_settings(), M)["sequences"]
    settings = lab_settings()
    source = comparable(settings, M)
    with context.using(settings=settings):
        copy_puppetdb(method=method, approve=True)
    target = comparable(settings, R)
    assert target["rows"] == source["rows"] and sum(source["rows"].values()) > 0
    assert target["sequences"] == source["sequences"]
    for key in ("partitions", "partitioned parents", "owners", "database owner", "database acl", "public schema owner",
                "public schema acl", "extensions"):
        assert target[key] == source[key], key
    puppetdb_style_inserts(cfg, R)


# Profiles whose procedures are another profile's: the copy and the version gate run on them, not a lifecycle.
# PE's 2025.0 DR pages read like 2023.8's (pe-current-versions.md); 2025.11 differs from 2025.0 in PostgreSQL's
# major. The lifecycle runs on the newest of them (2025.11, PostgreSQL 17). 2021.7's runs on 2021.7-real, the same
# PE with real PuppetDB (tests/lab/test_real_puppetdb.py).
SAME_PROCEDURE_AS = {"2023.8": "2025.11", "2025.0": "2025.11", "2021.7": "2021.7-real"}


def test_full_lifecycle_on_the_profile(profile_lab):
    if profile_lab.pe == DEFAULT_PROFILE:
        pytest.skip("the default profile runs the lifecycle in tests/lab/test_lifecycle.py")
    from tests.lab.test_lifecycle import run_lifecycle

    if profile_lab.pe in SAME_PROCEDURE_AS:
        from flows.provision_replica import provision_replica

        with context.using(settings=lab_settings()):  # the version gate: the dry run reads the PE version first
            plan = provision_replica(dry_run=True)
        assert f"PE {profile_lab.profile.pe_version} on {M}" in plan["facts"]
        return  # its procedures are the other profile's, whose lifecycle runs here

    lab_up(profile_lab)
    run_lifecycle(profile_lab)
