"""The command type and the helpers every builder shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pe_ha.errors import ValidationError

PUPPET = "puppet"
# The curl every PE node has (the agent package ships it): a node's own tools, never the system's.
PE_CURL = "/opt/puppetlabs/puppet/bin/curl"
# PuppetDB's cleartext listener: by default on the node's loopback only, so no certificate is needed there.
PUPPETDB_LOOPBACK = "http://127.0.0.1:8080"


AGENT_NODES_QUERY = "nodes {deactivated is null and expired is null}"


PUPPET_PORT = 8140
PCP_PORT = 8142
CLASSIFIER_PORT = 4433
PUPPETDB_PORT = 8081


@dataclass(frozen=True)
class Command:
    """One remote command: its argv and a short description for plans and logs."""

    argv: tuple[str, ...]
    description: str

    def __iter__(self):  # lets a Command be passed where argv is expected
        return iter(self.argv)

    def shell(self) -> str:
        """The argv as the executor sends it (``shlex.join``), for plans and logs."""
        import shlex

        return shlex.join(self.argv)

    def filled(self, placeholder: str, value: str) -> Command:
        """The same command with a value known only at run time (a snapshot id) in place of its placeholder."""
        return Command(tuple(a.replace(placeholder, value) for a in self.argv), self.description)


def is_ipv4(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 4 and all(p.isdigit() and 0 <= int(p) <= 255 and str(int(p)) == p for p in parts)


def _ipv4(value: str) -> str:
    if not is_ipv4(value):
        raise ValidationError(f"{value!r} is not an IPv4 address")
    return value


def _pipeline(*stages: Sequence[str]) -> Command:
    """``bash -c 'set -o pipefail; a | b | c'``: each stage is quoted here, where the pipeline is built."""
    import shlex

    script = "set -o pipefail; " + " | ".join(shlex.join(stage) for stage in stages)
    return Command(("bash", "-c", script), "pipeline")


# One ssh connection from the source to the target, shared by the copy's streams. The schema's scp opens it
# before the streams start (``scp_to(..., multiplex=True)``): streams that started together each tried to open
# it and all but one warned "ControlSocket ... already exists, disabling multiplexing".
SSH_MUX = ("-o", "ControlMaster=auto", "-o", "ControlPath=/tmp/pe-ha-mux-%C", "-o", "ControlPersist=30")
