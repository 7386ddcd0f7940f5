"""Table-driven tests pinning the exact argv of every command pe-ha runs on a PE node."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from pe_ha import commands as c
from pe_ha.errors import ValidationError

TF = "/root/.puppetlabs/pe-ha.token"
PG = {"os_user": "pe-postgres", "bin_dir": "/opt/puppetlabs/server/bin"}
R = ["runuser", "-u", "pe-postgres", "--"]
B = "/opt/puppetlabs/server/bin"

PINNED = [
    (c.provision_replica("replica.example.com", token_file=TF),
     "puppet infrastructure provision replica replica.example.com --color false --token-file " + TF),
    (c.enable_replica("replica.example.com", topology="mono", token_file=TF),
     "puppet infrastructure enable replica replica.example.com --topology mono --yes --color false --token-file " + TF),
    (c.enable_replica("r.example.com", topology="mono-with-compile", skip_agent_config=True, token_file=TF),
     "puppet infrastructure enable replica r.example.com --topology mono-with-compile --skip-agent-config --yes "
     "--color false --token-file " + TF),
    (c.enable_replica("r.example.com", topology="mono-with-compile", token_file=TF,
                      agent_server_urls=["lb.example.com", "lb2.example.com:8141"], pcp_brokers=["lb.example.com"],
                      infra_agent_server_urls=["m.example.com"], infra_pcp_brokers=["m.example.com:8142"]),
     "puppet infrastructure enable replica r.example.com --topology mono-with-compile "
     "--agent-server-urls lb.example.com:8140,lb2.example.com:8141 --pcp-brokers lb.example.com:8142 "
     "--infra-agent-server-urls m.example.com:8140 --infra-pcp-brokers m.example.com:8142 --yes --color false "
     "--token-file " + TF),
    (c.promote_replica(topology="mono-with-compile"),
     "puppet infrastructure promote replica --topology mono-with-compile --yes --color false"),
    (c.promote_replica(topology="mono"), "puppet infrastructure promote replica --topology mono --yes --color false"),
    (c.forget_replica("replica.example.com", token_file=TF),
     "puppet infrastructure forget replica.example.com --color false --token-file " + TF),
    (c.make_dir("/etc/puppetlabs/puppet", mode="0755"), "install -d -m 0755 /etc/puppetlabs/puppet"),
    (c.make_readable("/etc/puppetlabs/puppet/hiera.yaml"), "chmod 0644 -- /etc/puppetlabs/puppet/hiera.yaml"),
    (c.reinitialize_replica(), "puppet infrastructure reinitialize replica -y --color false"),
    (c.reinitialize_replica(["pe-rbac", "pe-activity", "pe-rbac"]),
     "puppet infrastructure reinitialize replica --db pe-rbac --db pe-activity -y --color false"),
    (c.infrastructure_status(), "puppet infrastructure status --format json"),
    (c.infrastructure_status(host="replica.example.com", verbose=True),
     "puppet infrastructure status --verbose --host replica.example.com --format json"),
    (c.infrastructure_status(json=False, verbose=True), "puppet infrastructure status --verbose"),
    (c.enable_ha_failover("old-master.example.com", topology="mono", replication_timeout_secs=900, tmpdir="/var/tmp"),
     "puppet infrastructure run enable_ha_failover host=old-master.example.com topology=mono "
     "replication_timeout_secs=900 tmpdir=/var/tmp"),
    (c.enable_ha_failover("old.example.com", caserver="new.example.com", topology="mono-with-compile",
                          skip_agent_config=True),
     "puppet infrastructure run enable_ha_failover host=old.example.com caserver=new.example.com "
     "topology=mono-with-compile skip_agent_config=true"),
    (c.enable_ha_failover("old.example.com", topology="mono-with-compile",
                          agent_server_urls=["new.example.com:8140", "compile1.example.com:8140"],
                          pcp_brokers=["new.example.com:8142"]),
     "puppet infrastructure run enable_ha_failover host=old.example.com topology=mono-with-compile "
     "agent_server_urls=new.example.com:8140,compile1.example.com:8140 pcp_brokers=new.example.com:8142"),
    (c.service("puppet", "stopped"), "puppet resource service puppet ensure=stopped"),
    (c.service("pe-puppetdb", "running"), "puppet resource service pe-puppetdb ensure=running"),
    (c.agent_run(), "puppet agent -t"),
    (c.agent_run(noop=True, server_list=["replica.example.com"]),
     "puppet agent -t --noop --server_list=replica.example.com"),
    (c.agent_run(server_list=["a.example.com:8140", "b.example.com"]), "puppet agent -t --server_list=a.example.com:8140,b.example.com"),
    (c.config_print("server"), "puppet config print server --section main"),
    (c.config_set("server", "master.example.com"), "puppet config set server master.example.com --section main"),
    (c.config_delete("server"), "puppet config delete server --section main"),
    (c.pg_dump(file="/var/tmp/pe.dump", **PG),
     f"runuser -u pe-postgres -- {B}/pg_dump --format=custom --compress=3 --file=/var/tmp/pe.dump --dbname=pe-puppetdb"),
    (c.pg_restore(file="/var/tmp/pe.dump", jobs=4, **PG),
     f"runuser -u pe-postgres -- {B}/pg_restore --clean --jobs=4 --dbname=pe-puppetdb /var/tmp/pe.dump"),
    (c.psql_database_size(**PG), f"runuser -u pe-postgres -- {B}/psql -c '\\l+ \"pe-puppetdb\"'"),
    (c.psql("select 1", database="pe-puppetdb", **PG),
     f"runuser -u pe-postgres -- {B}/psql -X -A -t -v ON_ERROR_STOP=1 -d pe-puppetdb -c 'select 1'"),
    (c.sha256sum("/var/tmp/pe.dump"), "sha256sum -- /var/tmp/pe.dump"),
    (c.free_bytes("/var/tmp"), "df --output=avail -B1 -- /var/tmp"),
    (c.cpu_count(), "nproc"),
    (c.remove_files("/var/tmp/a", "/var/tmp/b"), "rm -f -- /var/tmp/a /var/tmp/b"),
    (c.scp_to("/var/tmp/pe.dump", host="replica.example.com", dest="/var/tmp/pe.dump"),
     "scp -q -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 /var/tmp/pe.dump "
     "replica.example.com:/var/tmp/pe.dump"),
    # the fast copy's schema: it opens the ssh connection its streams then share
    (c.scp_to("/var/tmp/s.dump", host="replica.example.com", dest="/var/tmp/s.dump", multiplex=True),
     "scp -q -o BatchMode=yes -o ControlMaster=auto -o ControlPath=/tmp/pe-ha-mux-%C -o ControlPersist=30 "
     "-o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 /var/tmp/s.dump "
     "replica.example.com:/var/tmp/s.dump"),
]


@pytest.mark.parametrize(("command", "expected"), PINNED, ids=[p[1][:60] for p in PINNED])
def test_command_is_pinned(command: c.Command, expected: str) -> None:
    import shlex

    assert shlex.join(command.argv) == expected
    assert all(isinstance(a, str) for a in command.argv)


REFUSED = [
    (lambda: c.provision_replica("replica.example.com; rm -rf /", token_file=TF), "RFC 1123"),
    (lambda: c.provision_replica("-rf", token_file=TF), "RFC 1123"),
    (lambda: c.provision_replica("repl ica", token_file=TF), "RFC 1123"),
    (lambda: c.provision_replica("rеplica.example.com", token_file=TF), "ASCII"),  # Cyrillic 'е'
    (lambda: c.provision_replica("a" * 64 + ".example.com", token_file=TF), "RFC 1123"),
    (lambda: c.provision_replica(("a" * 60 + ".") * 5, token_file=TF), "253"),
    (lambda: c.provision_replica("", token_file=TF), "required"),
    (lambda: c.provision_replica("r.example.com", token_file="relative/token"), "absolute path"),
    (lambda: c.enable_replica("r.example.com", topology="split", token_file=TF), "topology"),
    (lambda: c.enable_replica("r.example.com", topology="mono-with-compile", token_file=TF), "needs agent_server_urls"),
    (lambda: c.enable_replica("r.example.com", topology="mono-with-compile", token_file=TF,
                              agent_server_urls=["lb.example.com"]), "needs agent_server_urls"),
    (lambda: c.enable_replica("r.example.com", topology="mono", token_file=TF, skip_agent_config=True,
                              pcp_brokers=["x.example.com"]), "conflicts"),
    (lambda: c.enable_replica("r.example.com", topology="mono-with-compile", token_file=TF,
                              agent_server_urls=["lb.example.com:99999"], pcp_brokers=["lb.example.com"]), "port"),
    (lambda: c.reinitialize_replica(["pe-puppetdb"]), "cannot be reinitialized"),
    (lambda: c.reinitialize_replica(["pe-rbac; drop"]), "cannot be reinitialized"),
    (lambda: c.service("sshd", "stopped"), "not one pe-ha manages"),
    (lambda: c.service("puppet", "restarted"), "running or stopped"),
    (lambda: c.pg_dump(file="/var/tmp/../etc/x", **PG), "absolute path"),
    (lambda: c.pg_dump(file="/var/tmp/x", compress=12, **PG), "compress"),
    (lambda: c.pg_restore(file="/var/tmp/x", jobs=0, **PG), "whole number"),
    (lambda: c.pg_dump(file="/var/tmp/x", os_user="pe-postgres;id", bin_dir=B), "user name"),
    (lambda: c.enable_ha_failover("old.example.com", topology="mono", replication_timeout_secs=-5), "whole number"),
    (lambda: c.enable_ha_failover("old.example.com", topology="mono-with-compile"), "agent_server_urls and pcp_brokers"),
    (lambda: c.enable_ha_failover("old.example.com", topology="mono-with-compile",
                                  agent_server_urls=["new.example.com:8140"]), "agent_server_urls and pcp_brokers"),
    (lambda: c.enable_ha_failover("old.example.com", topology="mono", agent_server_urls=["new.example.com"]),
     "host:port"),
    (lambda: c.config_set("server", "a\nb"), "line break"),
    (lambda: c.config_delete("server", section="main;x"), "section"),
    (lambda: c.write_restore_lists("/var/tmp/s", {"/var/tmp/x.list": ["x; rm -rf /"]}, others="/var/tmp/l", **PG),
     "plain lower-case identifier"),
    (lambda: c.write_restore_lists("/var/tmp/s", {"relative.list": ["a_pkey"]}, others="/var/tmp/l", **PG),
     "absolute path"),
    (lambda: c.write_restore_lists("s.dump", {"/var/tmp/x.list": ["a_pkey"]}, others="/var/tmp/l", **PG),
     "absolute path"),
    (lambda: c.pg_restore_listed(file="/var/tmp/s", list_file="/var/tmp/l", database="d", jobs=1,
                                 maintenance_mem_mb=0, **PG), "maintenance_work_mem"),
]


@pytest.mark.parametrize(("build", "reason"), REFUSED)
def test_bad_input_is_refused_before_a_command_exists(build, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert reason in str(info.value)


def test_hostnames_are_lower_cased() -> None:
    assert c.forget_replica("Replica.Example.COM", token_file=TF).argv[3] == "replica.example.com"


FAST_PINNED = [
    (c.pg_dump_schema(file="/var/tmp/s.dump", snapshot="00000003-0000001B-1", **PG),
     f"runuser -u pe-postgres -- {B}/pg_dump --format=custom --compress=0 '--exclude-table-data=*' "
     "--snapshot=00000003-0000001B-1 --file=/var/tmp/s.dump --dbname=pe-puppetdb"),
    (c.pg_restore_section(file="/var/tmp/s.dump", database="pe-puppetdb-pe-ha-staging", section="post-data", jobs=2, **PG),
     f"runuser -u pe-postgres -- {B}/pg_restore --section=post-data --jobs=2 --dbname=pe-puppetdb-pe-ha-staging "
     "/var/tmp/s.dump"),
    (c.pg_restore_toc(file="/var/tmp/s.dump", **PG), f"runuser -u pe-postgres -- {B}/pg_restore --list /var/tmp/s.dump"),
    (c.pg_restore_listed(file="/var/tmp/s.dump", list_file="/var/tmp/s.dump.late.list",
                         database="pe-puppetdb-pe-ha-staging", jobs=2, maintenance_mem_mb=512, **PG),
     f"runuser -u pe-postgres -- env 'PGOPTIONS=-c maintenance_work_mem=512MB' {B}/pg_restore --section=post-data "
     "--jobs=2 --use-list=/var/tmp/s.dump.late.list --dbname=pe-puppetdb-pe-ha-staging /var/tmp/s.dump"),
    # PostgreSQL 11 (PE 2019.2-2021.x) has no DROP DATABASE ... WITH (FORCE): sessions are ended first.
    (c.recreate_database("pe-puppetdb-pe-ha-staging", owner="pe-puppetdb", **PG),
     f"runuser -u pe-postgres -- {B}/psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "
     "'DO $pe_ha$ BEGIN PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN "
     "('\"'\"'pe-puppetdb-pe-ha-staging'\"'\"') AND pid <> pg_backend_pid(); END $pe_ha$' -c "
     "'SET client_min_messages = warning' -c 'DROP DATABASE IF EXISTS \"pe-puppetdb-pe-ha-staging\"' -c "
     "'CREATE DATABASE \"pe-puppetdb-pe-ha-staging\" OWNER \"pe-puppetdb\"'"),
    (c.drop_database("pe-puppetdb-pe-ha-old", **PG),
     f"runuser -u pe-postgres -- {B}/psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "
     "'DO $pe_ha$ BEGIN PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN "
     "('\"'\"'pe-puppetdb-pe-ha-old'\"'\"') AND pid <> pg_backend_pid(); END $pe_ha$' -c "
     "'SET client_min_messages = warning' -c 'DROP DATABASE IF EXISTS \"pe-puppetdb-pe-ha-old\"'"),
    (c.swap_databases("pe-puppetdb", "pe-puppetdb-pe-ha-staging", "pe-puppetdb-pe-ha-old", **PG),
     f"runuser -u pe-postgres -- {B}/psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "
     "'DO $pe_ha$ BEGIN PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN "
     "('\"'\"'pe-puppetdb-pe-ha-old'\"'\"') AND pid <> pg_backend_pid(); END $pe_ha$' -c "
     "'SET client_min_messages = warning' -c 'DROP DATABASE IF EXISTS \"pe-puppetdb-pe-ha-old\"' -c "
     "'DO $pe_ha$ BEGIN PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN "
     "('\"'\"'pe-puppetdb'\"'\"', '\"'\"'pe-puppetdb-pe-ha-staging'\"'\"') AND pid <> pg_backend_pid(); END $pe_ha$' -c "
     "'ALTER DATABASE \"pe-puppetdb\" RENAME TO \"pe-puppetdb-pe-ha-old\"' -c "
     "'ALTER DATABASE \"pe-puppetdb-pe-ha-staging\" RENAME TO \"pe-puppetdb\"'"),
    (c.copy_sequences(["reports_id_seq", "fact_values_id_seq"], target="replica.example.com",
                      staging="pe-puppetdb-pe-ha-staging", **PG),
     "bash -c 'set -o pipefail; runuser -u pe-postgres -- " + B + "/psql -X -q -v ON_ERROR_STOP=1 -d pe-puppetdb "
     "-A -t -c '\"'\"'SELECT format('\"'\"'\"'\"'\"'\"'\"'\"'SELECT setval(%L, %s, %L);'\"'\"'\"'\"'\"'\"'\"'\"', "
     "'\"'\"'\"'\"'\"'\"'\"'\"'public.\"fact_values_id_seq\"'\"'\"'\"'\"'\"'\"'\"'\"', last_value, is_called) "
     "FROM public.\"fact_values_id_seq\" UNION ALL SELECT format('\"'\"'\"'\"'\"'\"'\"'\"'SELECT setval(%L, %s, %L);"
     "'\"'\"'\"'\"'\"'\"'\"'\"', '\"'\"'\"'\"'\"'\"'\"'\"'public.\"reports_id_seq\"'\"'\"'\"'\"'\"'\"'\"'\"', "
     "last_value, is_called) FROM public.\"reports_id_seq\"'\"'\"' | ssh -o BatchMode=yes -o ControlMaster=auto "
     "-o ControlPath=/tmp/pe-ha-mux-%C -o ControlPersist=30 -o ConnectTimeout=10 -o ServerAliveInterval=5 "
     "-o ServerAliveCountMax=3 -o Compression=no -c aes128-gcm@openssh.com replica.example.com "
     "'\"'\"'set -o pipefail; cd / && runuser -u pe-postgres -- " + B + "/psql -X -q -v ON_ERROR_STOP=1 "
     "-d pe-puppetdb-pe-ha-staging -1 -o /dev/null -f -'\"'\"''"),
    (c.schema_toc(**PG),
     "bash -c 'set -o pipefail; runuser -u pe-postgres -- " + B + "/pg_dump --format=custom --compress=0 "
     "'\"'\"'--exclude-table-data=*'\"'\"' --dbname=pe-puppetdb | runuser -u pe-postgres -- " + B
     + "/pg_restore --list'"),
    (c.tcp_probe_ports("master.example.com", [8140, 8081]),
     "timeout 3 bash -c 'h=$1; shift; for p in \"$@\"; do (exec 3<>\"/dev/tcp/$h/$p\" && echo \"$p\") 2>/dev/null & "
     "done; wait' probe master.example.com 8140 8081"),
    (c.drill_block("198.51.100.7")[0],
     "iptables -I INPUT -s 198.51.100.7 -m comment --comment pe-ha-failover-drill -j DROP"),
    # From PE 2019.3 the plan authenticates with the primary's certificate: no --token-file.
    (c.enable_ha_failover("old.example.com", topology="mono", replication_timeout_secs=60),
     "puppet infrastructure run enable_ha_failover host=old.example.com topology=mono replication_timeout_secs=60"),
]


@pytest.mark.parametrize(("command", "expected"), FAST_PINNED, ids=[p[1][:60] for p in FAST_PINNED])
def test_fast_copy_and_guard_commands_are_pinned(command: c.Command, expected: str) -> None:
    import shlex

    assert shlex.join(command.argv) == expected


def test_stream_table_pipeline_shape() -> None:
    cmd = c.stream_table("catalog_resources", snapshot="00000003-0000001B-1", target="replica.example.com",
                         staging="pe-puppetdb-pe-ha-staging", compress="zstd", **PG)
    assert cmd.argv[:2] == ("bash", "-c")
    script = cmd.argv[2]
    assert script.startswith("set -o pipefail; ")
    assert "SET TRANSACTION SNAPSHOT '\"'\"'00000003-0000001B-1'\"'\"'" in script
    assert " | zstd -q -1 -T1 | ssh " in script and "replica.example.com" in script
    remote = shlex.split(script)[-1]  # what ssh runs on the target
    assert remote.startswith("set -o pipefail; cd / && zstd -q -d | ")  # not root's home: see _ssh_stream
    loader = shlex.split(remote.split(" | ", 1)[1])
    assert loader[-10:] == ["-c", "BEGIN", "-c", 'TRUNCATE ONLY public."catalog_resources"',
                            "-c", 'COPY public."catalog_resources" FROM STDIN WITH (FREEZE)',
                            "-c", "\\echo PEHA-ROWS catalog_resources :ROW_COUNT", "-c", "COMMIT"]
    with pytest.raises(ValidationError):
        c.stream_table("x; drop", snapshot="00000003-0000001B-1", target="r.example.com", staging="s", compress="none", **PG)
    with pytest.raises(ValidationError):
        c.stream_table("t", snapshot="'; drop", target="r.example.com", staging="s", compress="none", **PG)


def test_a_stream_builds_its_table_s_own_indexes_once_its_rows_are_in() -> None:
    import shlex

    cmd = c.stream_table("catalog_resources", snapshot="00000003-0000001B-1", target="replica.example.com",
                         staging="pe-puppetdb-pe-ha-staging", compress="none", multiplex=True,
                         then_restore=("/var/tmp/s.dump", "/var/tmp/s.dump.catalog_resources.list"),
                         maintenance_mem_mb=256, **PG)
    remote = shlex.split(shlex.split(cmd.argv[2])[-1])
    # after the COPY's COMMIT, on the target, in the same remote command: the table's own post-data entries
    assert remote[remote.index("COMMIT") + 1] == "&&"
    assert remote[remote.index("COMMIT") + 2:] == [
        "runuser", "-u", "pe-postgres", "--", "env", "PGOPTIONS=-c maintenance_work_mem=256MB", f"{B}/pg_restore",
        "--section=post-data", "--jobs=1", "--use-list=/var/tmp/s.dump.catalog_resources.list",
        "--dbname=pe-puppetdb-pe-ha-staging", "/var/tmp/s.dump"]
    plain = c.stream_table("edges", snapshot="00000003-0000001B-1", target="replica.example.com",
                           staging="pe-puppetdb-pe-ha-staging", compress="none", **PG)
    assert "pg_restore" not in plain.argv[2]  # no list: nothing is built after the rows


TOC = """;
; Archive created at 2026-12-06 10:00:00 UTC
;
215; 1259 16390 TABLE public catalogs pe-puppetdb
3801; 2606 16400 CONSTRAINT public catalogs catalogs_pkey pe-puppetdb
3802; 1259 16410 INDEX public idx_catalogs_env pe-puppetdb
3803; 1259 16411 INDEX public idx_reports_x pe-puppetdb
3900; 2606 16500 FK CONSTRAINT public catalogs catalogs_env_fk pe-puppetdb
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runuser needs root")
def test_restore_lists_pick_their_entries_by_name_from_the_archives_own_table_of_contents(tmp_path):
    """Run the command itself, with a pg_restore that prints a table of contents: each list gets the ids of
    the entries named for it, the other list every entry not named anywhere."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "toc").write_text(TOC)
    (bin_dir / "pg_restore").write_text(f"#!/bin/sh\n[ \"$1\" = --list ] && exec cat {tmp_path}/toc\nexit 3\n")
    (bin_dir / "pg_restore").chmod(0o755)
    cmd = c.write_restore_lists(str(tmp_path / "s.dump"), {str(tmp_path / "a.list"): ["catalogs_pkey"],
                                                           str(tmp_path / "b.list"): ["idx_catalogs_env"]},
                                others=str(tmp_path / "late.list"), os_user="root", bin_dir=str(bin_dir))
    subprocess.run(cmd.argv, check=True)
    assert (tmp_path / "a.list").read_text() == "3801\n"
    assert (tmp_path / "b.list").read_text() == "3802\n"
    assert (tmp_path / "late.list").read_text() == "215\n3803\n3900\n"


def test_the_public_schema_gets_exactly_the_sources_grants() -> None:
    cmd = c.set_public_schema_grants([("pe-puppetdb", "CREATE", False), ("pe-puppetdb", "USAGE", False)],
                                     database="pe-puppetdb-pe-ha-staging", **PG)
    assert cmd.argv[:10] == ("runuser", "-u", "pe-postgres", "--", f"{B}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                             "-d")
    assert cmd.argv[10:12] == ("pe-puppetdb-pe-ha-staging", "-c")
    sql = cmd.argv[12]
    # every grant but the owner's is revoked first (PUBLIC's CREATE on PostgreSQL 11 and 14 too), then the source's
    assert sql.index("REVOKE ALL ON SCHEMA public") < sql.index("GRANT %s ON SCHEMA public")
    assert "VALUES ('pe-puppetdb', 'CREATE', false), ('pe-puppetdb', 'USAGE', false)" in sql
    assert "WHERE false" in c.set_public_schema_grants([], database="pe-puppetdb", **PG).argv[12]


@pytest.mark.parametrize(("grants", "reason"), [
    ([("pe-puppetdb", "ALL", False)], "schema privilege 'ALL'"),
    ([("x'; DROP TABLE reports; --", "USAGE", False)], ""),
])
def test_schema_grants_refuse_what_they_cannot_quote(grants, reason) -> None:
    with pytest.raises(ValidationError) as refused:
        c.set_public_schema_grants(grants, database="pe-puppetdb", **PG)
    assert reason in str(refused.value)


def test_enable_passes_the_terminus_and_master_uri_lists_with_their_default_ports() -> None:
    cmd = c.enable_replica("replica.example.com", topology="mono-with-compile", token_file="/root/.puppetlabs/t",
                           agent_server_urls=["lb.example.com"], pcp_brokers=["lb.example.com"],
                           master_uris=["lb.example.com"], infra_master_uris=["master.example.com:8140"],
                           classifier_termini=["master.example.com", "replica.example.com"],
                           puppetdb_termini=["master.example.com", "replica.example.com:8081"])
    assert cmd.argv == (
        "puppet", "infrastructure", "enable", "replica", "replica.example.com", "--topology", "mono-with-compile",
        "--agent-server-urls", "lb.example.com:8140", "--pcp-brokers", "lb.example.com:8142",
        "--master-uris", "lb.example.com:8140", "--infra-master-uris", "master.example.com:8140",
        "--classifier-termini", "master.example.com:4433,replica.example.com:4433",
        "--puppetdb-termini", "master.example.com:8081,replica.example.com:8081",
        "--yes", "--color", "false", "--token-file", "/root/.puppetlabs/t")
    with pytest.raises(ValidationError):
        c.enable_replica("replica.example.com", topology="mono", token_file="/root/.puppetlabs/t",
                         puppetdb_termini=["bad host;rm"])
