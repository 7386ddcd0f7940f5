"""Plain system tools on a node: files, checksums, ssh and scp between nodes, TCP probes, the drill's iptables rules."""

from __future__ import annotations

from collections.abc import Sequence

from pe_ha import validation as v
from pe_ha.commands._base import PUPPET, SSH_MUX, Command, _ipv4, is_ipv4


def sha256sum(path: str) -> Command:
    return Command(("sha256sum", "--", v.absolute_path(path)), f"sha256 of {path}")


def free_bytes(path: str) -> Command:
    return Command(("df", "--output=avail", "-B1", "--", v.absolute_path(path)), f"free space at {path}")


def cpu_count() -> Command:
    return Command(("nproc",), "CPU count")


def remove_files(*paths: str) -> Command:
    return Command(("rm", "-f", "--", *(v.absolute_path(p) for p in paths)), "remove " + " ".join(paths))


def make_dir(path: str, *, owner: str | None = None, mode: str = "0750") -> Command:
    if mode not in ("0700", "0750", "0755"):
        raise ValueError(f"directory mode {mode!r}")
    argv = ["install", "-d", "-m", mode]
    if owner:
        argv += ["-o", v.os_user(owner)]
    return Command(tuple([*argv, v.absolute_path(path)]), f"mkdir {path}")


def scp_to(path: str, *, host: str, dest: str, multiplex: bool = False) -> Command:
    """``scp -q -o BatchMode=yes <path> <host>:<dest>`` run on the source node (the guide's transfer).
    ``multiplex``: over the shared connection of the fast copy's streams, opening it (``SSH_MUX``)."""
    return Command(("scp", "-q", "-o", "BatchMode=yes", *(SSH_MUX if multiplex else ()), "-o", "ConnectTimeout=10",
                    "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", v.absolute_path(path),
                    f"{v.hostname(host)}:{v.absolute_path(dest)}"), f"scp {path} to {host}")


def pe_version() -> Command:
    return Command(("cat", "/opt/puppetlabs/server/pe_version"), "PE version")


PE_CONF = "/etc/puppetlabs/enterprise/conf.d/pe.conf"


def read_pe_conf() -> Command:
    """The primary's pe.conf (the installer's parameters), read for the prerequisites PE names."""
    return Command(("cat", PE_CONF), "read pe.conf")


def ssh_check(target: str, *, timeout_s: int = 5) -> Command:
    """Can this node ssh to ``target`` as root without a prompt (what ``puppet infrastructure run`` needs)?"""
    return Command(("ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={v.positive_int(timeout_s, what='timeout', maximum=60)}",
                    v.hostname(target), "true"), f"ssh to {target}")


def file_exists(path: str) -> Command:
    return Command(("test", "-f", v.absolute_path(path)), f"{path} exists")


def make_readable(path: str) -> Command:
    """``chmod 0644``: a file copied to a new replica before PE is installed there (its service users do not exist
    yet), readable by the service that will use it, as peadm's ``util/copy_file.pp`` writes it."""
    return Command(("chmod", "0644", "--", v.absolute_path(path)), f"{path} readable (0644)")


def copy_preserving(path: str, *, host: str) -> Command:
    """``scp -p`` a file to the same path on ``host`` (mode and times kept), run on the node that has it."""
    return Command(("scp", "-p", "-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", v.absolute_path(path),
                    f"{v.hostname(host)}:{v.absolute_path(path)}"), f"copy {path} to {host}")


def service_state(name: str) -> Command:
    """``puppet resource service <name>``: prints the current ensure value."""
    return Command((PUPPET, "resource", "service", v.service(name)), f"state of {name}")


def tcp_probe(host: str, port: int, *, timeout_s: int = 3) -> Command:
    """Exit 0 when ``host:port`` accepts a TCP connection within ``timeout_s`` (bash /dev/tcp, no nc needed)."""
    host = v.hostname(host) if not is_ipv4(host) else host
    return Command(("timeout", str(v.positive_int(timeout_s, what="probe timeout", maximum=60)), "bash", "-c",
                    'exec 3<>"/dev/tcp/$0/$1"', host, str(v.positive_int(port, what="port", maximum=65535))),
                   f"probe {host}:{port}")


def tcp_probe_ports(host: str, ports: Sequence[int], *, timeout_s: int = 3) -> Command:
    """Probe all ``ports`` of ``host`` at once; prints each port that accepts a TCP connection."""
    host = v.hostname(host) if not is_ipv4(host) else host
    script = 'h=$1; shift; for p in "$@"; do (exec 3<>"/dev/tcp/$h/$p" && echo "$p") 2>/dev/null & done; wait'
    return Command(("timeout", str(v.positive_int(timeout_s, what="probe timeout", maximum=60)), "bash", "-c", script,
                    "probe", host, *(str(v.positive_int(p, what="port", maximum=65535)) for p in ports)),
                   f"probe {host} ports {','.join(map(str, ports))}")


def resolve_ipv4(host: str) -> Command:
    return Command(("getent", "ahostsv4", v.hostname(host)), f"resolve {host}")


DRILL_COMMENT = "pe-ha-failover-drill"


def drill_block(address: str) -> list[Command]:
    """iptables DROP rules on the master for traffic from and to ``address`` (the guide's drill)."""
    ip = _ipv4(address)
    base = ("-m", "comment", "--comment", DRILL_COMMENT, "-j", "DROP")
    return [Command(("iptables", "-I", "INPUT", "-s", ip, *base), f"drop traffic from {ip}"),
            Command(("iptables", "-I", "OUTPUT", "-d", ip, *base), f"drop traffic to {ip}")]


def drill_unblock(address: str) -> list[Command]:
    ip = _ipv4(address)
    base = ("-m", "comment", "--comment", DRILL_COMMENT, "-j", "DROP")
    return [Command(("iptables", "-D", "INPUT", "-s", ip, *base), f"allow traffic from {ip}"),
            Command(("iptables", "-D", "OUTPUT", "-d", ip, *base), f"allow traffic to {ip}")]


def list_drill_rules() -> Command:
    return Command(("iptables", "-S"), "list iptables rules")
