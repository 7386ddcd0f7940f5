"""Bad input is refused before any remote command runs (the counting executor sees zero commands)."""

from __future__ import annotations

import pytest

from pe_ha import context
from pe_ha.errors import ConfigurationError, PeHaError, ValidationError
from pe_ha.ssh import FabricExecutor
from tests.lab.conftest import lab_settings

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_harness")]


class Counting(FabricExecutor):
    def __init__(self, settings):
        super().__init__(settings)
        self.commands: list[tuple] = []

    def run(self, host, argv, **kw):
        self.commands.append((host, tuple(argv)))
        return super().run(host, argv, **kw)


def run_refused(flow, **params):
    settings = lab_settings()
    ex = Counting(settings)
    with context.using(settings=settings, executor=ex):
        state = flow(**params, return_state=True)
    assert state.is_failed(), f"{flow.name} was not refused: {state}"
    return state, ex.commands


BAD_HOSTS = {
    "shell metacharacters": "replica.lab.test;reboot",
    "a space": "replica lab.test",
    "a unicode look-alike": "rеplica.lab.test",
    "a leading dash": "-oProxyCommand=x",
    "an over-long name": "r" * 64 + ".lab.test",
    "the master itself": "master.lab.test",
    "a host not in the inventory": "other.lab.test",
}


@pytest.mark.parametrize("case", list(BAD_HOSTS))
def test_bad_replica_names(lab, outcome, case):
    from flows.provision_replica import provision_replica

    with outcome("bad input", f"provision_replica with a replica name with {case}",
                 "ValidationError, zero commands") as o:
        state, commands = run_refused(provision_replica, replica=BAD_HOSTS[case])
        assert commands == []
        assert "ValidationError" in state.message or "not in the inventory" in state.message
        o.observed = f"refused: {state.message.split(':', 1)[1].strip()[:90]}; {len(commands)} commands"


@pytest.mark.parametrize(("case", "flow_name", "params"), [
    ("reinitialize a database outside the four", "reinitialize", {"databases": ["pe-puppetdb"], "approve": True}),
    ("topology outside mono and mono-with-compile", "enable", {"topology": "split"}),
    ("a negative timeout", "provision", {"sync_timeout_s": -1}),
    ("an absurd timeout", "provision", {"sync_timeout_s": 10**9}),
    ("mono-with-compile without skip_agent_config or URL lists", "enable", {"topology": "mono-with-compile"}),
    ("enable_ha_failover with a zero replication timeout", "failover", {"host": "master.lab.test",
                                                                        "replication_timeout_secs": 0}),
])
def test_bad_parameters(lab, outcome, case, flow_name, params):
    from flows.enable_ha_failover import enable_ha_failover
    from flows.enable_replica import enable_replica
    from flows.provision_replica import provision_replica
    from flows.reinitialize_replica import reinitialize_replica

    flow = {"reinitialize": reinitialize_replica, "enable": enable_replica, "provision": provision_replica,
            "failover": enable_ha_failover}[flow_name]
    with outcome("bad input", case, "refused, zero commands") as o:
        try:
            state, commands = run_refused(flow, **params)
            message = state.message
        except (ValidationError, PeHaError) as exc:  # refused while building the plan, before the run
            message, commands = str(exc), []
        assert commands == []
        o.observed = f"refused: {message[:110]}; 0 commands"


def test_promote_while_the_master_answers(fresh_lab, outcome):
    from flows.promote_replica import promote_replica

    with outcome("bad input", "promote_replica while the master still answers",
                 "refused by the split-brain guard; no promote") as o:
        state, commands = run_refused(promote_replica, approve=True)
        assert not any(c[1][:3] == ("puppet", "infrastructure", "promote") for c in commands)
        assert "still answers" in state.message
        o.observed = "refused: " + state.message.split(":", 1)[1].strip()[:100]


def test_forget_while_the_replica_answers(fresh_lab, outcome):
    from flows.forget_replica import forget_replica
    from lab import core

    # make the replica answer on PE ports: start its console service
    core.node_run(fresh_lab.replica, "pe-sim", "provision-target", "master.lab.test", "0")
    with outcome("bad input", "forget_replica while the replica still answers", "refused; no forget") as o:
        state, commands = run_refused(forget_replica, approve=True)
        assert not any(c[1][:3] == ("puppet", "infrastructure", "forget") for c in commands)
        o.observed = "refused: " + state.message.split(":", 1)[1].strip()[:100]


def test_reinitialize_while_the_master_is_unhealthy(fresh_lab, outcome):
    from flows.reinitialize_replica import reinitialize_replica
    from lab import core

    core.node_run(fresh_lab.master, "puppet", "resource", "service", "pe-orchestration-services", "ensure=stopped")
    with outcome("bad input", "reinitialize_replica while the master is unhealthy", "refused; no reinitialize") as o:
        state, commands = run_refused(reinitialize_replica, databases=["pe-rbac"], approve=True)
        assert not any(c[1][:3] == ("puppet", "infrastructure", "reinitialize") for c in commands)
        o.observed = "refused: " + state.message.split(":", 1)[1].strip()[:100]


@pytest.mark.parametrize(("case", "override", "setting"), [
    ("a missing SSH key file", {"ssh_key_file": "/nonexistent/key"}, "PEHA_SSH_KEY_FILE"),
    ("an unreadable (empty) token file", {"rbac_token_file": "/dev/null"}, "PEHA_RBAC_TOKEN_FILE"),
    ("a bad CA path", {"ca_cert": "/nonexistent/ca.pem"}, "PEHA_CA_CERT"),
])
def test_malformed_settings(lab, outcome, case, override, setting):
    with outcome("bad input", f"settings with {case}", f"ConfigurationError naming {setting}") as o:
        settings = lab_settings(**override)
        with pytest.raises(ConfigurationError) as info:
            settings.check_files()
            settings.rbac_token()
        assert setting in str(info.value)
        o.observed = str(info.value)[:110]
