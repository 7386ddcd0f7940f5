-- Synthetic PuppetDB content for the pe-ha lab simulator. Deterministic: the same :nodes give the same data.
-- psql variables: nodes, resources (per node), reports (per node), producer, latest_split (PuppetDB 8.7's
-- schema: deactivation in certnames_status, each node's latest report and its events in *_latest), and for
-- that schema latest_col (", latest"), latest_false (", false") and latest_of_report (", r.latest"), else empty.
SET client_min_messages = warning;
INSERT INTO producers (name) VALUES (:'producer') ON CONFLICT DO NOTHING;
SELECT id AS producer_id FROM producers WHERE name = :'producer' \gset
SELECT id AS env_id FROM environments WHERE environment = 'production' \gset
SELECT id AS changed_id FROM report_statuses WHERE status = 'changed' \gset
SELECT id AS unchanged_id FROM report_statuses WHERE status = 'unchanged' \gset
\if :latest_split
INSERT INTO certnames (certname)
  SELECT format('node%s.lab.test', lpad(i::text, 5, '0')) FROM generate_series(1, :nodes) i;
INSERT INTO certnames_status (certname) SELECT certname FROM certnames;
\else
INSERT INTO certnames (certname, latest_report_timestamp)
  SELECT format('node%s.lab.test', lpad(i::text, 5, '0')), now() - interval '10 minutes'
  FROM generate_series(1, :nodes) i;
\endif
-- 70 % of each catalog comes from 5 shared variants, 30 % is node-specific.
INSERT INTO resource_params_cache (resource, parameters)
  SELECT digest(format('shared-%s-%s', v, r), 'sha1'),
         jsonb_build_object('ensure', 'present', 'owner', 'root', 'mode', '0644',
                            'content', md5(format('c-%s-%s', v, r)) || md5(format('d-%s-%s', v, r)),
                            'notify', format('Service[svc%s]', r % 17))
  FROM generate_series(0, 4) v, generate_series(1, (:resources * 7) / 10) r;
INSERT INTO resource_params_cache (resource, parameters)
  SELECT digest(format('node-%s-%s', c.id, r), 'sha1'),
         jsonb_build_object('ensure', 'present', 'owner', 'app', 'mode', '0640',
                            'content', md5(format('n-%s-%s', c.id, r)) || md5(format('m-%s-%s', c.id, r)))
  FROM certnames c, generate_series((:resources * 7) / 10 + 1, :resources) r;
INSERT INTO resource_params (resource, name, value)
  SELECT resource, k, parameters ->> k FROM resource_params_cache, unnest(ARRAY['ensure', 'owner']) k;
INSERT INTO catalog_resources (certname_id, resource, tags, type, title, exported, file, line)
  SELECT c.id,
         CASE WHEN r <= (:resources * 7) / 10 THEN digest(format('shared-%s-%s', c.id % 5, r), 'sha1')
              ELSE digest(format('node-%s-%s', c.id, r), 'sha1') END,
         ARRAY['class', format('profile%s', r % 23), format('module%s', r % 50), (ARRAY['file','package','service','exec','user'])[r % 5 + 1]],
         (ARRAY['File','Package','Service','Exec','User'])[r % 5 + 1],
         format('/etc/app%s/conf-%s.d/item-%s', r % 50, r % 7, r), r % 97 = 0,
         format('/etc/puppetlabs/code/environments/production/modules/module%s/manifests/init.pp', r % 50), r % 400 + 1
  FROM certnames c, generate_series(1, :resources) r;
INSERT INTO edges (certname, source, target, type)
  SELECT c.certname, digest(format('%s-%s', c.id, r), 'sha1'), digest(format('%s-%s', c.id, r + 1), 'sha1'),
         t
  FROM certnames c, generate_series(1, :resources) r,
       LATERAL (SELECT unnest(CASE WHEN r % 4 = 0 THEN ARRAY['contains','before'] WHEN r % 13 = 0 THEN ARRAY['contains','notifies'] ELSE ARRAY['contains'] END) t) tt;
INSERT INTO catalogs (hash, transaction_uuid, certname, producer_timestamp, "timestamp", catalog_version, environment_id,
                      code_id, catalog_uuid, producer_id)
  SELECT digest(certname, 'sha1'), md5(certname || 'tx')::uuid, certname, now() - interval '10 minutes', now(),
         '1700000000', :env_id, 'urn:puppet:code-id:1:abc', md5(certname || 'cat')::uuid, :producer_id
  FROM certnames;
INSERT INTO fact_paths (depth, name, path, path_array, value_type_id)
  SELECT p % 4, format('fact%s', p), format('fact%s#~sub%s#~leaf%s', p, p % 11, p % 7),
         ARRAY[format('fact%s', p), format('sub%s', p % 11), format('leaf%s', p % 7)], p % 6
  FROM generate_series(1, 5000) p;
INSERT INTO factsets (certname, "timestamp", environment_id, hash, producer_timestamp, producer_id, paths_hash,
                      stable, stable_hash, volatile)
  SELECT c.certname, now(), :env_id, digest(c.certname || 'f', 'sha1'), now(), :producer_id, digest('paths', 'sha1'),
         (SELECT jsonb_object_agg(format('fact%s', k), format('value-%s-%s', k, md5(c.certname || k)))
            FROM generate_series(1, 250) k),
         digest(c.certname || 's', 'sha1'),
         jsonb_build_object('uptime_seconds', c.id * 37, 'memoryfree', format('%s MiB', c.id % 4096))
  FROM certnames c;
INSERT INTO reports (hash, transaction_uuid, certname, puppet_version, report_format, configuration_version,
                     start_time, end_time, receive_time, noop, environment_id, status_id, metrics, logs, resources,
                     producer_timestamp, catalog_uuid, cached_catalog_status, code_id, producer_id, noop_pending,
                     corrective_change :latest_col)
  SELECT digest(format('%s-%s', c.id, n), 'sha1'), md5(format('%s-%s', c.id, n))::uuid, c.certname, '5.5.22', 10,
         '1700000000', ts, ts + interval '41 seconds', ts + interval '43 seconds', false, :env_id, CASE WHEN n % 3 = 0 THEN :unchanged_id ELSE :changed_id END,
         (SELECT jsonb_agg(jsonb_build_object('category', 'time', 'name', format('m%s', k), 'value', k * 0.37))
            FROM generate_series(1, 40) k),
         (SELECT jsonb_agg(jsonb_build_object('level', 'notice', 'message', format('Applied catalog step %s of run %s on %s', k, n, c.certname),
                                              'source', 'Puppet', 'tags', jsonb_build_array('notice'), 'time', ts))
            FROM generate_series(1, 12) k),
         (SELECT jsonb_agg(jsonb_build_object('resource_type', 'File', 'resource_title', format('/etc/app/%s', k),
                                              'events', jsonb_build_array(), 'skipped', false))
            FROM generate_series(1, 25) k),
         ts, md5(format('cat-%s-%s', c.id, n))::uuid, 'not_used', 'urn:puppet:code-id:1:abc', :producer_id, false, false :latest_false
  FROM certnames c, generate_series(1, :reports) n,
       LATERAL (SELECT now() - (n * interval '12 hours') - (c.id % 60) * interval '1 minute' AS ts) t;
\if :latest_split
-- PuppetDB 8.7 stores each node's newest report in reports_latest (the row moves partitions).
UPDATE reports SET latest = true WHERE id IN (SELECT max(id) FROM reports GROUP BY certname);
\endif
INSERT INTO resource_events (event_hash, report_id, certname_id, status, "timestamp", resource_type, resource_title,
                             property, new_value, old_value, message, file, line, name, containment_path,
                             containing_class, corrective_change :latest_col)
  SELECT digest(format('%s-%s', r.id, e), 'sha1'), r.id, c.id, 'success', r.producer_timestamp, 'File',
         format('/etc/app/%s', e), 'content', md5(format('new%s', e)), md5(format('old%s', e)),
         format('content changed {md5}%s to {md5}%s', md5(format('old%s', e)), md5(format('new%s', e))),
         '/etc/puppetlabs/code/environments/production/modules/app/manifests/init.pp', e, 'content',
         ARRAY['Stage[main]', 'App', format('File[/etc/app/%s]', e)], 'App', false :latest_of_report
  FROM reports r JOIN certnames c ON c.certname = r.certname, generate_series(1, 10) e
  WHERE r.status_id = :changed_id;
\if :latest_split
\else
UPDATE certnames c SET latest_report_id = (SELECT max(id) FROM reports r WHERE r.certname = c.certname);
\endif
-- Packages (inventory), catalog inputs and fact expiration, small beside the catalogs.
INSERT INTO packages (hash, name, provider, version)
  SELECT digest(format('pkg-%s', k), 'sha1'), format('package%s', k), 'apt', format('1.%s.%s', k % 9, k % 5)
  FROM generate_series(1, 300) k;
INSERT INTO certname_packages (certname_id, package_id)
  SELECT c.id, p.id FROM certnames c JOIN packages p ON (p.id + c.id) % 6 = 0;
INSERT INTO catalog_inputs (certname_id, type, name)
  SELECT c.id, 'hiera', format('profile::key%s', k) FROM certnames c, generate_series(1, 20) k;
INSERT INTO certname_fact_expiration (certid, expire, updated)
  SELECT id, id % 10 <> 0, now() FROM certnames;
