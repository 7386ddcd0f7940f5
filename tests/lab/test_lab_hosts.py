"""The lab itself: hosts, PostgreSQL, per-host files, TLS status API, outages, and the simulator's refusals."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from lab import core, inspect, tokens
from pe_ha.errors import ApiError, ApiUnavailable, AuthError, CommandFailed, ConnectError
from pe_ha.pe_api import PEApi
from pe_ha.ssh import FabricExecutor
from tests.lab.conftest import lab_settings

pytestmark = pytest.mark.lab


def test_every_host_answers_ssh_as_itself(lab, lab_ctx):
    ex = lab_ctx.executor
    for host in lab.hosts:
        out = ex.run(host.fqdn, ["bash", "-c", "hostname; id -u; ip -4 -o addr show eth0; ls /etc/puppetlabs/puppet"]).stdout
        lines = out.splitlines()
        assert lines[0] == host.fqdn and lines[1] == "0"
        assert f"inet {host.address}/24" in lines[2]
        assert "puppet.conf" in out
    ex.run("master.lab.test", ["bash", "-c", "echo m > /tmp/only-on-master"])
    assert ex.run("replica.lab.test", ["test", "-e", "/tmp/only-on-master"], check=False).exit_code == 1


def test_no_route_out_and_no_forwarding(lab, lab_ctx):
    ex = lab_ctx.executor
    out = ex.run("agent1.lab.test", ["ip", "route"]).stdout
    assert "default" not in out
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == "0"


def test_postgres_on_master_and_replica_only(lab, lab_ctx):
    s = lab_ctx.settings
    for host in ("master.lab.test", "replica.lab.test"):
        addr = s.host(host).address
        with inspect.connect(addr, "postgres") as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            assert {"pe-puppetdb", "pe-classifier", "pe-rbac", "pe-activity", "pe-orchestrator"} <= names
            assert conn.execute("SELECT host(inet_server_addr())").fetchone()[0] == addr
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=s.host("agent1.lab.test").address, dbname="postgres", user="postgres", connect_timeout=2)


def test_per_host_puppet_files(lab, lab_ctx):
    ex = lab_ctx.executor
    for host in lab.hosts:
        conf = ex.run(host.fqdn, ["cat", "/etc/puppetlabs/puppet/puppet.conf"]).stdout
        assert f"certname = {host.fqdn}" in conf and "server = master.lab.test" in conf


def test_status_api_over_tls_and_wrong_ca_fails_closed(lab, lab_ctx, tmp_path):
    api = lab_ctx.api
    statuses = api.services_status("master.lab.test", 8081)
    assert [s.service for s in statuses] == ["puppetdb-status"] and statuses[0].running
    assert api.simple_status("master.lab.test", 8140) == "running"
    other = tmp_path / "other-ca.pem"
    import subprocess

    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(tmp_path / "k"), "-out", str(other), "-days", "1", "-subj", "/CN=not-pe"],
                   check=True, capture_output=True)
    bad = PEApi(lab_settings(ca_cert=other))
    with pytest.raises(ApiError, match="TLS verification failed"):
        bad.services_status("master.lab.test", 8081)


def test_outage_is_bounded_by_the_connect_timeout_and_restores(lab, lab_ctx):
    settings = lab_settings(ssh_connect_timeout_s=2, http_connect_timeout_s=2)
    api, ex = PEApi(settings), FabricExecutor(settings, line_sink=lambda *a: None)
    core.outage(lab.host("agent2"), "drop")
    try:
        started = time.monotonic()
        with pytest.raises(ConnectError):
            ex.run("agent2.lab.test", ["true"])
        assert time.monotonic() - started < 20  # bounded by the 2 s setting (x retries inside paramiko), not ~135 s
    finally:
        core.outage(lab.host("agent2"), "restore")
    assert ex.run("agent2.lab.test", ["true"]).exit_code == 0
    core.outage(lab.host("master"), "drop")
    try:
        started = time.monotonic()
        with pytest.raises(ApiUnavailable):
            api.services_status("master.lab.test", 8081)
        assert time.monotonic() - started < 10
    finally:
        core.outage(lab.host("master"), "restore")
    assert api.simple_status("master.lab.test", 8081) == "running"
    ex.close()


def _sh(ex, host, script, check=False):
    return ex.run(host, ["bash", "-c", script], check=check)


def test_simulator_refusals(lab, lab_ctx):
    ex = lab_ctx.executor
    m = "master.lab.test"
    # token staged for --token-file
    ex.put_bytes(m, (lab_ctx.settings.rbac_token().get_secret_value() + "\n").encode(), "/root/pe-ha-test.token")
    tf = "--token-file /root/pe-ha-test.token"
    # sudo-style environment (HOME/USER not root's) is refused
    r = _sh(ex, m, "env HOME=/home/ops USER=ops SUDO_USER=ops /opt/puppetlabs/bin/puppet infrastructure status")
    assert r.exit_code == 1 and "root session" in r.stderr
    # enable without --yes and without a terminal is refused (and nothing is provisioned yet anyway)
    r = _sh(ex, m, f"puppet infrastructure enable replica replica.lab.test --topology mono {tf} </dev/null")
    assert r.exit_code == 1 and "not a provisioned replica" in r.stderr
    # a replica whose server is not the master is refused
    _sh(ex, "replica.lab.test", "puppet config set server agent1.lab.test --section main", check=True)
    try:
        r = _sh(ex, m, f"puppet infrastructure provision replica replica.lab.test {tf}")
        assert r.exit_code == 1 and "must use the primary master" in r.stderr
    finally:
        _sh(ex, "replica.lab.test", "puppet config set server master.lab.test --section main", check=True)
    # reinitialize refuses a database outside the four, and refuses on a non-replica
    r = _sh(ex, m, "puppet infrastructure reinitialize replica --db pe-puppetdb -y")
    assert r.exit_code == 1 and "must be one of" in r.stderr  # PuppetDB is never reinitialized
    r = _sh(ex, m, "puppet infrastructure reinitialize replica --db pe-rbac -y")
    assert r.exit_code == 1 and "provisioned replica" in r.stderr
    # an unknown token is refused with 401
    _sh(ex, m, "echo sim-bogus > /root/bogus.token", check=True)
    r = _sh(ex, m, "puppet infrastructure provision replica replica.lab.test --token-file /root/bogus.token")
    assert r.exit_code == 1 and "401" in r.stderr


def test_expired_token_is_refused_with_token_expired(lab, lab_ctx):
    token = lab_ctx.settings.rbac_token().get_secret_value()
    tokens.expire_token_in(lab, token, 0)
    try:
        with pytest.raises(AuthError, match="token-expired"):
            lab_ctx.api.authenticate(lab_ctx.settings.rbac_token())
    finally:
        tokens.issue_admin_token(lab, lifetime_s=4 * 3600)


def test_agent_exit_codes(lab, lab_ctx):
    ex = lab_ctx.executor
    a = "agent1.lab.test"
    assert ex.run(a, ["puppet", "agent", "-t"], check=False).exit_code in (0, 2)
    assert ex.run(a, ["puppet", "agent", "-t"], check=False).exit_code == 0
    core.node_run(lab.host("agent1"), "pe-sim", "fault", "agent_fail")
    try:
        assert ex.run(a, ["puppet", "agent", "-t"], check=False).exit_code == 4
    finally:
        core.node_run(lab.host("agent1"), "pe-sim", "fault", "clear")
    core.node_run(lab.host("agent1"), "pe-sim", "fault", "agent_lock")
    try:
        r = ex.run(a, ["puppet", "agent", "-t"], check=False)
        assert r.exit_code == 1 and "already in progress" in r.stdout
    finally:
        core.node_run(lab.host("agent1"), "pe-sim", "fault", "clear")
    r = ex.run(a, ["puppet", "agent", "-t", "--server_list=replica.lab.test"], check=False)
    assert r.exit_code == 1 and "Could not select a functional puppet master" in r.stdout


def test_service_stop_and_start_are_real(lab, lab_ctx):
    ex = lab_ctx.executor
    api = lab_ctx.api
    ex.run("master.lab.test", ["puppet", "resource", "service", "pe-puppetdb", "ensure=stopped"])
    try:
        with pytest.raises(ApiUnavailable):
            api.services_status("master.lab.test", 8081)
    finally:
        ex.run("master.lab.test", ["puppet", "resource", "service", "pe-puppetdb", "ensure=running"])
    assert api.simple_status("master.lab.test", 8081) == "running"


def test_status_json_shape(lab, lab_ctx):
    out = lab_ctx.executor.run("master.lab.test", ["puppet", "infrastructure", "status", "--format", "json"],
                                 stream=False).stdout
    entries = json.loads(out)
    assert len(entries) == 11
    assert set(entries[0]) == {"service", "state", "status", "display_name", "server", "url", "type", "alerts"}
    with pytest.raises(CommandFailed):
        lab_ctx.executor.run("master.lab.test", ["puppet", "infrastructure", "status", "--host", "nope.lab.test"])


@pytest.mark.usefixtures("prefect_harness")
def test_configure_agent_failover_routes_agents_by_site(fresh_lab, lab_ctx):
    from flows.configure_agent_failover import Site, configure_agent_failover

    site = Site(name="east", fact="pp_region", value="east", server_list=["replica.lab.test"],
                pcp_broker_list=["replica.lab.test"])
    assert configure_agent_failover(sites=[site])["sites"] == {"east": "changed"}
    assert configure_agent_failover(sites=[site])["sites"] == {"east": "unchanged"}
    ex = lab_ctx.executor
    ex.run("agent1.lab.test", ["puppet", "agent", "-t"], ok_codes=(0, 2))  # agent1 is pp_region=east
    ex.run("agent2.lab.test", ["puppet", "agent", "-t"], ok_codes=(0, 2))  # agent2 is west: no site group
    puppet_conf = ex.run("agent1.lab.test", ["cat", "/etc/puppetlabs/puppet/puppet.conf"]).stdout
    assert "server_list = replica.lab.test:8140" in puppet_conf
    assert "pcp_broker_list" not in puppet_conf  # no Puppet setting: pxp-agent's own file holds the brokers
    pxp_conf = json.loads(ex.run("agent1.lab.test", ["cat", "/etc/puppetlabs/pxp-agent/pxp-agent.conf"]).stdout)
    assert pxp_conf == {"broker-ws-uris": ["wss://replica.lab.test:8142/pcp2/"]}
    assert "server_list" not in ex.run("agent2.lab.test", ["cat", "/etc/puppetlabs/puppet/puppet.conf"]).stdout


@pytest.mark.usefixtures("prefect_harness")
def test_a_pe_server_node_with_the_sites_fact_keeps_its_own_server_list(fresh_lab, lab_ctx):
    """The master carries the site's trusted fact too. Matched by the site group beside PE Infrastructure Agent,
    its Puppet runs would fail on the classification conflict; the site rule leaves PE server nodes out."""
    from flows.configure_agent_failover import Site, configure_agent_failover
    from tasks import classifier

    ex = lab_ctx.executor
    ex.run("master.lab.test", ["sh", "-c", "printf -- '---\\nextension_requests:\\n  pp_region: east\\n' "
                                           "> /etc/puppetlabs/puppet/csr_attributes.yaml"])
    token, api = lab_ctx.settings.rbac_token(), lab_ctx.api
    infra_agent = next(g for g in api.groups(token) if g["name"] == "PE Infrastructure Agent")
    api.update_group(token, infra_agent["id"], {"classes": {"puppet_enterprise::profile::agent": {
        "server_list": ["master.lab.test:8140"], "pcp_broker_list": ["master.lab.test:8142"]}}})
    site = Site(name="east", fact="pp_region", value="east", server_list=["replica.lab.test"],
                pcp_broker_list=["replica.lab.test"])
    configure_agent_failover(sites=[site])
    ex.run("master.lab.test", ["puppet", "agent", "-t"], ok_codes=(0, 2))
    ex.run("agent1.lab.test", ["puppet", "agent", "-t"], ok_codes=(0, 2))
    assert "server_list = replica.lab.test:8140" in ex.run("agent1.lab.test", ["cat", "/etc/puppetlabs/puppet/puppet.conf"]).stdout

    # The rule without the exclusion, as pe-ha wrote it before: PE fails the master's run.
    group = next(g for g in api.groups(token) if g["name"] == "PE Agent - east")
    api.update_group(token, group["id"], {"rule": classifier.site_rule("pp_region", "east")[:2]})
    failed = ex.run("master.lab.test", ["puppet", "agent", "-t"], check=False)
    assert failed.exit_code == 1 and "classification conflict" in failed.stdout


def test_load_progress_sees_another_sessions_copy(lab, lab_ctx):
    """The copy's progress lines read what the server has, in a psql session as PostgreSQL's owner over SSH:
    the loading database's size on every major, and the running COPY from PostgreSQL 14 (pg_stat_progress_copy)."""
    import subprocess

    from tasks.puppetdb import load_progress_on

    db = "pe-ha-progress-check"
    core.node_run(lab.master, "psql", "-X", "-q", "-h", "/run/postgresql", "-d", "postgres",
                  "-c", f'DROP DATABASE IF EXISTS "{db}"', "-c", f'CREATE DATABASE "{db}"', as_postgres=True)
    try:
        core.node_run(lab.master, "psql", "-X", "-q", "-h", "/run/postgresql", "-d", db,
                      "-c", "CREATE TABLE loading (n integer, label text)", as_postgres=True)
        idle = load_progress_on(lab_ctx, "master.lab.test", db)
        assert idle.bytes > 0 and idle.activity == []
        copy_view = lab.profile.pg_major >= 14
        writer = subprocess.Popen(core.nsenter(
            lab.master, "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "env", "-i",
            "HOME=/var/lib/postgresql", "LANG=C.UTF-8", f"PATH={core.PG_CLIENT_BIN}:/usr/bin:/bin",
            "psql", "-X", "-q", "-h", "/run/postgresql", "-d", db, "-c", "COPY loading FROM STDIN"),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert writer.stdin is not None
        try:
            writer.stdin.write(b"".join(b"%d\trow %d\n" % (i, i) for i in range(200000)))
            writer.stdin.flush()
            seen: list[str] = []
            grew = False
            for _ in range(100):  # the rows reach the server asynchronously: look until the COPY shows
                look = load_progress_on(lab_ctx, "master.lab.test", db)
                seen, grew = look.activity, grew or look.bytes > idle.bytes
                if grew and (not copy_view or (seen and " 0 rows" not in seen[0])):
                    break
                time.sleep(0.1)
            assert grew
            if copy_view:
                assert len(seen) == 1 and seen[0].startswith("COPY loading: "), seen
                assert seen[0].endswith(" rows") and " 0 rows" not in seen[0]
            else:  # PostgreSQL 11 has no pg_stat_progress_copy: the size is all there is, and no error
                assert seen == []
        finally:
            writer.stdin.close()
            assert writer.wait(60) == 0
        assert load_progress_on(lab_ctx, "master.lab.test", db).activity == []
    finally:
        core.node_run(lab.master, "psql", "-X", "-q", "-h", "/run/postgresql", "-d", "postgres",
                      "-c", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'",
                      "-c", f'DROP DATABASE IF EXISTS "{db}"', as_postgres=True)
