"""A Bolt-like inventory file (``PEHA_INVENTORY_FILE=inventory.yaml``) as a source of pe-ha's settings.

The shape follows Bolt's ``inventory.yaml``: SSH settings under ``config: ssh:``, and groups of targets, each
a name or ``{name, uri, config}``. pe-ha knows three groups: ``master`` (one target), ``replica`` (at most
one) and ``managed_nodes``::

    installation: prod-eu
    config:
      ssh:
        user: root
        private-key: /etc/pe-ha/id_ed25519
        known-hosts: /etc/pe-ha/known_hosts     # pe-ha's addition: host keys are always checked strictly
    groups:
      - name: master
        targets: [{name: pe-master.example.com, uri: 10.0.0.5}]
      - name: replica
        targets: [pe-replica.example.com]
      - name: managed_nodes
        targets: [agent1.example.com, agent2.example.com]

Environment variables (``PEHA_MASTER`` … as JSON) and ``.env`` lines take precedence over the file. A wrong
file is refused with one error naming the key and its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pe_ha import validation
from pe_ha.errors import ConfigurationError, ValidationError

SETTING = "PEHA_INVENTORY_FILE"
GROUPS = {"master": 1, "replica": 1, "managed_nodes": None}  # group -> most targets
TOP_KEYS = {"installation", "config", "groups"}
SSH_KEYS = {"user", "port", "private-key", "known-hosts", "host-key-check"}
TARGET_KEYS = {"name", "uri", "config"}


class _Doc:
    """The parsed file with the line of every node, for errors that say where."""

    def __init__(self, path: Path) -> None:
        import yaml

        self.path = path
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(SETTING, f"{path}: cannot read the inventory file ({exc.strerror or exc})") from None
        try:
            self.root = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigurationError(SETTING, f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None

    def fail(self, node: Any, key: str, problem: str) -> ConfigurationError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigurationError(SETTING, f"{self.path}:{line}: {key}: {problem}",
                                  hint="see pe_ha/inventory.py for the file's shape")

    def mapping(self, node: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, "must be a mapping")
        out: dict[str, Any] = {}
        for k, v in node.value:
            name = str(k.value)
            if name not in allowed:
                raise self.fail(k, f"{key}.{name}" if key else name,
                                f"unknown key (known here: {', '.join(sorted(allowed))})")
            out[name] = v
        return out

    def scalar(self, node: Any, key: str) -> str:
        import yaml

        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            raise self.fail(node, key, "must be a plain value")
        return str(node.value)

    def sequence(self, node: Any, key: str) -> list[Any]:
        import yaml

        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key, "must be a list")
        return list(node.value)


def _ssh(doc: _Doc, node: Any, key: str) -> dict[str, Any]:
    config = doc.mapping(node, key, {"ssh", "transport"})
    if "transport" in config and doc.scalar(config["transport"], f"{key}.transport") != "ssh":
        raise doc.fail(config["transport"], f"{key}.transport", "pe-ha reaches PE nodes over ssh only")
    if "ssh" not in config:
        return {}
    ssh = {k: (v, doc.scalar(v, f"{key}.ssh.{k}")) for k, v in doc.mapping(config["ssh"], f"{key}.ssh", SSH_KEYS).items()}
    if "host-key-check" in ssh and ssh["host-key-check"][1].lower() != "true":
        raise doc.fail(ssh["host-key-check"][0], f"{key}.ssh.host-key-check", "pe-ha always checks host keys")
    if "port" in ssh and not ssh["port"][1].isdigit():
        raise doc.fail(ssh["port"][0], f"{key}.ssh.port", "must be a port number")
    return {k: v for k, (_, v) in ssh.items()}


def _target(doc: _Doc, node: Any, key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        fields = {"name": node}
    else:
        fields = doc.mapping(node, key, TARGET_KEYS)
        if "name" not in fields and "uri" not in fields:
            raise doc.fail(node, key, "a target needs a name (its certname) or a uri")
    name_node = fields.get("name", fields.get("uri"))
    name = doc.scalar(name_node, f"{key}.name")
    try:
        name = validation.hostname(name, what=f"{key}.name")
    except ValidationError as exc:
        raise doc.fail(name_node, f"{key}.name", exc.message) from None
    host: dict[str, Any] = {"name": name}
    own: dict[str, Any] = _ssh(doc, fields["config"], f"{key}.config") if "config" in fields else {}
    ssh: dict[str, Any] = {**defaults, **own}
    if "uri" in fields:
        uri = doc.scalar(fields["uri"], f"{key}.uri").removeprefix("ssh://")
        user, _, rest = uri.rpartition("@")
        address, _, port = rest.partition(":")
        if port and not port.isdigit():
            raise doc.fail(fields["uri"], f"{key}.uri", "must be host, host:port or ssh://user@host:port")
        host["address"] = address
        if port:
            ssh["port"] = port
        if user:
            ssh["user"] = user
    if "user" in ssh:
        host["user"] = ssh["user"]
    if "port" in ssh:
        host["port"] = int(ssh["port"])
    return host


def load(path: Path) -> dict[str, Any]:
    """The settings the file gives: installation, master, replica, managed_nodes and the SSH files."""
    doc = _Doc(path)
    top = doc.mapping(doc.root, "", TOP_KEYS)
    out: dict[str, Any] = {}
    if "installation" in top:
        out["installation"] = doc.scalar(top["installation"], "installation")
    ssh = _ssh(doc, top["config"], "config") if "config" in top else {}
    if "private-key" in ssh:
        out["ssh_key_file"] = ssh["private-key"]
    if "known-hosts" in ssh:
        out["ssh_known_hosts_file"] = ssh["known-hosts"]
    defaults: dict[str, Any] = {k: ssh[k] for k in ("user", "port") if k in ssh}
    seen: set[str] = set()
    for i, group_node in enumerate(doc.sequence(top["groups"], "groups") if "groups" in top else []):
        group = doc.mapping(group_node, f"groups[{i}]", {"name", "targets", "config"})
        if "name" not in group:
            raise doc.fail(group_node, f"groups[{i}]", "a group needs a name: master, replica or managed_nodes")
        name = doc.scalar(group["name"], f"groups[{i}].name")
        if name not in GROUPS:
            raise doc.fail(group["name"], f"groups[{i}].name", f"{name!r} is not master, replica or managed_nodes")
        if name in seen:
            raise doc.fail(group["name"], f"groups[{i}].name", f"the group {name} is given twice")
        seen.add(name)
        own: dict[str, Any] = _ssh(doc, group["config"], f"groups[{i}].config") if "config" in group else {}
        group_ssh: dict[str, Any] = {**defaults, **own}
        targets_node = group.get("targets")
        targets = doc.sequence(targets_node, f"groups[{i}].targets") if targets_node is not None else []
        most = GROUPS[name]
        if most is not None and len(targets) > most:
            raise doc.fail(targets_node, f"groups[{i}].targets", f"the {name} group has one target at most")
        hosts = [_target(doc, t, f"groups[{i}].targets[{j}]", group_ssh) for j, t in enumerate(targets)]
        if name == "managed_nodes":
            out["managed_nodes"] = hosts
        elif hosts:
            out[name] = hosts[0]
    return out
