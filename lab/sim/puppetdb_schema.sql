-- A PuppetDB-shaped schema for the pe-ha lab simulator (modelled on PuppetDB 6.x; not PuppetDB's own DDL).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE schema_migrations (version integer PRIMARY KEY, time timestamp without time zone NOT NULL);
CREATE TABLE environments (id bigserial PRIMARY KEY, environment text NOT NULL UNIQUE);
CREATE TABLE producers (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE report_statuses (id bigserial PRIMARY KEY, status text NOT NULL UNIQUE);
CREATE TABLE value_types (id bigint PRIMARY KEY, type varchar(32));
CREATE TABLE certnames (
  id bigserial PRIMARY KEY, certname text NOT NULL UNIQUE, latest_report_id bigint,
  deactivated timestamptz, expired timestamptz, package_hash bytea, latest_report_timestamp timestamptz);
CREATE TABLE catalogs (
  id bigserial PRIMARY KEY, hash bytea NOT NULL, transaction_uuid uuid,
  certname text NOT NULL UNIQUE REFERENCES certnames(certname) ON DELETE CASCADE,
  producer_timestamp timestamptz, api_version integer NOT NULL DEFAULT 1, "timestamp" timestamptz,
  catalog_version text, environment_id bigint REFERENCES environments(id), code_id text, catalog_uuid uuid,
  producer_id bigint REFERENCES producers(id), job_id text);
CREATE TABLE resource_params_cache (resource bytea PRIMARY KEY, parameters jsonb);
CREATE TABLE resource_params (
  resource bytea NOT NULL REFERENCES resource_params_cache(resource) ON DELETE CASCADE,
  name text NOT NULL, value text NOT NULL, PRIMARY KEY (resource, name));
CREATE TABLE catalog_resources (
  certname_id bigint NOT NULL REFERENCES certnames(id) ON DELETE CASCADE,
  resource bytea NOT NULL REFERENCES resource_params_cache(resource),
  tags text[] NOT NULL, type text NOT NULL, title text NOT NULL, exported boolean NOT NULL DEFAULT false,
  file text, line integer, PRIMARY KEY (certname_id, type, title));
CREATE INDEX catalog_resources_resource_idx ON catalog_resources (resource);
CREATE INDEX catalog_resources_type_title_idx ON catalog_resources (type, title);
CREATE INDEX catalog_resources_tags_gin ON catalog_resources USING gin (tags);
CREATE INDEX catalog_resources_file_trgm ON catalog_resources USING gin (file gin_trgm_ops);
CREATE TABLE edges (
  certname text NOT NULL REFERENCES certnames(certname) ON DELETE CASCADE,
  source bytea NOT NULL, target bytea NOT NULL, type text NOT NULL,
  PRIMARY KEY (certname, source, target, type));
CREATE TABLE fact_paths (
  id bigserial PRIMARY KEY, depth integer NOT NULL, name text NOT NULL, path text NOT NULL,
  path_array text[] NOT NULL, value_type_id bigint NOT NULL REFERENCES value_types(id),
  UNIQUE (path, value_type_id));
CREATE INDEX fact_paths_path_trgm ON fact_paths USING gist (path gist_trgm_ops);
CREATE TABLE factsets (
  id bigserial PRIMARY KEY, certname text NOT NULL UNIQUE REFERENCES certnames(certname) ON DELETE CASCADE,
  "timestamp" timestamptz NOT NULL, environment_id bigint REFERENCES environments(id), hash bytea,
  producer_timestamp timestamptz, producer_id bigint REFERENCES producers(id), paths_hash bytea,
  stable jsonb, stable_hash bytea, volatile jsonb);
CREATE INDEX factsets_stable_volatile_gin ON factsets USING gin ((stable || volatile) jsonb_path_ops);
CREATE TABLE reports (
  id bigserial, hash bytea NOT NULL, transaction_uuid uuid, certname text NOT NULL, puppet_version text,
  report_format smallint, configuration_version text, start_time timestamptz, end_time timestamptz,
  receive_time timestamptz, noop boolean, environment_id bigint, status_id bigint, metrics jsonb, logs jsonb,
  resources jsonb, producer_timestamp timestamptz NOT NULL, catalog_uuid uuid, cached_catalog_status text,
  code_id text, producer_id bigint, noop_pending boolean, corrective_change boolean, job_id text,
  PRIMARY KEY (id, producer_timestamp)) PARTITION BY RANGE (producer_timestamp);
CREATE UNIQUE INDEX reports_hash_idx ON reports (hash, producer_timestamp);
CREATE INDEX reports_certname_idx ON reports (certname);
CREATE TABLE resource_events (
  event_hash bytea NOT NULL, report_id bigint NOT NULL, certname_id bigint NOT NULL, status text,
  "timestamp" timestamptz NOT NULL, resource_type text NOT NULL, resource_title text NOT NULL, property text,
  new_value text, old_value text, message text, file text, line integer, name text, containment_path text[],
  containing_class text, corrective_change boolean, PRIMARY KEY (event_hash, "timestamp"))
  PARTITION BY RANGE ("timestamp");
CREATE INDEX resource_events_report_idx ON resource_events (report_id);
DO $$
DECLARE d date;
BEGIN
  FOR i IN -15..3 LOOP
    d := (now() AT TIME ZONE 'UTC')::date + i;
    EXECUTE format('CREATE TABLE %I PARTITION OF reports FOR VALUES FROM (%L) TO (%L)',
                   'reports_' || to_char(d, 'YYYYMMDD'), d::timestamptz, (d + 1)::timestamptz);
    EXECUTE format('CREATE TABLE %I PARTITION OF resource_events FOR VALUES FROM (%L) TO (%L)',
                   'resource_events_' || to_char(d, 'YYYYMMDD'), d::timestamptz, (d + 1)::timestamptz);
  END LOOP;
END $$;
INSERT INTO schema_migrations SELECT v, now() FROM generate_series(1, 74) v;
INSERT INTO environments (environment) VALUES ('production');
INSERT INTO report_statuses (status) VALUES ('changed'), ('unchanged'), ('failed');
INSERT INTO value_types VALUES (0, 'string'), (1, 'integer'), (2, 'float'), (3, 'boolean'), (4, 'null'), (5, 'json');
