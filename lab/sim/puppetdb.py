"""pe-ha lab simulator (not PE): PuppetDB, simulated over the lab's real PostgreSQL: reports, nodes, and the HA sync between master and replica."""

import hashlib
import json
import os
import re
import subprocess
import time

from base import (
    SIM,
    Route,
    SimError,
    log,
    my_address,
    pe_profile,
    peer_host,
    psql,
    reachable,
    state,
    update_state,
)


def cmd_node(args):
    """`puppet node purge <CERTNAME>` on the primary: `puppet node deactivate` (PuppetDB) plus `puppet node clean`
    (the CA's certificate; modelled as a list of revoked certnames in the state file)."""
    if len(args) != 2 or args[0] != "purge":
        raise SimError("Usage: puppet node purge <CERTNAME> (the simulator models only purge)")
    name = args[1]
    if state().get("role") != "master":
        raise SimError("Error: puppet node purge must be run on the primary server (its CA and PuppetDB).")
    if not name or any(c in name for c in "'\\;"):
        raise SimError("Error: invalid certname %r" % name)
    psql(deactivate_sql(name))
    update_state(revoked_certs=sorted(set(state().get("revoked_certs", [])) | {name}))
    log("node purge %s" % name)
    print("Notice: Revoked certificate with serial (simulated) for %s" % name)
    print("Notice: Removed files for %s from the CA" % name)
    print("Submitted 'deactivate node' for %s" % name)
    return 0


def latest_split():
    """PuppetDB 8.5+ keeps deactivation in certnames_status (migration 85); 8.7+ keeps each node's latest report
    in reports_latest (migration 86). The lab's profiles have both or neither."""
    return pe_profile().get("partitioning") == "latest"


def deactivate_sql(name):
    if latest_split():  # an upsert, as 8.7's storage.clj does: a node known only by sync may have no status row
        return ("INSERT INTO certnames_status (certname, deactivated) SELECT certname, now() FROM certnames "
                "WHERE certname = '%s' ON CONFLICT (certname) DO UPDATE SET deactivated = now() "
                "WHERE certnames_status.deactivated IS NULL" % name)
    return "UPDATE certnames SET deactivated = now() WHERE certname = '%s' AND deactivated IS NULL" % name


# PQL's count of each entity pe-ha's copy acceptance asks (tasks/puppetdb_query.py), as SQL on this host's
# pe-puppetdb. PuppetDB filters some entities to active nodes; the simulator counts rows, alike on both ends.
PQL_COUNTS = {
    "factsets": "SELECT count(*) FROM factsets",
    "catalogs": "SELECT count(*) FROM catalogs",
    "resources": "SELECT count(*) FROM catalog_resources",
    "reports": "SELECT count(*) FROM reports",
}


def active_nodes_sql():
    if latest_split():
        return ("SELECT count(*) FROM certnames c LEFT JOIN certnames_status s USING (certname) "
                "WHERE s.deactivated IS NULL AND s.expired IS NULL")
    return "SELECT count(*) FROM certnames WHERE deactivated IS NULL AND expired IS NULL"


def pql_answer(query):
    """``GET /pdb/query/v4?query=<entity>[count()] {}``: PuppetDB's answer shape, ``[{"count": n}]``. Any other
    query is refused (the simulator has no PQL engine)."""
    m = re.fullmatch(r"(\w+)\[count\(\)\] \{\}", (query or "").strip())
    entity = m.group(1) if m else None
    sql = active_nodes_sql() if entity == "nodes" else PQL_COUNTS.get(entity)
    if sql is None:
        return 400, "pe-ha lab simulator: only <entity>[count()] {} is answered, for nodes, %s" % ", ".join(PQL_COUNTS), \
            "text/plain"
    try:
        return 200, [{"count": int(psql(sql).strip())}]
    except (SimError, ValueError) as exc:
        return 500, "pe-ha lab simulator: %s" % exc, "text/plain"


def local_db_up():
    return reachable(my_address(), 5432, timeout=1.0)


def replication_status():
    s = state()
    if s.get("role") == "master" and s.get("replica"):
        ok = reachable(s["replica"], 5432, timeout=1.0)
        return {"mode": "source", "status": "active" if ok else "inactive"}
    if s.get("role") == "replica" and s.get("provisioned"):
        ok = reachable(s["master"], 5432, timeout=1.0)
        return {"mode": "replica", "status": "running" if ok else "down"}
    return {"mode": "none", "status": "none"}


def pdb_has_schema(host=None):
    try:
        return psql("SELECT to_regclass('public.reports') IS NOT NULL", host=host).strip() == "t"
    except (SimError, subprocess.TimeoutExpired):
        return False


def insert_reports_sql(columns, select_sql):
    """INSERT the rows of ``select_sql`` into reports as the profile's PuppetDB does: into ``reports`` itself with
    declarative partitions (7.13+), into each day's ``reports_<YYYYMMDD>z`` child with INHERITS (6.10-7.12: no
    trigger on reports, PuppetDB's storage.clj inserts into the child)."""
    if latest_split():  # synced reports go to the historical part; store_report moves the latest itself
        return "INSERT INTO reports (%s, latest) SELECT %s, false FROM (%s) s;" % (columns, columns, select_sql)
    if pe_profile().get("partitioning") != "inherits":
        return "INSERT INTO reports (%s) SELECT %s FROM (%s) s;" % (columns, columns, select_sql)
    return ("DO $$ DECLARE d date; BEGIN FOR d IN SELECT DISTINCT (producer_timestamp AT TIME ZONE 'UTC')::date "
            "FROM (%s) s LOOP EXECUTE format('INSERT INTO %%I (%s) SELECT %s FROM (%s) s "
            "WHERE (producer_timestamp AT TIME ZONE ''UTC'')::date = %%L', "
            "'reports_' || to_char(d, 'YYYYMMDD') || 'z', d); END LOOP; END $$;"
            % (select_sql, columns, columns, select_sql.replace("'", "''")))


def store_report(body):
    name = body.get("certname", "")
    if not name or any(c in name for c in "'\\;"):
        return
    status = {"changed": "changed", "unchanged": "unchanged", "failed": "failed"}.get(body.get("status"), "unchanged")
    noop = "true" if body.get("noop") else "false"
    columns = ("hash, certname, puppet_version, report_format, noop, status_id, producer_timestamp, receive_time,"
               " start_time, end_time, metrics, logs")
    row = (f"SELECT digest('{name}' || clock_timestamp()::text, 'sha1') AS hash, '{name}'::text AS certname,"
           f" '5.5.22'::text AS puppet_version, 10::smallint AS report_format, {noop} AS noop,"
           f" (SELECT id FROM report_statuses WHERE status = '{status}') AS status_id, now() AS producer_timestamp,"
           " now() AS receive_time, now() AS start_time, now() AS end_time, '[]'::jsonb AS metrics, '[]'::jsonb AS logs")
    if latest_split():  # PuppetDB 8.7's add-report!: the previous latest moves to the historical part
        sql = (f"INSERT INTO certnames (certname) VALUES ('{name}') ON CONFLICT (certname) DO NOTHING;"
               f"INSERT INTO certnames_status (certname) VALUES ('{name}') ON CONFLICT (certname) DO NOTHING;"
               f"UPDATE reports SET latest = false WHERE latest AND certname = '{name}';"
               f"INSERT INTO reports ({columns}, latest) SELECT {columns}, true FROM ({row}) s;")
    else:
        sql = (f"INSERT INTO certnames (certname) VALUES ('{name}') ON CONFLICT (certname) DO NOTHING;"
               + insert_reports_sql(columns, row)
               + f"UPDATE certnames SET latest_report_timestamp = now() WHERE certname = '{name}';")
    try:
        psql(sql)
    except (SimError, subprocess.TimeoutExpired) as e:
        log("store_report failed: %s" % e)


def pdb_nodes():
    try:
        out = psql("SELECT c.certname, coalesce(s.deactivated::text, '') FROM certnames c LEFT JOIN certnames_status s"
                   " USING (certname) ORDER BY 1" if latest_split() else
                   "SELECT certname, coalesce(deactivated::text, '') FROM certnames ORDER BY certname")
    except (SimError, subprocess.TimeoutExpired):
        return []
    rows = [line.split("|") for line in out.splitlines() if line]
    return [{"certname": r[0], "deactivated": r[1] or None} for r in rows]


SYNC_COLUMNS = ("hash, transaction_uuid, certname, puppet_version, report_format, configuration_version, start_time,"
                " end_time, receive_time, noop, status_id, metrics, logs, producer_timestamp")


def pdb_sync_once(peer):
    """Pull reports (and their certnames) the peer has and this host lacks: PuppetDB HA sync, simulated."""
    if not pdb_has_schema() or not pdb_has_schema(peer):
        return 0
    src = subprocess.run(
        ["/opt/puppetlabs/server/bin/psql", "-X", "-q", "-h", peer, "-U", "pe-puppetdb", "-d", "pe-puppetdb", "-c",
         "COPY (SELECT %s FROM reports WHERE producer_timestamp > now() - interval '1 day') TO STDOUT" % SYNC_COLUMNS],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PGCONNECT_TIMEOUT="3", PGPASSFILE="/root/.pgpass"))
    if src.returncode:
        raise SimError("sync read from %s failed: %s" % (peer, src.stderr.strip()))
    script = "%s/run/sync-%d.sql" % (SIM, os.getpid())
    with open(script, "w") as f:
        f.write("BEGIN;\nCREATE TEMP TABLE incoming AS SELECT %s FROM reports LIMIT 0;\n" % SYNC_COLUMNS)
        f.write("\\copy incoming FROM pstdin\n")
        f.write("INSERT INTO certnames (certname) SELECT DISTINCT certname FROM incoming ON CONFLICT DO NOTHING;\n")
        if latest_split():  # PuppetDB 8.5+ gives every certname its status row
            f.write("INSERT INTO certnames_status (certname) SELECT DISTINCT certname FROM incoming "
                    "ON CONFLICT DO NOTHING;\n")
        f.write("DELETE FROM incoming i WHERE EXISTS "
                "(SELECT 1 FROM reports r WHERE r.hash = i.hash AND r.producer_timestamp = i.producer_timestamp);\n")
        f.write(insert_reports_sql(SYNC_COLUMNS, "SELECT * FROM incoming") + "\n")
        f.write("SELECT count(*) FROM incoming;\nCOMMIT;\n")
    try:
        out = psql(script, input_text=src.stdout, script=True)
    finally:
        os.unlink(script)
    added = int((out.strip().splitlines() or ["0"])[-1] or 0)
    update_state(last_pdb_sync=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if added:
        log("puppetdb sync: %d reports from %s" % (added, peer))
    return added


def pdb_sync_loop():
    while True:
        time.sleep(float(state().get("pdb_sync_interval", 2.0)))
        peer = peer_host()
        if not peer or time.time() < state().get("puppetdb_sync_until", 0):
            continue
        try:
            pdb_sync_once(peer)
        except Exception as e:  # the peer may be cut off: keep trying, as PuppetDB does
            log("puppetdb sync with %s failed: %s" % (peer, e))


def _command(port, path, body):
    store_report(body or {})
    return 200, {"uuid": hashlib.md5(json.dumps(body).encode()).hexdigest()}


ROUTES = [
    Route("GET", 8081, "/pdb/query/v4/nodes", lambda port, path, body: (200, pdb_nodes())),
    Route("POST", 8081, "/pdb/cmd/v1", _command),
]
