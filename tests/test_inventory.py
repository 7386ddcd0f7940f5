"""PEHA_INVENTORY_FILE: a Bolt-like inventory.yaml as a settings source; a wrong file names its key and line."""

from __future__ import annotations

import os
import textwrap

import pytest

from pe_ha.errors import ConfigurationError
from pe_ha.settings import load_settings

GOOD = """\
installation: prod-eu
config:
  ssh:
    user: root
    private-key: {dir}/key
    known-hosts: {dir}/known_hosts
groups:
  - name: master
    targets: [{{name: pe-master.example.com, uri: 10.0.0.5}}]
  - name: replica
    targets: [pe-replica.example.com]
  - name: managed_nodes
    config:
      ssh:
        port: 2222
    targets:
      - agent1.example.com
      - {{name: agent2.example.com, uri: "ssh://admin@10.0.0.22:22"}}
"""


@pytest.fixture()
def files(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("PEHA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name in ("key", "known_hosts", "token", "ca.pem"):
        (tmp_path / name).write_text("x")

    def load(text: str, **env: str):
        path = tmp_path / "inventory.yaml"
        path.write_text(textwrap.dedent(text).format(dir=tmp_path))
        monkeypatch.setenv("PEHA_INVENTORY_FILE", str(path))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return load_settings(rbac_token_file=tmp_path / "token", ca_cert=tmp_path / "ca.pem")

    return load


def test_an_inventory_file_gives_the_installation_hosts_and_ssh_files(files, tmp_path):
    s = files(GOOD)
    assert s.installation == "prod-eu"
    assert (s.master.name, s.master.address, s.master.user, s.master.port) == ("pe-master.example.com", "10.0.0.5", "root", 22)
    assert s.replica is not None and (s.replica.name, s.replica.address) == ("pe-replica.example.com", None)
    assert [(n.name, n.address, n.user, n.port) for n in s.managed_nodes] == [
        ("agent1.example.com", None, "root", 2222), ("agent2.example.com", "10.0.0.22", "admin", 22)]
    assert s.ssh_key_file == tmp_path / "key" and s.ssh_known_hosts_file == tmp_path / "known_hosts"


def test_the_json_variables_keep_working_and_take_precedence(files):
    s = files(GOOD, PEHA_MASTER='{"name": "other-master.example.com"}')
    assert s.master.name == "other-master.example.com"
    assert s.replica is not None and s.replica.name == "pe-replica.example.com"


@pytest.mark.parametrize(("text", "where", "says"), [
    ("installation: x\nmaster: pe-master.example.com\n", ":2: master", "unknown key"),
    ("groups:\n  - name: masters\n    targets: [m.example.com]\n", ":2: groups[0].name", "'masters' is not master"),
    ("groups:\n  - name: master\n    targets: [a.example.com, b.example.com]\n", ":3: groups[0].targets",
     "one target at most"),
    ("groups:\n  - name: master\n    targets: ['bad host; rm -rf /']\n", ":3: groups[0].targets[0].name", ""),
    ("config:\n  ssh:\n    host-key-check: false\n", ":3: config.ssh.host-key-check", "always checks host keys"),
    ("groups:\n  - name: master\n    targets: [{{name: m.example.com, uri: 'h:port'}}]\n", ":3: groups[0].targets[0].uri",
     "host:port"),
    ("groups: [\n", ":2", "not valid YAML"),
])
def test_a_wrong_file_is_refused_naming_the_key_and_line(files, text, where, says):
    with pytest.raises(ConfigurationError) as info:
        files(text)
    message = str(info.value)
    assert "PEHA_INVENTORY_FILE" in message and f"inventory.yaml{where}" in message and says in message


def test_a_missing_inventory_file_is_named(files, tmp_path, monkeypatch):
    monkeypatch.setenv("PEHA_INVENTORY_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigurationError, match="nope.yaml: cannot read the inventory file"):
        load_settings(rbac_token_file=tmp_path / "token", ca_cert=tmp_path / "ca.pem")
