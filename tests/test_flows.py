"""Each flow against the fake executor and a fake PE API: the exact per-host command sequence, and the refusals."""

from __future__ import annotations

import json

import pytest

from pe_ha import commands, context
from pe_ha.errors import CommandFailed, PreconditionFailed, RemoteTimeout, ValidationError, WaitTimedOut
from pe_ha.executor import CommandResult
from pe_ha.fake_executor import FakeExecutor
from tests.conftest import fake_pe_api, make_settings, status_json

M, R, A1, A2 = "master.example.com", "replica.example.com", "agent1.example.com", "agent2.example.com"
TF = "/root/.puppetlabs/pe-ha.token"

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_provision_replica_runs_the_runbook_in_order(env):
    fake, api, settings = env
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M))
    from flows.provision_replica import provision_replica

    result = provision_replica(sync_timeout_s=30)
    assert result == {"replica": R, "services": 2, "verify_exit_code": 0}
    keys = "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json"
    hiera = "/etc/puppetlabs/puppet/hiera.yaml"
    ad_ca = "/opt/puppetlabs/server/data/console-services/certs/ad_ca_chain.pem"
    assert fake.commands_on(R) == [("puppet", "config", "print", "server", "--section", "main"),
                                   *[c for path in (keys, hiera, ad_ca) for c in (
                                       ("install", "-d", "-m", "0755", path.rsplit("/", 1)[0]),
                                       ("chmod", "0644", "--", path))]]
    master = [c for c in fake.commands_on(M) if c[:3] != ("puppet", "infrastructure", "status")]
    assert master == [
        # the facts, read before anything changes: the PE version, and which files the replica needs are there
        ("cat", "/opt/puppetlabs/server/pe_version"),
        ("test", "-f", keys),  # PE 2019.8: the orchestrator's keys.json goes to the replica first
        ("test", "-f", hiera),
        ("test", "-f", ad_ca),
        ("cat", "/etc/puppetlabs/enterprise/conf.d/pe.conf"),  # Code Manager's key must be there
        ("install", "-d", "-m", "0750", "/root/.puppetlabs"),
        ("puppet", "resource", "service", "puppet"),  # a background run would collide with provisioning's
        ("puppet", "resource", "service", "puppet", "ensure=stopped"),
        *[("scp", "-p", "-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", path, f"{R}:{path}")
          for path in (keys, hiera, ad_ca)],
        ("puppet", "infrastructure", "provision", "replica", R, "--color", "false", "--token-file", TF),
        ("rm", "-f", "--", TF),
        ("puppet", "resource", "service", "puppet", "ensure=running"),  # after the sync
    ]
    assert fake.commands_on(A1) == [("puppet", "agent", "-t", "--noop", f"--server_list={R}"),
                                    commands.agent_last_run_summary().argv]  # the noop run's own counts
    assert ("put", "<bytes>", TF) in [c.argv for c in fake.calls if c.kind == "put"]
    assert any("authenticate" in c for c in api.calls)
    # the classifier hierarchy, saved before provisioning changes classification
    assert len(list(settings.backup_dir.glob("classifier-*.json"))) == 1


@pytest.mark.parametrize(("version", "files"), [("2021.5.0", 1), ("2021.7.9", 3), ("2023.8.0", 3)])
def test_provision_copies_the_versions_secret_key_files(env, version, files):
    fake, _, _ = env
    fake.pe_version = version
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M))
    from flows.provision_replica import provision_replica

    provision_replica(sync_timeout_s=30)
    copies = [c for c in fake.commands_on(M) if c[0] == "scp" and "secrets" in c[-1]]
    assert len(copies) == files
    first_copy = fake.commands_on(M).index(copies[0])
    assert all(fake.commands_on(M).index(c) > first_copy for c in fake.commands_on(M) if c[:3] == ("puppet", "infrastructure", "provision"))


def test_provision_skips_hiera_and_the_ad_ca_chain_where_the_master_has_none(env):
    fake, _, _ = env
    hiera = "/etc/puppetlabs/puppet/hiera.yaml"
    ad_ca = "/opt/puppetlabs/server/data/console-services/certs/ad_ca_chain.pem"
    fake.script(M, ("test", "-f", ad_ca), exit_code=1)
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M))
    from flows.provision_replica import provision_replica

    provision_replica(sync_timeout_s=30)
    copied = [c[-1] for c in fake.commands_on(M) if c[0] == "scp"]
    assert f"{R}:{hiera}" in copied and f"{R}:{ad_ca}" not in copied


def test_provision_starts_the_puppet_service_again_after_a_failure(env):
    fake, _, _ = env
    fake.script(M, ("puppet", "resource", "service", "puppet"), stdout="service { 'puppet':\n  ensure => 'running',\n}")
    fake.script(M, ("puppet", "infrastructure", "provision"), exit_code=1, stdout="Error: provisioning failed")
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    from flows.provision_replica import provision_replica

    state = provision_replica(return_state=True)
    assert state.is_failed()
    on_master = fake.commands_on(M)
    stopped = on_master.index(("puppet", "resource", "service", "puppet", "ensure=stopped"))
    provisioned = next(i for i, c in enumerate(on_master) if c[:3] == ("puppet", "infrastructure", "provision"))
    assert stopped < provisioned < on_master.index(("puppet", "resource", "service", "puppet", "ensure=running"))


def test_provision_leaves_a_stopped_puppet_service_stopped(env):
    fake, _, _ = env
    fake.script(M, ("puppet", "resource", "service", "puppet"), stdout="service { 'puppet':\n  ensure => 'stopped',\n}")
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M))
    from flows.provision_replica import provision_replica

    provision_replica(sync_timeout_s=30)
    assert not [c for c in fake.commands_on(M) if c[:4] == ("puppet", "resource", "service", "puppet") and len(c) == 5]


def test_provision_refuses_a_master_without_its_secret_keys_before_copying_anything(env):
    fake, _, _ = env
    keys = "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json"
    fake.script(M, ("test", "-f", keys), exit_code=1)
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    from flows.provision_replica import provision_replica

    state = provision_replica(return_state=True)
    assert state.is_failed() and f"has no {keys}" in state.message
    assert not [c for c in fake.commands_on(M) if c[0] == "scp" or c[:3] == ("puppet", "infrastructure", "provision")]


def _provision_with(tmp_path, groups, pe_conf=""):
    """A dry run: it reads the facts and checks PE's prerequisites, and runs nothing."""
    settings = make_settings(tmp_path, backup_dir=tmp_path / "backups")
    fake = FakeExecutor()
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("cat", "/etc/puppetlabs/enterprise/conf.d/pe.conf"), stdout=pe_conf)
    with context.using(executor=fake, api=fake_pe_api(settings, groups=groups), settings=settings):
        from flows.provision_replica import provision_replica

        state = provision_replica(dry_run=True, return_state=True)
    return state, fake


def test_provision_refuses_an_r10k_key_set_only_in_the_console(tmp_path):
    from pathlib import Path

    # a real installation's groups (capture): PE Master sets r10k_private_key in the console
    groups = json.loads((Path(__file__).parent / "contract" / "samples" / "classifier-groups-200.json").read_text())
    for g in groups:  # this capture is of an installation with its replica enabled already
        g.get("classes", {}).get("puppet_enterprise", {}).pop("ha_enabled_replicas", None)
    state, fake = _provision_with(tmp_path, groups, pe_conf='"puppet_enterprise::puppet_master_host": "m"\n')
    assert state.is_failed()
    assert ("r10k_private_key (/etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa) is set in the console (PE Master) "
            f"but not in {M}'s pe.conf") in state.message
    assert not [c for h in (M, R) for c in fake.commands_on(h) if c[0] in ("scp", "install", "puppet")]
    state, _ = _provision_with(tmp_path, groups, pe_conf=(
        '"puppet_enterprise::puppet_master_host": "m"\n'
        '"puppet_enterprise::profile::master::r10k_private_key": "/etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa"\n'))
    assert state.is_completed()


def test_provision_refuses_tuning_parameters_set_in_the_console(tmp_path):
    groups = [{"name": "PE Master", "id": "m", "parent": "infra-id",
               "classes": {"puppet_enterprise::profile::master": {"java_args": {"Xmx": "4g"}, "r10k_remote": "x"}}},
              {"name": "Webservers", "id": "w", "parent": "root", "classes": {"apache": {"max_connections": 5}}}]
    state, fake = _provision_with(tmp_path, groups)
    assert state.is_failed()
    assert ("tuning parameters are set in the console, where the replica will not get them: "
            "PE Master: puppet_enterprise::profile::master::java_args") in state.message
    assert "Webservers" not in state.message  # an operator's own group is not PE's tuning
    assert not [c for h in (M, R) for c in fake.commands_on(h) if c[0] in ("scp", "install", "puppet")]


def test_provision_refuses_while_pe_has_another_replica(tmp_path):
    settings = make_settings(tmp_path, backup_dir=tmp_path / "backups")
    groups = [{"name": "PE Infrastructure", "id": "infra-id", "parent": "root",
               "classes": {"puppet_enterprise": {"ha_enabled_replicas": ["old-replica.example.com"]}}}]
    fake = FakeExecutor()
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    with context.using(executor=fake, api=fake_pe_api(settings, groups=groups), settings=settings):
        from flows.provision_replica import provision_replica

        state = provision_replica(return_state=True)
    assert state.is_failed()
    assert "already has the replica old-replica.example.com: PE runs one replica at a time" in state.message
    assert "forget old-replica.example.com first" in state.message
    assert not [c for h in (M, R) for c in fake.commands_on(h) if c[0] in ("scp", "install", "puppet")]


@pytest.mark.parametrize("version", ["2019.8.12", "2023.8.0", "2025.11.0"])
def test_the_manual_copy_beside_provisioning_is_refused_where_pe_documents_none(env, version):
    fake, _, _ = env
    fake.pe_version = version
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    from flows.provision_replica import provision_replica

    state = provision_replica(copy_puppetdb=True, return_state=True)
    assert state.is_failed()
    assert f"PE {version} documents no manual PuppetDB copy during provisioning" in state.message
    assert "run copy-puppetdb on its own" in state.message
    assert not [c for c in fake.calls if c.kind == "put"]
    assert not [c for h in (M, R) for c in fake.commands_on(h)
                if c[0] in ("scp", "systemctl", "pg_dump") or c[:3] == ("puppet", "infrastructure", "provision")]


@pytest.mark.parametrize("version", ["2019.7.3", "2018.1.15", "2022.1.0", "2025.12.1", "2027.1.0", "not a version"])
def test_unsupported_pe_version_is_refused_before_anything_changes(env, version):
    fake, _, _ = env
    fake.pe_version = version
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    from flows.provision_replica import provision_replica

    state = provision_replica(return_state=True)
    assert state.is_failed() and ("pe-ha supports PE 2019.5.x, 2019.8.x, 2021.x, 2023.x and 2025.0 to 2025.11" in state.message
                                  or "not a PE version" in state.message)
    if version.startswith(("2025.12", "2027")):
        assert "newer than PE 2025.11, the newest line pe-ha is tested on" in state.message
    assert [c for c in fake.commands_on(M) if c[:3] != ("puppet", "infrastructure", "status")] == [
        ("cat", "/opt/puppetlabs/server/pe_version")]
    assert not [c for c in fake.calls if c.kind == "put"]


def test_provision_refuses_when_code_manager_is_not_enabled(tmp_path):
    settings = make_settings(tmp_path)
    fake = FakeExecutor()
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    api = fake_pe_api(settings, status={M: {"pe-master": "running"}})
    with context.using(executor=fake, api=api, settings=settings):
        from flows.provision_replica import provision_replica

        state = provision_replica(return_state=True)
    assert state.is_failed() and "Code Manager is not enabled" in state.message
    assert not any(c[:3] == ("puppet", "infrastructure", "provision") for c in fake.commands_on(M))


def test_promote_refuses_a_replica_that_was_never_enabled(tmp_path):
    settings = make_settings(tmp_path)
    fake = FakeExecutor()
    provisioned_only = [{"name": "PE Infrastructure", "id": "infra-id", "parent": "root",
                         "classes": {"puppet_enterprise": {"ha_enabled_replicas": []}}}]
    with context.using(executor=fake, api=fake_pe_api(settings, groups=provisioned_only), settings=settings):
        from flows.promote_replica import promote_replica

        state = promote_replica(approve=True, return_state=True)
    assert state.is_failed() and "was never enabled as a replica" in state.message
    assert not any(c[:3] == ("puppet", "infrastructure", "promote") for c in fake.commands_on(R))


def test_enable_ha_failover_needs_ssh_to_the_failed_master(env):
    fake, _, _ = env
    fake.script(R, ("ssh", "-o", "BatchMode=yes"), exit_code=255, stderr="Permission denied (publickey).")
    from flows.enable_ha_failover import enable_ha_failover

    state = enable_ha_failover(host=M, return_state=True)
    assert state.is_failed() and f"{R} cannot ssh to {M}" in state.message
    assert not any(c[:3] == ("puppet", "infrastructure", "run") for c in fake.commands_on(R))


def test_provision_refuses_replica_pointing_elsewhere(env):
    fake, _, _ = env
    fake.script(R, ("puppet", "config", "print", "server"), stdout="compile1.example.com")
    from flows.provision_replica import provision_replica

    state = provision_replica(return_state=True)
    assert state.is_failed()
    with pytest.raises(PreconditionFailed, match="not the master"):
        state.result()
    assert not any("provision" in c for host in (M, R) for c in fake.commands_on(host))


@pytest.mark.parametrize("bad", ["replica.example.com; rm -rf /", "-replica", "rеplica.example.com", "a" * 300,
                                 "other.example.com", M])
def test_provision_refuses_bad_replica_before_any_command(env, bad):
    fake, _, _ = env
    from flows.provision_replica import provision_replica

    state = provision_replica(replica=bad, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValidationError):
        state.result()
    assert fake.calls == []


@pytest.mark.parametrize("timeout", [-5, 0, 10**9])
def test_provision_refuses_absurd_timeouts(env, timeout):
    fake, _, _ = env
    from flows.provision_replica import provision_replica

    with pytest.raises(ValidationError):
        provision_replica(sync_timeout_s=timeout)
    assert fake.calls == []


def test_sync_wait_is_bounded_and_reports_last_status(env):
    fake, _, _ = env
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R, "starting"))
    fake.script(R, commands.tcp_probe_ports(M, [5432]).argv, stdout="5432\n")  # only the replica reaches the master
    from flows.provision_replica import provision_replica

    state = provision_replica(sync_timeout_s=2, return_state=True)
    with pytest.raises(WaitTimedOut, match="starting"):
        state.result()
    # PostgreSQL's port each way, as a diagnosis of a replication that never became active
    assert f"port 5432 {R} -> {M}: open, port 5432 {M} -> {R}: closed" in state.message
    assert ("rm", "-f", "--", TF) in fake.commands_on(M)  # the staged token is removed on failure too
    assert fake.commands_on(A1) == []


def test_expired_token_stops_before_provisioning(tmp_path):
    settings = make_settings(tmp_path)
    fake = FakeExecutor()
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    with context.using(executor=fake, api=fake_pe_api(settings, token_status=401), settings=settings):
        from flows.provision_replica import provision_replica

        state = provision_replica(return_state=True)
    assert state.is_failed() and "token-expired" in state.message
    assert not any("provision" in c for c in fake.commands_on(M))


def test_token_expiring_during_sync_is_refused(tmp_path):
    settings = make_settings(tmp_path)
    fake = FakeExecutor()
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    with context.using(executor=fake, api=fake_pe_api(settings, token_expires_in=120), settings=settings):
        from flows.provision_replica import provision_replica

        state = provision_replica(sync_timeout_s=1800, return_state=True)
    assert state.is_failed() and "expires in" in state.message
    assert all(c[:3] == ("puppet", "infrastructure", "status") or c[0] == "cat" or c[:2] == ("test", "-f")
               for c in fake.commands_on(M))  # reads only


def test_enable_replica_with_job_deploy_and_drill(env):
    fake, api, settings = env
    from flows.enable_replica import enable_replica

    fake.script(R, ("puppet", "config", "delete", "server"), stdout="Deleted setting from 'main': 'server = m'")
    fake.script(M, ("getent", "ahostsv4", R), stdout="198.51.100.12 STREAM replica")
    fake.script(M, ("getent", "ahostsv4", A2), stdout="198.51.100.22 STREAM agent2")
    enable_replica(topology="mono", deploy="job", drill=True, drill_node=A2)
    # the PE version, the compilers and the drill's addresses are facts, read first; then the topology, then the
    # procedure
    assert fake.commands_on(M)[:4] == [("cat", "/opt/puppetlabs/server/pe_version"),
                                       ("puppet", "infrastructure", "status", "--format", "json"),
                                       ("getent", "ahostsv4", R), ("getent", "ahostsv4", A2)]
    assert fake.commands_on(M)[5:10] == [
        ("install", "-d", "-m", "0750", "/root/.puppetlabs"),
        ("puppet", "resource", "service", "puppet"),
        ("puppet", "resource", "service", "puppet", "ensure=stopped"),
        ("puppet", "infrastructure", "enable", "replica", R, "--topology", "mono", "--yes", "--color", "false",
         "--token-file", TF),
        ("rm", "-f", "--", TF),
    ]
    assert fake.commands_on(M)[10] == ("puppet", "resource", "service", "puppet", "ensure=running")
    # the deploy is an orchestrator job, as `puppet job run --no-enforce-environment --query` starts it, followed
    # through the jobs API to its nodes' end
    assert api.state["deploy"] == {"environment": "", "enforce_environment": False,
                                   "scope": {"query": "nodes {deactivated is null and expired is null}"}}
    assert [c for c in api.calls if "orchestrator" in c] == [
        f"POST {M}:8143/orchestrator/v1/command/deploy", f"GET {M}:8143/orchestrator/v1/jobs/1234",
        f"GET {M}:8143/orchestrator/v1/jobs/1234/nodes"]
    assert fake.commands_on(R) == [("puppet", "config", "delete", "server", "--section", "main")]
    assert fake.commands_on(A2) == [("puppet", "agent", "-t"), commands.agent_last_run_summary().argv]
    iptables = [c for c in fake.commands_on(M) if c[0] == "iptables"]
    assert [c[1] for c in iptables[:4]] == ["-I", "-I", "-I", "-I"]
    assert any(c[1] == "-D" for c in iptables)
    backups = list((settings.backup_dir).glob("classifier-unit-*.json"))
    assert len(backups) == 1 and json.loads(backups[0].read_text())[0]["name"] == "PE Agent"


def test_a_job_deploy_fails_naming_the_nodes_that_did_not_finish(tmp_path):
    settings = make_settings(tmp_path, backup_dir=tmp_path / "backups")
    api = fake_pe_api(settings, job_nodes=[(A1, "finished"), (A2, "failed")])
    fake = FakeExecutor()
    from flows.enable_replica import enable_replica

    with context.using(executor=fake, api=api, settings=settings):
        state = enable_replica(deploy="job", return_state=True)
    assert state.is_failed()
    assert f"orchestrator job 1234 on {M} ended failed: {A2} failed ({A2}: failed)" in state.message
    assert A1 not in state.message.split("ended failed:")[1]
    assert "stopped" not in api.state  # the job ended by itself: nothing to stop


def test_a_job_that_outlives_its_bound_is_stopped(tmp_path, monkeypatch):
    from tasks import orchestrator

    settings = make_settings(tmp_path)
    api = fake_pe_api(settings)
    monkeypatch.setattr(api, "job_state", lambda *a: "running")
    monkeypatch.setattr(orchestrator, "POLL_S", 0.01)
    with context.using(executor=FakeExecutor(), api=api, settings=settings) as ctx:
        with pytest.raises(WaitTimedOut, match="orchestrator job 1234 .* still running at its bound"):
            orchestrator.run_puppet_everywhere.fn(ctx, M, timeout_s=0.05)
    assert api.state["stopped"] == {"job": "1234"}


def test_enable_starts_the_puppet_service_again_after_a_failure(env):
    fake, _, _ = env
    fake.script(M, ("puppet", "resource", "service", "puppet"), stdout="service { 'puppet':\n  ensure => 'running',\n}")
    fake.script(M, ("puppet", "infrastructure", "enable"), exit_code=1, stdout="Error: enable failed")
    from flows.enable_replica import enable_replica

    assert enable_replica(return_state=True).is_failed()
    on_master = fake.commands_on(M)
    stopped = on_master.index(("puppet", "resource", "service", "puppet", "ensure=stopped"))
    enabled = next(i for i, c in enumerate(on_master) if c[:3] == ("puppet", "infrastructure", "enable"))
    assert stopped < enabled < on_master.index(("puppet", "resource", "service", "puppet", "ensure=running"))


@pytest.mark.parametrize("flow_name", ["enable_replica", "forget_replica"])
def test_enable_and_forget_refuse_an_unsupported_pe_version_before_anything_changes(env, flow_name):
    import importlib

    fake, _, _ = env
    fake.pe_version = "2027.1.0"
    flow = getattr(importlib.import_module(f"flows.{flow_name}"), flow_name)
    state = flow(return_state=True, **({"approve": True} if flow_name == "forget_replica" else {}))
    assert state.is_failed() and "newer than PE 2025.11, the newest line pe-ha is tested on" in state.message
    assert [c for h in (M, R) for c in fake.commands_on(h)] == [("cat", "/opt/puppetlabs/server/pe_version")]
    assert not [c for c in fake.calls if c.kind == "put"]


def test_drill_always_reconnects_when_the_test_run_fails(env):
    fake, _, _ = env
    fake.script(A1, ("puppet", "agent", "-t"), exit_code=1, stdout="Could not select a functional puppet master")
    from flows.enable_replica import enable_replica

    # inventory addresses are names here; the drill resolves them on the master
    fake.script(M, ("getent", "ahostsv4", R), stdout="198.51.100.12 STREAM replica")
    fake.script(M, ("getent", "ahostsv4", A1), stdout="198.51.100.21 STREAM agent1")
    state = enable_replica(drill=True, deploy="job", return_state=True)
    assert state.is_failed()
    deletes = [c for c in fake.commands_on(M) if c[:2] == ("iptables", "-D")]
    assert {c[4] for c in deletes} == {"198.51.100.12", "198.51.100.21"}


def test_enable_mono_with_compile_needs_urls_before_any_command(env):
    fake, _, _ = env
    from flows.enable_replica import enable_replica

    with pytest.raises(ValidationError, match="mono-with-compile"):
        enable_replica(topology="mono-with-compile")
    assert fake.calls == []


C1 = "compiler1.example.com"


@pytest.mark.parametrize(("flow_name", "status_on", "kwargs"), [
    ("enable_replica", M, {}),
    ("promote_replica", R, {"approve": True}),
    ("enable_ha_failover", R, {"host": M}),
])
def test_topology_mono_is_refused_where_pe_lists_compilers_before_anything_changes(env, flow_name, status_on, kwargs):
    import importlib

    fake, _, _ = env
    fake.script(status_on, ("puppet", "infrastructure", "status"), stdout=status_json(status_on, "running", C1))
    flow = getattr(importlib.import_module(f"flows.{flow_name}"), flow_name)
    state = flow(topology="mono", return_state=True, **kwargs)
    assert state.is_failed()
    assert f"topology=mono, but puppet infrastructure status on {status_on} lists compilers: {C1}" in state.message
    assert "mono-with-compile" in state.message  # the fix is named
    ran = [c for h in (M, R) for c in fake.commands_on(h)]
    assert ran == [("cat", "/opt/puppetlabs/server/pe_version"), ("puppet", "infrastructure", "status", "--format", "json")]
    assert not [c for c in fake.calls if c.kind == "put"]


def test_mono_with_compile_plans_where_pe_lists_compilers(env):
    fake, _, _ = env
    fake.script(M, ("puppet", "infrastructure", "status"), stdout=status_json(M, "running", C1))
    from flows.enable_replica import enable_replica

    plan = enable_replica(topology="mono-with-compile", agent_server_urls=[f"{C1}:8140"], pcp_brokers=[f"{C1}:8142"],
                          dry_run=True)
    assert f"compilers: {C1}" in plan["facts"]


def test_promote_goes_on_when_the_replica_cannot_list_the_compilers(env):
    fake, _, _ = env
    fake.script(R, ("puppet", "infrastructure", "status"), exit_code=1, stdout="Error: could not reach the master")
    from flows.promote_replica import promote_replica

    plan = promote_replica(dry_run=True)
    assert "compilers: not read (topology unchecked)" in plan["facts"]


def test_promote_refuses_while_the_master_answers_from_the_replica(env):
    fake, _, _ = env
    fake.script(R, ("timeout", "3", "bash", "-c"), stdout="8140\n8081\n")
    from flows.promote_replica import promote_replica

    state = promote_replica(approve=True, return_state=True)
    with pytest.raises(PreconditionFailed, match="still answers"):
        state.result()
    assert not any(c[:3] == ("puppet", "infrastructure", "promote") for c in fake.commands_on(R))


def test_promote_when_master_is_gone(env):
    fake, _, _ = env
    fake.unreachable.add(M)
    read_server_list = commands.config_print("server_list", section="agent").argv
    fake.script(A2, read_server_list, stdout=f"{M}:8140,{R}:8140\n")  # an agent the redeploy did not update
    from flows.promote_replica import promote_replica

    result = promote_replica(approve=True)
    assert result == {"promoted": R, "old_master": M, "still_points_at_old_master": [
        f"agent {A2}: server_list starts with {M} ({M}:8140,{R}:8140). Fix: once the classifier names {R}, run "
        f"Puppet on {A2} (puppet agent -t), or set it there: puppet config set server_list {R}:8140 --section main"]}
    assert ("puppet", "infrastructure", "promote", "replica", "--topology", "mono", "--yes", "--color", "false") \
        in fake.commands_on(R)
    assert fake.commands_on(A1) == [("puppet", "agent", "-t", f"--server_list={R}"), read_server_list]


def test_enable_ha_failover_removes_the_server_line_on_the_new_replica_last(env):
    fake, _, _ = env
    fake.script(M, ("puppet", "config", "delete", "server"), stdout=f"Deleted setting from 'main': 'server = {R}'")
    from flows.enable_ha_failover import enable_ha_failover

    assert enable_ha_failover(host=M)["server_removed"] is True
    ran_on_promoted = [c for c in fake.commands_on(R) if c[:3] != ("puppet", "infrastructure", "status")]
    assert ran_on_promoted[-1][:4] == ("puppet", "infrastructure", "run", "enable_ha_failover")
    assert fake.commands_on(M)[-1] == ("puppet", "config", "delete", "server", "--section", "main")


def test_enable_ha_failover_is_killed_at_its_bound(env):
    fake, _, _ = env
    fake.script(R, ("puppet", "infrastructure", "run"), error=RemoteTimeout("did not finish", host=R))
    from flows.enable_ha_failover import enable_ha_failover

    state = enable_ha_failover(host=M, replication_timeout_secs=30, plan_timeout_s=90, return_state=True)
    with pytest.raises(RemoteTimeout, match="plan_timeout_s=90"):
        state.result()
    (run,) = [c for c in fake.commands_on(R) if c[:3] == ("puppet", "infrastructure", "run")]
    assert "--token-file" not in run  # the plan reads no token from PE 2019.3 on
    assert not any(TF in c for c in fake.commands_on(R))  # and none is staged or removed


def test_enable_ha_failover_refuses_a_plan_bound_below_the_replication_wait(env):
    from flows.enable_ha_failover import enable_ha_failover

    state = enable_ha_failover(host=M, replication_timeout_secs=1800, plan_timeout_s=1800, return_state=True)
    assert state.is_failed() and "plan_timeout_s=1800 must exceed replication_timeout_secs=1800" in state.message


def test_enable_ha_failover_mono_with_compile_needs_the_agent_urls(env):
    fake, _, _ = env
    from flows.enable_ha_failover import enable_ha_failover

    state = enable_ha_failover(host=M, topology="mono-with-compile", return_state=True)
    assert state.is_failed() and "agent_server_urls and pcp_brokers" in state.message
    assert not any(c[:3] == ("puppet", "infrastructure", "run") for c in fake.commands_on(R))


def test_reinitialize_refuses_when_the_master_is_unhealthy(tmp_path):
    settings = make_settings(tmp_path)
    fake = FakeExecutor()
    api = fake_pe_api(settings, status={M: {"puppetdb-status": "error", "pe-master": "running"}})
    with context.using(executor=fake, api=api, settings=settings):
        from flows.reinitialize_replica import reinitialize_replica

        state = reinitialize_replica(databases=["pe-rbac"], approve=True, return_state=True)
    with pytest.raises(PreconditionFailed, match="not fully functional"):
        state.result()
    assert fake.commands_on(R) == []


def test_reinitialize_runs_one_db_flag_per_database(env):
    fake, _, _ = env
    from flows.reinitialize_replica import reinitialize_replica

    reinitialize_replica(databases=["pe-rbac", "pe-activity"], approve=True)
    assert fake.commands_on(R) == [("puppet", "infrastructure", "reinitialize", "replica", "--db", "pe-rbac", "--db",
                                    "pe-activity", "-y", "--color", "false")]
    assert ("cat", "/opt/puppetlabs/server/pe_version") in fake.commands_on(M)


@pytest.mark.parametrize("version", ["2023.8.0", "2023.8.4"])
def test_reinitialize_offers_pe_inventory_where_pe_documents_it(env, version):
    fake, _, _ = env
    fake.pe_version = version
    from flows.reinitialize_replica import reinitialize_replica

    reinitialize_replica(databases=["pe-inventory"], approve=True)
    assert fake.commands_on(R) == [("puppet", "infrastructure", "reinitialize", "replica", "--db", "pe-inventory",
                                    "-y", "--color", "false")]


@pytest.mark.parametrize("version", ["2019.8.12", "2021.7.9", "2023.7.0"])
def test_reinitialize_refuses_pe_inventory_on_versions_without_it_before_anything_runs(env, version):
    fake, _, _ = env
    fake.pe_version = version
    from flows.reinitialize_replica import reinitialize_replica

    state = reinitialize_replica(databases=["pe-inventory"], approve=True, return_state=True)
    assert state.is_failed() and "does not accept pe-inventory" in state.message and version in state.message
    assert fake.commands_on(R) == []


def test_reinitialize_refuses_an_unsupported_pe_version(env):
    fake, _, _ = env
    fake.pe_version = "2018.1.11"
    from flows.reinitialize_replica import reinitialize_replica

    state = reinitialize_replica(approve=True, return_state=True)
    assert state.is_failed() and "runs PE 2018.1.11" in state.message
    assert fake.commands_on(R) == []


def test_reinitialize_refuses_unknown_database(env):
    fake, _, _ = env
    from flows.reinitialize_replica import reinitialize_replica

    with pytest.raises(Exception, match="pe-activity.*pe-rbac"):
        reinitialize_replica(databases=["pe-puppetdb"], approve=True)
    assert fake.calls == []


def test_verify_health_fails_and_reports_when_a_service_is_down(tmp_path):
    settings = make_settings(tmp_path)
    api = fake_pe_api(settings, status={R: {"puppetdb-status": "starting"}})
    with context.using(executor=FakeExecutor(), api=api, settings=settings):
        from flows.verify_health import verify_health

        state = verify_health(return_state=True)
    assert state.is_failed() and "puppetdb-status: starting" in state.message


def _is_read(argv: tuple[str, ...]) -> bool:
    """The facts reads procedures make before planning: versions, files, addresses, space, CPUs, service states,
    PE's status (the compilers), PuppetDB's PQL counts (a GET), the link probe (zeros to the target's dd), tool lookups and the
    schema's table of contents (to a pipe)."""
    script = argv[-1] if argv[:2] == ("bash", "-c") else ""
    return (argv[0] in ("cat", "getent", "df", "nproc") or argv[:2] == ("test", "-f")
            or (argv[:3] == ("puppet", "resource", "service") and len(argv) == 4)
            or argv[:3] == ("puppet", "infrastructure", "status")
            or argv[0] == "/opt/puppetlabs/puppet/bin/curl" and "--get" in argv
            or argv[:2] == ("sh", "-c") and argv[2].startswith("command -v")
            or "/dev/zero" in script and script.endswith("date +%s.%N'") or script.endswith("pg_restore --list"))


def test_a_dry_run_only_reads_facts(env):
    fake, api, _ = env
    fake.script(M, ("getent", "ahostsv4", R), stdout="198.51.100.12 STREAM replica")
    fake.script(M, ("getent", "ahostsv4", A1), stdout="198.51.100.21 STREAM agent1")
    for host in (M, R):
        fake.script(host, ("df",), stdout="Avail\n999999999999\n")
    from flows.copy_puppetdb import copy_puppetdb
    from flows.enable_replica import enable_replica
    from flows.provision_replica import provision_replica

    plan = provision_replica(dry_run=True)["plan"]
    assert any("provision replica" in row["command"] for row in plan)
    assert enable_replica(dry_run=True, drill=True)["dry_run"]
    assert any("pg_restore" in row["command"] for row in copy_puppetdb(method="documented", dry_run=True)["plan"])
    sent = [c.argv for c in fake.calls if c.kind == "run"]
    assert sent and [argv for argv in sent if not _is_read(argv)] == []
    assert [c for c in api.calls if not c.startswith("GET ")] == []  # the classifier's replicas: a read


def test_retry_policy_never_retries_auth_or_refusals():
    from pe_ha.errors import ApiUnavailable, AuthError, ConnectError
    from pe_ha.retry import retry_if_transient

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    assert retry_if_transient(None, None, State(ConnectError("x", host="h")))
    assert retry_if_transient(None, None, State(ApiUnavailable("x", url="u")))
    assert not retry_if_transient(None, None, State(AuthError("401", url="u", status=401)))
    assert not retry_if_transient(None, None, State(PreconditionFailed("no")))
    assert not retry_if_transient(None, None, State(CommandFailed(host="h", command="c", exit_code=1)))


def test_command_result_masks_secrets():
    from pe_ha.masking import register_secret

    register_secret("sekrit-token-value")
    r = CommandResult("h", ("echo", "sekrit-token-value"), 0, "", "", 0.0)
    assert "sekrit" not in r.command


def test_enable_restarts_at_a_named_step_without_repeating_the_enable(env):
    fake, api, settings = env
    from flows.enable_replica import enable_replica

    enable_replica(deploy="job", start_at="deploy")
    master = fake.commands_on(M)
    assert not any(c[:3] == ("puppet", "infrastructure", "enable") for c in master)
    assert f"POST {M}:8143/orchestrator/v1/command/deploy" in api.calls
    assert not list(settings.backup_dir.glob("*.json"))  # the backup step was before the restart point


def test_provision_restarts_at_wait_without_reprovisioning(env):
    fake, _, _ = env
    fake.script(R, ("puppet", "config", "print", "server"), stdout=M)
    fake.script(M, ("puppet", "infrastructure", "status", "--host", R), stdout=status_json(R))
    from flows.provision_replica import provision_replica

    provision_replica(start_at="wait", sync_timeout_s=30)
    assert not any(c[:3] == ("puppet", "infrastructure", "provision") for c in fake.commands_on(M))
    assert fake.commands_on(A1) == [("puppet", "agent", "-t", "--noop", f"--server_list={R}"),
                                    commands.agent_last_run_summary().argv]


def test_promote_names_its_topology_and_is_bounded_by_its_own_timeout(env):
    fake, _, _ = env
    from flows.promote_replica import promote_replica

    promote_replica(approve=True, allow_master_reachable=True, promote_timeout_s=7200)
    promote = next(c for c in fake.calls if c.argv[:3] == ("puppet", "infrastructure", "promote"))
    assert promote.argv == ("puppet", "infrastructure", "promote", "replica", "--topology", "mono", "--yes", "--color",
                            "false")
    assert promote.timeout_s == 7200


def test_promote_waits_longer_than_an_hour_by_default(env):
    fake, _, _ = env
    from flows.promote_replica import promote_replica

    promote_replica(approve=True, allow_master_reachable=True)
    promote = next(c for c in fake.calls if c.argv[:3] == ("puppet", "infrastructure", "promote"))
    assert promote.timeout_s is not None and promote.timeout_s > 3600


def test_promote_refuses_a_timeout_shorter_than_any_promotion_before_anything_runs(env):
    fake, _, _ = env
    from flows.promote_replica import promote_replica

    with pytest.raises(ValidationError, match="promote_timeout_s"):
        promote_replica(approve=True, promote_timeout_s=60)
    assert fake.calls == []


def test_configure_agent_failover_is_idempotent(env):
    from flows.configure_agent_failover import Site, configure_agent_failover

    sites = [Site(name="east", fact="pp_region", value="east", server_list=["lb-east.example.com"],
                  pcp_broker_list=["lb-east.example.com"]),
             Site(name="west", fact="pp_datacenter", value="dc-west", server_list=["cm-west.example.com:8140"],
                  pcp_broker_list=["cm-west.example.com:8142"])]
    first = configure_agent_failover(sites=sites)
    second = configure_agent_failover(sites=sites)
    assert first["sites"] == {"east": "changed", "west": "changed"}
    assert second["sites"] == {"east": "unchanged", "west": "unchanged"}


def test_a_site_group_excludes_pe_server_nodes_and_runs_in_its_parents_environment(tmp_path):
    settings = make_settings(tmp_path, backup_dir=tmp_path / "backups")
    groups = [{"name": "PE Agent", "id": "agent-id", "parent": "infra-id", "rule": None, "classes": {},
               "environment": "pe_infra"},
              {"name": "PE Infrastructure", "id": "infra-id", "parent": "root", "environment": "pe_infra",
               "classes": {"puppet_enterprise": {"ha_enabled_replicas": [R]}}}]
    api = fake_pe_api(settings, groups=groups)
    with context.using(executor=FakeExecutor(), api=api, settings=settings):
        from flows.configure_agent_failover import Site, configure_agent_failover

        configure_agent_failover(sites=[Site(name="east", fact="pp_region", value="east",
                                             server_list=["lb-east.example.com"], pcp_broker_list=["lb-east.example.com"])])
    created = next(g for g in groups if g["name"] == "PE Agent - east")
    assert created["environment"] == "pe_infra"
    assert created["rule"] == ["and", ["=", ["trusted", "extensions", "pp_region"], "east"],
                               ["not", ["~", ["fact", "pe_server_version"], ".+"]]]


def test_site_servers_are_validated():
    from pydantic import ValidationError as PydanticError

    from flows.configure_agent_failover import Site

    with pytest.raises(PydanticError):
        Site(name="x", value="east", server_list=["bad host"], pcp_broker_list=["ok.example.com"])


@pytest.mark.parametrize("procedure", ["provision_replica", "verify_health"])
def test_a_run_from_another_installations_deployment_is_refused_before_any_command(env, monkeypatch, procedure):
    # The deployment is named after its installation; a worker with other settings must not run it.
    fake, api, settings = env
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__NAME", "prod-eu")
    import importlib

    flow = getattr(importlib.import_module(f"flows.{procedure}"), procedure)
    state = flow(return_state=True)
    assert state.is_failed()
    assert f"installation 'prod-eu', but the worker running it has the settings of installation " \
           f"'{settings.installation}'" in state.message
    assert "--work-queue prod-eu" in state.message
    assert fake.calls == [] and api.calls == []


def test_a_failed_deploy_leaves_labels_naming_the_last_finished_step_and_the_resume_command(env):
    """What the crash alert reads: a run whose worker dies cannot say where it stopped, so each finished step
    is recorded on the run as it goes."""
    fake, api, _ = env
    api.state["job_nodes"] = [(A1, "failed")]
    from prefect.client.orchestration import get_client

    from flows.enable_replica import enable_replica

    state = enable_replica(deploy="job", return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        labels = client.read_flow_run(state.state_details.flow_run_id).labels
    assert labels["pe-ha.last-finished-step"] == "puppet infrastructure enable replica"
    assert labels["pe-ha.resume"] == "pe-ha run enable-replica --param start_at=deploy (with this run's other parameters)"
