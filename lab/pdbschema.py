"""PuppetDB's schema as the profile's PuppetDB version builds it, for the lab simulator's pe-puppetdb.

Modelled on PuppetDB's own migrations (``src/puppetlabs/puppetdb/scf/migrate.clj`` and ``partitioning.clj``
at the tags ../shared/reference/puppetdb-facts.md names): its 19 tables, the explicitly created sequences
(most with CYCLE, ``reports_id_seq`` owned by ``reports.id``), daily partitions named ``<table>_<YYYYMMDD>z``
(INHERITS children with CHECK constraints and a BEFORE INSERT trigger on ``resource_events`` up to
PuppetDB 7.12, ``reports`` from 6.10 only; declarative ``PARTITION BY RANGE`` from 7.13; from 8.7 a ``PARTITION BY LIST (latest)`` parent
over ``*_latest`` and a day-partitioned ``*_historical``, with deactivation in ``certnames_status`` from 8.5),
and the trigram indexes. Columns not read by
pe-ha or its tests are left out; docs/simulator.md says which parts are modelled rather than copied.
"""

from __future__ import annotations

import datetime as dt

from lab.profiles import PeProfile

PARTITION_DAYS = range(-15, 4)  # PuppetDB keeps reports 14 days by default; days ahead exist on demand

# (sequence, CYCLE?, first value): the lab starts them high, as on an installation that has run for years.
SEQUENCES = (
    ("catalogs_id_seq", True, 310_001), ("certname_id_seq", True, 20_001), ("environments_id_seq", False, 1_001),
    ("fact_paths_id_seq", True, 880_001), ("factsets_id_seq", True, 300_001), ("package_id_seq", True, 45_001),
    ("producers_id_seq", True, 1_201), ("report_statuses_id_seq", False, 1_001), ("reports_id_seq", True, 9_400_001),
    # leftovers of old migrations, never used again (fact_values_id_seq was never called: is_called false)
    ("catalogs_transform_id_seq1", False, 52_001), ("fact_values_id_seq", False, 5_001),
)
# sequence -> the table and column it numbers (for the end-of-load setval and the lab's checks)
SEQUENCE_TABLES = {
    "catalogs_id_seq": "catalogs", "certname_id_seq": "certnames", "environments_id_seq": "environments",
    "fact_paths_id_seq": "fact_paths", "factsets_id_seq": "factsets", "package_id_seq": "packages",
    "producers_id_seq": "producers", "report_statuses_id_seq": "report_statuses", "reports_id_seq": "reports",
}

_REPORT_COLUMNS = """
  id bigint NOT NULL DEFAULT nextval('reports_id_seq'), hash bytea NOT NULL, transaction_uuid uuid,
  certname text NOT NULL, puppet_version text NOT NULL DEFAULT '', report_format smallint NOT NULL DEFAULT 10,
  configuration_version text NOT NULL DEFAULT '', start_time timestamptz NOT NULL, end_time timestamptz NOT NULL,
  receive_time timestamptz NOT NULL, noop boolean, environment_id bigint, status_id bigint, metrics jsonb,
  logs jsonb, resources jsonb, producer_timestamp timestamptz NOT NULL, catalog_uuid uuid,
  cached_catalog_status text, code_id text, producer_id bigint, noop_pending boolean, corrective_change boolean,
  job_id text, report_type text DEFAULT 'agent'"""

_EVENT_COLUMNS = """
  event_hash bytea NOT NULL, report_id bigint NOT NULL, certname_id bigint NOT NULL, status text NOT NULL,
  "timestamp" timestamptz NOT NULL, resource_type text NOT NULL, resource_title text NOT NULL, property text,
  new_value text, old_value text, message text, file text, line integer, name text, containment_path text[],
  containing_class text, corrective_change boolean"""


def days(today: dt.date | None = None) -> list[dt.date]:
    today = today or dt.datetime.now(dt.UTC).date()
    return [today + dt.timedelta(days=i) for i in PARTITION_DAYS]


def suffix(day: dt.date) -> str:
    """PuppetDB's partition suffix: BASIC_ISO_DATE in UTC with a zone letter, unquoted, so stored lower-case."""
    return day.strftime("%Y%m%d") + "z"


def _bounds(day: dt.date) -> tuple[str, str]:
    nxt = day + dt.timedelta(days=1)
    return f"{day.isoformat()}T00:00:00Z", f"{nxt.isoformat()}T00:00:00Z"


def extensions_sql() -> str:
    """Run as a superuser: PE installs these in pe-puppetdb (not trusted extensions on PostgreSQL 11)."""
    return ("CREATE EXTENSION IF NOT EXISTS citext;\nCREATE EXTENSION IF NOT EXISTS pg_trgm;\n"
            "CREATE EXTENSION IF NOT EXISTS pgcrypto;\n")


def migrations(p: PeProfile) -> list[int]:
    """The rows of schema_migrations the profile's PuppetDB has applied."""
    if p.puppetdb_version.startswith("7.20"):  # 7.20.x records 88 without 83-87 (puppetdb-facts.md)
        return [*range(1, 83), 88]
    return list(range(1, p.schema_migration + 1))


def schema_sql(p: PeProfile, today: dt.date | None = None) -> str:
    """Run as pe-puppetdb (``SET ROLE``), so that every object is owned by it, as PuppetDB's migrator does."""
    out = ["SET client_min_messages = warning;"]
    for name, cycle, start in SEQUENCES:
        out.append(f"CREATE SEQUENCE {name} START WITH {start}{' CYCLE' if cycle else ''};")
    out.append("""
CREATE TABLE schema_migrations (version integer NOT NULL PRIMARY KEY, "time" timestamp without time zone NOT NULL);
CREATE TABLE environments (id bigint NOT NULL DEFAULT nextval('environments_id_seq') PRIMARY KEY,
  environment text NOT NULL UNIQUE);
CREATE TABLE producers (id bigint NOT NULL DEFAULT nextval('producers_id_seq') PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE report_statuses (id bigint NOT NULL DEFAULT nextval('report_statuses_id_seq') PRIMARY KEY,
  status text NOT NULL UNIQUE);
CREATE TABLE value_types (id bigint NOT NULL PRIMARY KEY, type character varying(32));
{certnames}
CREATE TABLE certname_fact_expiration (
  certid bigint NOT NULL PRIMARY KEY REFERENCES certnames(id) ON DELETE CASCADE, expire boolean NOT NULL,
  updated timestamptz NOT NULL);
CREATE TABLE catalogs (
  id bigint NOT NULL DEFAULT nextval('catalogs_id_seq') PRIMARY KEY, hash bytea NOT NULL, transaction_uuid uuid,
  certname text NOT NULL UNIQUE REFERENCES certnames(certname) ON DELETE CASCADE,
  producer_timestamp timestamptz, api_version integer NOT NULL DEFAULT 1, "timestamp" timestamptz,
  catalog_version text NOT NULL, environment_id bigint REFERENCES environments(id), code_id text,
  catalog_uuid uuid, producer_id bigint REFERENCES producers(id), job_id text);
CREATE INDEX catalogs_hash_idx ON catalogs (hash);
CREATE TABLE catalog_inputs (
  certname_id bigint NOT NULL REFERENCES certnames(id) ON DELETE CASCADE, type text NOT NULL, name text NOT NULL);
CREATE INDEX catalog_inputs_certname_id_idx ON catalog_inputs (certname_id);
CREATE INDEX catalog_inputs_type_name_idx ON catalog_inputs (type, name);
CREATE TABLE resource_params_cache (resource bytea NOT NULL PRIMARY KEY, parameters jsonb);
CREATE TABLE resource_params (
  resource bytea NOT NULL REFERENCES resource_params_cache(resource) ON DELETE CASCADE,
  name text NOT NULL, value text NOT NULL, PRIMARY KEY (resource, name));
CREATE INDEX resource_params_name_idx ON resource_params (name);
CREATE TABLE catalog_resources (
  certname_id bigint NOT NULL REFERENCES certnames(id) ON DELETE CASCADE,
  resource bytea NOT NULL REFERENCES resource_params_cache(resource), tags text[] NOT NULL, type text NOT NULL,
  title text NOT NULL, exported boolean NOT NULL, file text, line integer,
  CONSTRAINT catalog_resources_pkey1 PRIMARY KEY (certname_id, type, title));
CREATE INDEX catalog_resources_encode_idx ON catalog_resources (encode(resource, 'hex'));
CREATE INDEX catalog_resources_exported_idx ON catalog_resources (exported) WHERE exported = true;
CREATE INDEX catalog_resources_type_title_idx ON catalog_resources (type, title);
CREATE INDEX catalog_resources_tags_gin ON catalog_resources USING gin (tags);
{file_trgm}
CREATE TABLE edges (
  certname text NOT NULL REFERENCES certnames(certname) ON DELETE CASCADE,
  source bytea NOT NULL, target bytea NOT NULL, type text NOT NULL,
  CONSTRAINT edges_certname_source_target_type_unique_key UNIQUE (certname, source, target, type));
CREATE TABLE fact_paths (
  id bigint NOT NULL DEFAULT nextval('fact_paths_id_seq') PRIMARY KEY, depth integer NOT NULL, name text NOT NULL,
  path text NOT NULL, path_array text[] NOT NULL, value_type_id bigint NOT NULL REFERENCES value_types(id),
  CONSTRAINT fact_paths_path_type_unique UNIQUE (path, value_type_id));
CREATE INDEX fact_paths_name ON fact_paths (name);
CREATE INDEX fact_paths_path_trgm ON fact_paths USING gist (path gist_trgm_ops);
CREATE TABLE factsets (
  id bigint NOT NULL DEFAULT nextval('factsets_id_seq') PRIMARY KEY,
  certname text NOT NULL UNIQUE REFERENCES certnames(certname) ON DELETE CASCADE,
  environment_id bigint REFERENCES environments(id), "timestamp" timestamptz NOT NULL,
  producer_timestamp timestamptz NOT NULL, hash bytea, producer_id bigint REFERENCES producers(id),
  paths_hash bytea, stable jsonb, stable_hash bytea, volatile jsonb);
CREATE INDEX factsets_hash_expr_idx ON factsets (encode(hash, 'hex'));
CREATE INDEX fact_paths_path_idx ON factsets USING gin ((stable || volatile) jsonb_path_ops);
CREATE TABLE packages (
  id bigint NOT NULL DEFAULT nextval('package_id_seq') PRIMARY KEY, hash bytea NOT NULL UNIQUE, name text NOT NULL,
  provider text NOT NULL, version text NOT NULL);
CREATE INDEX packages_name_idx ON packages (name);
CREATE INDEX packages_name_trgm ON packages USING gin (name gin_trgm_ops);
CREATE TABLE certname_packages (
  certname_id bigint NOT NULL REFERENCES certnames(id), package_id bigint NOT NULL REFERENCES packages(id),
  PRIMARY KEY (certname_id, package_id));
CREATE INDEX certname_package_reverse_idx ON certname_packages (package_id, certname_id);
""".format(certnames=_SPLIT_CERTNAMES if p.partitioning == "latest" else _CERTNAMES,
           # migration 84 (PuppetDB 8.1) drops it
           file_trgm="" if 84 in migrations(p) else _FILE_TRGM))
    if p.partitioning in ("inherits", "events"):
        out.append(_inherits_sql(days(today), reports_partitioned=p.partitioning == "inherits"))
    elif p.partitioning == "declarative":
        out.append(_declarative_sql(days(today)))
    else:
        out.append(_latest_split_sql(days(today)))
    if p.partitioning not in ("inherits", "events"):  # workspaces: migration 80 (PuppetDB 7.8)
        out.append("""
CREATE TABLE workspaces (uuid uuid NOT NULL PRIMARY KEY, updated timestamptz NOT NULL);
CREATE TABLE workspace_memberships (
  workspace_uuid uuid NOT NULL REFERENCES workspaces(uuid) ON DELETE CASCADE, certname text NOT NULL,
  PRIMARY KEY (workspace_uuid, certname));
""")
    versions = migrations(p)
    out.append("INSERT INTO schema_migrations (version, time) VALUES "
               + ", ".join(f"({v}, '2023-06-01 12:00:00'::timestamp + interval '{v} minutes')" for v in versions) + ";")
    out.append("INSERT INTO environments (environment) VALUES ('production');")
    out.append("INSERT INTO report_statuses (status) VALUES ('changed'), ('unchanged'), ('failed');")
    out.append("INSERT INTO value_types VALUES (0, 'string'), (1, 'integer'), (2, 'float'), (3, 'boolean'), "
               "(4, 'null'), (5, 'json');")
    return "\n".join(out) + "\n"


_CERTNAMES = """CREATE TABLE certnames (
  id bigint NOT NULL DEFAULT nextval('certname_id_seq'), certname text NOT NULL, latest_report_id bigint,
  deactivated timestamptz, expired timestamptz, latest_report_timestamp timestamptz, package_hash bytea,
  catalog_inputs_timestamp timestamptz, catalog_inputs_uuid uuid,
  CONSTRAINT certnames_transform_pkey PRIMARY KEY (id), CONSTRAINT certnames_transform_certname_key UNIQUE (certname));
CREATE UNIQUE INDEX certnames_latest_report_id_idx ON certnames (latest_report_id);"""

# Migrations 85 (deactivated and expired move to certnames_status) and 86 (latest_report_id and
# latest_report_timestamp dropped: the latest report is the one in reports_latest).
_SPLIT_CERTNAMES = """CREATE TABLE certnames (
  id bigint NOT NULL DEFAULT nextval('certname_id_seq'), certname text NOT NULL, package_hash bytea,
  catalog_inputs_timestamp timestamptz, catalog_inputs_uuid uuid,
  CONSTRAINT certnames_transform_pkey PRIMARY KEY (id), CONSTRAINT certnames_transform_certname_key UNIQUE (certname));
CREATE TABLE certnames_status (certname text NOT NULL PRIMARY KEY, deactivated timestamptz, expired timestamptz,
  FOREIGN KEY (certname) REFERENCES certnames(certname) ON DELETE CASCADE);
CREATE INDEX certnames_status_not_active_idx ON certnames_status (certname)
  WHERE (deactivated IS NOT NULL OR expired IS NOT NULL);"""

_FILE_TRGM = ("CREATE INDEX catalog_resources_file_trgm ON catalog_resources USING gin (file gin_trgm_ops) "
              "WHERE file IS NOT NULL;")


def _inherits_sql(day_list: list[dt.date], *, reports_partitioned: bool = True) -> str:
    """PuppetDB 6.10-7.12: migrations 73, 74 and 76. PuppetDB 6.8-6.9 (``reports_partitioned=False``): migration
    73 only, so ``reports`` is still one plain table with its own keys (74 moved them to the day children)."""
    plain_reports = [
        f"CREATE TABLE reports ({_REPORT_COLUMNS}, CONSTRAINT reports_pkey PRIMARY KEY (id));",
        "CREATE UNIQUE INDEX reports_hash_expr_idx ON reports (encode(hash, 'hex'));",
        "CREATE INDEX reports_certname_idx ON reports (certname);",
        "CREATE INDEX reports_end_time_idx ON reports (end_time);",
        "ALTER TABLE reports ADD CONSTRAINT reports_certname_fkey FOREIGN KEY (certname) "
        "REFERENCES certnames(certname) ON DELETE CASCADE;"]
    out = [*([f"CREATE TABLE reports ({_REPORT_COLUMNS});"] if reports_partitioned else plain_reports),
           "ALTER SEQUENCE reports_id_seq OWNED BY reports.id;",
           f"CREATE TABLE resource_events ({_EVENT_COLUMNS});",
           # migration 73: inserts into the parent are routed to the day's child by this trigger
           """CREATE FUNCTION resource_events_insert_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  tablename varchar;
BEGIN
  SELECT FORMAT('resource_events_%sZ', TO_CHAR(NEW."timestamp" AT TIME ZONE 'UTC', 'YYYYMMDD')) INTO tablename;
  EXECUTE 'INSERT INTO ' || tablename || ' SELECT ($1).*' USING NEW;
  RETURN NULL;
END;
$$;""",
           "CREATE TRIGGER insert_resource_events_trigger BEFORE INSERT ON resource_events "
           "FOR EACH ROW EXECUTE PROCEDURE resource_events_insert_trigger();"]
    for day in day_list:
        s = suffix(day)
        lo, hi = _bounds(day)
        if reports_partitioned:
            out.append(f"""CREATE TABLE reports_{s} (CHECK (producer_timestamp >= TIMESTAMP WITH TIME ZONE '{lo}'
  AND producer_timestamp < TIMESTAMP WITH TIME ZONE '{hi}')) INHERITS (reports);
CREATE UNIQUE INDEX idx_reports_id_{s} ON reports_{s} (id);
CREATE UNIQUE INDEX reports_hash_expr_idx_{s} ON reports_{s} (encode(hash, 'hex'));
CREATE INDEX reports_certname_idx_{s} ON reports_{s} (certname);
CREATE INDEX reports_end_time_idx_{s} ON reports_{s} (end_time);
ALTER TABLE reports_{s} ADD CONSTRAINT reports_certname_fkey_{s} FOREIGN KEY (certname)
  REFERENCES certnames(certname) ON DELETE CASCADE;""")
        out.append(f"""CREATE TABLE resource_events_{s} (CHECK ("timestamp" >= TIMESTAMP WITH TIME ZONE '{lo}'
  AND "timestamp" < TIMESTAMP WITH TIME ZONE '{hi}')) INHERITS (resource_events);
CREATE UNIQUE INDEX resource_events_hash_{s} ON resource_events_{s} (event_hash);
CREATE INDEX resource_events_reports_id_idx_{s} ON resource_events_{s} (report_id);
CREATE INDEX resource_events_resource_timestamp_{s} ON resource_events_{s} (resource_type, resource_title, "timestamp");
ALTER TABLE resource_events_{s} ADD CONSTRAINT resource_events_certname_id_fkey_{s} FOREIGN KEY (certname_id)
  REFERENCES certnames(id) ON DELETE CASCADE;""")
    return "\n".join(out)


def _declarative_sql(day_list: list[dt.date]) -> str:
    """PuppetDB 7.13 and later: migrations 81 and 82 (declarative partitions)."""
    out = [f"CREATE TABLE reports ({_REPORT_COLUMNS}, PRIMARY KEY (id, producer_timestamp))"
           " PARTITION BY RANGE (producer_timestamp);",
           "ALTER SEQUENCE reports_id_seq OWNED BY reports.id;",
           "CREATE UNIQUE INDEX reports_hash_expr_idx ON reports (encode(hash, 'hex'), producer_timestamp);",
           "CREATE INDEX reports_certname_idx ON reports (certname);",
           "CREATE INDEX reports_end_time_idx ON reports (end_time);",
           "ALTER TABLE reports ADD CONSTRAINT reports_certname_fkey FOREIGN KEY (certname) "
           "REFERENCES certnames(certname) ON DELETE CASCADE;",
           f"CREATE TABLE resource_events ({_EVENT_COLUMNS}, PRIMARY KEY (event_hash, \"timestamp\"))"
           " PARTITION BY RANGE (\"timestamp\");",
           "CREATE INDEX resource_events_reports_id_idx ON resource_events (report_id);",
           "CREATE INDEX resource_events_resource_timestamp ON resource_events "
           "(resource_type, resource_title, \"timestamp\");",
           "ALTER TABLE resource_events ADD CONSTRAINT resource_events_certname_id_fkey FOREIGN KEY (certname_id) "
           "REFERENCES certnames(id) ON DELETE CASCADE;"]
    return "\n".join(out + _day_partitions("reports", "resource_events", day_list))


def _latest_split_sql(day_list: list[dt.date]) -> str:
    """PuppetDB 8.7: migrations 86 and 87. The parents are LIST-partitioned on ``latest``; ``*_latest`` holds each
    node's latest report and its events, ``*_historical`` (the former day-partitioned table) the rest."""
    out = [f"CREATE TABLE reports ({_REPORT_COLUMNS}, latest boolean, PRIMARY KEY (id, producer_timestamp, latest))"
           " PARTITION BY LIST (latest);",
           "ALTER SEQUENCE reports_id_seq OWNED BY reports.id;",
           "CREATE UNIQUE INDEX reports_hash_expr_idx ON reports (encode(hash, 'hex'), producer_timestamp, latest);",
           "CREATE INDEX reports_certname_idx ON reports (certname);",
           "CREATE INDEX reports_end_time_idx ON reports (end_time);",
           "CREATE TABLE reports_latest PARTITION OF reports FOR VALUES IN (true);",
           "ALTER TABLE reports_latest ADD CONSTRAINT reports_latest_certnames_unique UNIQUE (certname);",
           "ALTER TABLE reports_latest ADD CONSTRAINT reports_latest_certnames_fkey FOREIGN KEY (certname) "
           "REFERENCES certnames (certname) ON DELETE CASCADE;",
           "CREATE TABLE reports_historical PARTITION OF reports FOR VALUES IN (false)"
           " PARTITION BY RANGE (producer_timestamp);",
           "ALTER TABLE reports_historical ADD CONSTRAINT reports_certname_fkey FOREIGN KEY (certname) "
           "REFERENCES certnames(certname) ON DELETE CASCADE;",
           f"CREATE TABLE resource_events ({_EVENT_COLUMNS}, latest boolean,"
           " PRIMARY KEY (event_hash, \"timestamp\", latest)) PARTITION BY LIST (latest);",
           "CREATE INDEX resource_events_reports_id_idx ON resource_events (report_id);",
           "CREATE INDEX resource_events_resource_timestamp ON resource_events "
           "(resource_type, resource_title, \"timestamp\");",
           "CREATE TABLE resource_events_latest PARTITION OF resource_events FOR VALUES IN (true);",
           "CREATE TABLE resource_events_historical PARTITION OF resource_events FOR VALUES IN (false)"
           " PARTITION BY RANGE (\"timestamp\");",
           "ALTER TABLE resource_events_historical ADD CONSTRAINT resource_events_certname_id_fkey "
           "FOREIGN KEY (certname_id) REFERENCES certnames(id) ON DELETE CASCADE;"]
    return "\n".join(out + _day_partitions("reports_historical", "resource_events_historical", day_list))


def _day_partitions(reports_parent: str, events_parent: str, day_list: list[dt.date]) -> list[str]:
    """One ``reports_<day>z`` and one ``resource_events_<day>z`` partition per day (``partitioning.clj``)."""
    out = []
    for day in day_list:
        s = suffix(day)
        lo, hi = _bounds(day)
        out.append(f"CREATE TABLE reports_{s} PARTITION OF {reports_parent} FOR VALUES FROM ('{lo}') TO ('{hi}');")
        out.append(f"CREATE TABLE resource_events_{s} PARTITION OF {events_parent} "
                   f"FOR VALUES FROM ('{lo}') TO ('{hi}');")
    return out


def load_routing_sql(p: PeProfile) -> tuple[str, str]:
    """(before, after) the synthetic load: on the INHERITS profile, reports inserted into the parent are routed
    to the day's child for the load only (PuppetDB itself inserts into ``reports_<day>`` directly)."""
    if p.partitioning != "inherits":  # reports is partitioned by INHERITS only there
        return "", ""
    before = """CREATE FUNCTION pe_ha_lab_route_reports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('INSERT INTO %I SELECT ($1).*', 'reports_' || to_char(NEW.producer_timestamp AT TIME ZONE 'UTC',
                 'YYYYMMDD') || 'z') USING NEW;
  RETURN NULL;
END;
$$;
CREATE TRIGGER pe_ha_lab_route_reports BEFORE INSERT ON reports FOR EACH ROW EXECUTE PROCEDURE pe_ha_lab_route_reports();
"""
    after = "DROP TRIGGER pe_ha_lab_route_reports ON reports;\nDROP FUNCTION pe_ha_lab_route_reports();\n"
    return before, after


def sequences_after_load_sql() -> str:
    """Every used sequence ends well above the largest id in its table, as after years of churn."""
    out = []
    for seq, table in SEQUENCE_TABLES.items():
        out.append(f"SELECT setval('{seq}', greatest((SELECT last_value FROM {seq}), "
                   f"(SELECT coalesce(max(id), 0) FROM {table})) + 997);")
    out.append("SELECT setval('catalogs_transform_id_seq1', 52977);")
    return "\n".join(out) + "\n"


def database_sql(owner: str = "pe-postgres", name: str = "pe-puppetdb") -> str:
    """A PuppetDB database with PE's database ACL (run as a superuser on the postgres database)."""
    return f"""CREATE DATABASE "{name}" OWNER "{owner}";
REVOKE CONNECT, TEMPORARY ON DATABASE "{name}" FROM PUBLIC;
GRANT CREATE, TEMPORARY ON DATABASE "{name}" TO "pe-puppetdb";
GRANT CONNECT ON DATABASE "{name}" TO "pe-puppetdb-migrator" WITH GRANT OPTION;
SET ROLE "pe-puppetdb-migrator";
GRANT CONNECT ON DATABASE "{name}" TO "pe-puppetdb";
RESET ROLE;
"""


def database_grants_sql(p: PeProfile) -> str:
    """Inside pe-puppetdb, as a superuser: the public schema as PE sets it."""
    out = ['REVOKE ALL ON SCHEMA public FROM PUBLIC;', 'GRANT USAGE, CREATE ON SCHEMA public TO "pe-puppetdb";']
    return "\n".join(out) + "\n"
