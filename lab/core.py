"""Bring the lab up and down, inspect it, and cut hosts off.

Every process the lab starts lives in one of its network namespaces, so teardown finds them all
with ``ip netns pids`` and ends them by PID; nothing is killed by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from lab import pdbschema, pgbuilds
from lab.config import (
    LAB_DIR,
    NODE_FILE_MOUNTS,
    NODE_MOUNTS,
    PG_CLIENT_BIN,
    PREFIX,
    ROOT_ADDR,
    Host,
    LabConfig,
)

SIM_SRC = Path(__file__).parent / "sim"
CREATED = LAB_DIR.parent / "pe-ha-lab.created.json"  # survives LAB_DIR removal until the very end
NODE_PATH = "/opt/puppetlabs/bin:/opt/puppetlabs/server/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sh(*argv: str, check: bool = True, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, input=input, timeout=timeout)


# -- namespaces ---------------------------------------------------------------------------------------


def lab_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(PREFIX + "-")]


def holder_pid(host: Host) -> int:
    return int((host.tree / "holder.pid").read_text())


def nsenter(host: Host, *argv: str) -> list[str]:
    return ["nsenter", "-t", str(holder_pid(host)), "-m", "-u", "-n", "-p", "-i", "--wd=/", *argv]


def node_run(host: Host, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None,
             as_postgres: bool = False) -> subprocess.CompletedProcess:
    """Run a command inside a lab host (without SSH), in a root-login-like environment."""
    env = ["env", "-i", "HOME=/root", "USER=root", "LOGNAME=root", "LANG=C.UTF-8", f"PATH={NODE_PATH}"]
    if as_postgres:
        env = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
               "env", "-i", "HOME=/var/lib/postgresql", "USER=postgres", "LANG=C.UTF-8",
               f"PATH=/opt/puppetlabs/server/bin:{PG_CLIENT_BIN}:/usr/bin:/bin"]
    return sh(*nsenter(host, *env, *argv), check=check, timeout=timeout, input=input)


def node_popen(host: Host, *argv: str) -> subprocess.Popen:
    """Start a command inside a lab host in the background (tests: a competing writer, a slow reader)."""
    env = ["env", "-i", "HOME=/root", "USER=root", "LOGNAME=root", "LANG=C.UTF-8", f"PATH={NODE_PATH}"]
    return subprocess.Popen(nsenter(host, *env, *argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- down ---------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def netns_pids(netns: str) -> list[int]:
    """Every process in the network namespace (none when it is gone)."""
    return [int(p) for p in sh("ip", "netns", "pids", netns, check=False).stdout.split()]


def down(verbose: bool = True) -> None:
    """End every lab process by PID, delete the namespaces and everything the lab added. Idempotent."""
    started = time.monotonic()
    namespaces = lab_netns()
    pids: set[int] = set()
    for ns in namespaces:
        pids |= set(netns_pids(ns))
    for pid in pids:  # a frozen process ignores TERM until continued
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    # Stop PostgreSQL cleanly first (SIGINT = fast shutdown). Its postmaster.pid holds the PID inside the node's
    # PID namespace, not ours: the postmaster is the postgres process whose parent is not one.
    for pid in pids:
        if _is_postmaster(pid) and not _is_postmaster(_parent(pid)):
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids if _is_postmaster(p)):
        time.sleep(0.05)
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            if _alive(pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
    for ns in namespaces:
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", f"{PREFIX}0", check=False)
    created = json.loads(CREATED.read_text()) if CREATED.exists() else []
    _remove_lab_dir()
    for path in sorted(created, key=len, reverse=True):
        try:
            os.rmdir(path)
        except OSError:
            pass
    CREATED.unlink(missing_ok=True)
    if verbose:
        print(f"lab down: {len(namespaces)} namespaces and {len(pids)} processes removed in {time.monotonic() - started:.1f} s")


def _remove_lab_dir(patience_s: float = 15.0) -> None:
    """Remove the lab's directory. A process that was ending as the tree was walked can still write a log line into
    it, so the walk is repeated until nothing is left; what is left after ``patience_s`` is named."""
    deadline = time.monotonic() + patience_s
    failures: list[str] = []

    def failed(_function, path, exc_info) -> None:
        failures.append(f"{path}: {exc_info[1]}")

    while LAB_DIR.exists():
        failures.clear()
        shutil.rmtree(LAB_DIR, onerror=failed)
        if not LAB_DIR.exists():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{LAB_DIR} could not be removed: {'; '.join(failures[:5]) or 'it keeps coming back'}")
        time.sleep(0.2)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _is_postmaster(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    except OSError:
        return False


# -- up -----------------------------------------------------------------------------------------------


def _mkdirs_on_host_fs(created: list[str]) -> None:
    for path in (*NODE_MOUNTS, "/run/sshd"):
        p = Path(path)
        if not p.exists():
            p.mkdir(parents=True, mode=0o755)
            created.append(path)


def _node_files(cfg: LabConfig) -> None:
    hosts_lines = ["127.0.0.1 localhost", f"{ROOT_ADDR} pe-ha-worker"]
    hosts_lines += [f"{h.address} {h.fqdn} {h.short}" for h in cfg.hosts]
    pki = LAB_DIR / "pki"
    for h in cfg.hosts:
        for m in NODE_MOUNTS:
            h.path(m).mkdir(parents=True, exist_ok=True)
        h.path("/root").chmod(0o700)
        h.path("/tmp").chmod(0o1777)
        h.path("/var/tmp").chmod(0o1777)
        h.path("/run/postgresql").chmod(0o2775)
        shutil.chown(h.path("/run/postgresql"), "postgres", "postgres")
        (h.tree / "etc_hosts").write_text("\n".join(hosts_lines) + "\n")
        (h.tree / "etc_hostname").write_text(h.fqdn + "\n")
        ssl = h.path("/etc/puppetlabs/puppet/ssl")
        for sub in ("certs", "private_keys"):
            (ssl / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(pki / "ca.pem", ssl / "certs" / "ca.pem")
        shutil.copy(pki / f"{h.fqdn}.pem", ssl / "certs" / f"{h.fqdn}.pem")
        shutil.copy(pki / f"{h.fqdn}.key", ssl / "private_keys" / f"{h.fqdn}.pem")
        (ssl / "private_keys" / f"{h.fqdn}.pem").chmod(0o600)
        conf = h.path("/etc/puppetlabs/puppet/puppet.conf")
        lines = ["[main]", f"certname = {h.fqdn}", f"server = {cfg.master.fqdn}"]
        conf.write_text("\n".join(lines) + "\n")
        if h.role == "agent":
            idx = int(h.short.removeprefix("agent"))
            region = "east" if idx % 2 else "west"
            h.path("/etc/puppetlabs/puppet/csr_attributes.yaml").write_text(
                f"---\nextension_requests:\n  pp_region: {region}\n  pp_datacenter: dc-{region}\n")
        sim = h.path("/opt/puppetlabs/sim")
        shutil.copytree(SIM_SRC, sim, ignore=shutil.ignore_patterns("__pycache__"))
        # What the simulated PuppetDB migrates an empty pe-puppetdb to (its version's schema, partitions around today)
        (sim / "puppetdb_schema.sql").write_text(pdbschema.schema_sql(cfg.profile))
        bindir = h.path("/opt/puppetlabs/bin")
        bindir.mkdir(parents=True, exist_ok=True)
        for tool in ("puppet", "puppet-access", "puppet-infrastructure", "pe-sim"):
            wrapper = bindir / tool
            wrapper.write_text(f"#!/bin/sh\n# PE CLI *simulator* (pe-ha lab), not Puppet Enterprise.\n"
                               f"exec /usr/bin/python3 /opt/puppetlabs/sim/pe_sim.py {tool} \"$@\"\n")
            wrapper.chmod(0o755)
        # Test hook (lab only): real scp, then flip one byte at the destination when the corrupt_transfer fault is set.
        (bindir / "scp").write_text("#!/bin/sh\n# pe-ha lab test hook around the real scp (simulator fault corrupt_transfer)\n"
                                    "/usr/bin/scp \"$@\" || exit $?\n"
                                    "exec /usr/bin/python3 /opt/puppetlabs/sim/pe_sim.py pe-sim scp-hook \"$@\"\n")
        (bindir / "scp").chmod(0o755)
        # The curl PE's agent package ships (/opt/puppetlabs/puppet/bin/curl): here the system's.
        agent_bin = h.path("/opt/puppetlabs/puppet/bin")
        agent_bin.mkdir(parents=True, exist_ok=True)
        (agent_bin / "curl").symlink_to("/usr/bin/curl")
        if h.has_postgres:
            sbin = h.path("/opt/puppetlabs/server/bin")
            sbin.mkdir(parents=True, exist_ok=True)
            # PE's server binaries are the profile's major; its client tools here are Debian's 15 (the
            # server builds have none), or the major's own where 15 cannot serve it (17), said in docs/simulator.md.
            apps = h.path(cfg.profile.pg_apps)
            apps.parent.mkdir(parents=True, exist_ok=True)
            apps.symlink_to(pgbuilds.installed(cfg.profile.pg_major) / "native")
            clients = pgbuilds.installed_clients(cfg.profile.pg_major) or PG_CLIENT_BIN
            for tool in ("psql", "pg_dump", "pg_restore", "createdb", "dropdb", "vacuumdb", "pg_isready"):
                (sbin / tool).symlink_to(f"{clients}/{tool}")
            for tool in ("pg_ctl", "initdb", "postgres"):
                (sbin / tool).symlink_to(f"{cfg.pg_bin}/{tool}")
        if h.has_postgres:  # PE server nodes only: an agent has no /opt/puppetlabs/server
            (h.path("/opt/puppetlabs/server") / "pe_version").parent.mkdir(parents=True, exist_ok=True)
            (h.path("/opt/puppetlabs/server") / "pe_version").write_text(cfg.profile.pe_version + "\n")
        log = h.path("/var/log/puppetlabs")
        for sub in ("postgresql", "sim"):
            (log / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(log / "postgresql", "postgres", "postgres")
        if h.role == "master":  # the secret keys PE keeps on the primary (profile's list; random for the lab)
            for key_file in cfg.profile.secret_key_files:
                path = h.path(key_file)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"pe-ha-lab-simulator": os.urandom(16).hex()}) + "\n")
                path.chmod(0o600)
            # pe.conf as PE's installer leaves it (Code Manager's key, when it has one, belongs here too)
            pe_conf = h.path("/etc/puppetlabs/enterprise/conf.d/pe.conf")
            pe_conf.parent.mkdir(parents=True, exist_ok=True)
            pe_conf.write_text('{\n  "console_admin_password": ""\n  "puppet_enterprise::puppet_master_host": '
                               '"%{::trusted.certname}"\n}\n')
            pe_conf.chmod(0o600)
            # PE's default Hiera config on the primary (not replicated: a new replica needs a copy)
            hiera = h.path("/etc/puppetlabs/puppet/hiera.yaml")
            hiera.write_text("---\n# pe-ha lab primary\nversion: 5\ndefaults:\n  datadir: data\n  data_hash: yaml_data\n"
                             "hierarchy:\n  - name: \"Per-node data\"\n    path: \"nodes/%{trusted.certname}.yaml\"\n"
                             "  - name: \"Common data\"\n    path: \"common.yaml\"\n")
            hiera.chmod(0o600)
        # The replica starts as a plain agent node: PE makes it a replica at provision time.
        (h.path("/root") / ".bashrc").write_text(f"export PATH={NODE_PATH}\n")
        state = {"certname": h.fqdn, "role": "master" if h.role == "master" else "agent", "master": cfg.master.fqdn, "replica": None,
                 "sync_seconds": cfg.sync_seconds, "agents": [a.fqdn for a in cfg.agent_hosts],
                 "lab_hosts": {x.fqdn: x.address for x in cfg.hosts},
                 "pe_profile": {"name": cfg.pe, "pe_version": cfg.profile.pe_version, "pg_data": cfg.profile.pg_data,
                                "partitioning": cfg.profile.partitioning,
                                "real_puppetdb": cfg.profile.real_puppetdb,
                                "infra_flags": cfg.profile.infra_flags,
                                "reinitialize_databases": list(cfg.profile.reinitialize_databases),
                                "secret_key_files": list(cfg.profile.secret_key_files)}}
        (sim / "state.json").write_text(json.dumps(state, indent=2))
    # Make the lab dir traversable by postgres (data dirs live below it).
    for p in [LAB_DIR, LAB_DIR / "nodes", *[h.tree for h in cfg.hosts]]:
        p.chmod(0o755)


def _network(cfg: LabConfig) -> None:
    sw = f"{PREFIX}-sw"
    sh("ip", "netns", "add", sw)
    sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", sw, "link", "set", "br0", "up")
    sh("ip", "-n", sw, "link", "set", "lo", "up")
    sh("ip", "link", "add", f"{PREFIX}0", "type", "veth", "peer", "name", "p-root", "netns", sw)
    sh("ip", "addr", "add", f"{ROOT_ADDR}/24", "dev", f"{PREFIX}0")
    sh("ip", "link", "set", f"{PREFIX}0", "up")
    sh("ip", "-n", sw, "link", "set", "p-root", "master", "br0", "up")
    for h in cfg.hosts:
        sh("ip", "netns", "add", h.netns)
        sh("ip", "link", "add", f"p-{h.short}", "netns", sw, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
        sh("ip", "-n", sw, "link", "set", f"p-{h.short}", "master", "br0", "up")
        sh("ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
        sh("ip", "-n", h.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", h.netns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", h.netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", check=False)


def _start_holder(h: Host) -> None:
    binds = [f"mount --bind {h.tree / m.strip('/').replace('/', '_')} {m}" for m in NODE_MOUNTS]
    binds[NODE_MOUNTS.index("/tmp")] = ""  # /tmp last, below
    file_binds = [f"mount --bind {h.tree / f.strip('/').replace('/', '_')} {f}" for f in NODE_FILE_MOUNTS]
    ready = h.tree / "ready"
    script = " && ".join(
        [f"hostname {h.fqdn}", *[b for b in binds if b], *file_binds,
         f"echo $$ > {ready}.tmp && mv {ready}.tmp {ready}",
         f"mount --bind {h.tree / 'tmp'} /tmp"])
    loop = "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done"
    cmd = ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--mount-proc",
           "--propagation", "private", "--", "bash", "-c", f"{script} && exec -a peha-init-{h.short} bash -c \"{loop}\""]
    subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=open(h.tree / "holder.log", "w"), stderr=subprocess.STDOUT)


def _wait_holders(cfg: LabConfig) -> None:
    deadline = time.monotonic() + 30
    for h in cfg.hosts:
        ready = h.tree / "ready"
        while not ready.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"lab host {h.short} did not start: {(h.tree / 'holder.log').read_text()}")
            time.sleep(0.02)
        # "$$" printed inside the pid namespace is 1; find the host PID of that init via the netns.
        pids = netns_pids(h.netns)
        init = None
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            nspid = [line for line in status.splitlines() if line.startswith("NSpid:")]
            if nspid and nspid[0].split()[-1] == "1":
                init = pid
        if init is None:
            raise RuntimeError(f"no init process found for {h.short}")
        (h.tree / "holder.pid").write_text(str(init))
    # give the final /tmp bind a moment
    time.sleep(0.05)


def _start_sshd(h: Host) -> None:
    sh(*nsenter(h, "/usr/sbin/sshd", "-E", "/var/log/puppetlabs/sshd.log"))


SECRETS = ("pg_superuser", "pg_service", "admin_password")


def up(cfg: LabConfig, verbose: bool = True, *, seed: Callable[[LabConfig], object] | None = None,
       snapshots: Path | None = None, spares: bool = True) -> dict:
    """Bring the lab up from nothing (stale state is cleared first). ``seed`` fills PostgreSQL once it runs.

    With ``snapshots`` (a directory the caller owns), the PostgreSQL data directories, as initialised and
    seeded, are kept there, per configuration, with the passwords they were made with; the next ``up`` of
    the same configuration starts from copies of them instead of initdb, roles, databases and the seed. With
    ``spares``, the next copies are made in the background as soon as this lab is up (a benchmark, whose
    runs start at once, does without)."""
    started = time.monotonic()
    down(verbose=False)
    snapshot = snapshots / _snapshot_key(cfg) if snapshots else None
    restore_from = snapshot if snapshot is not None and (snapshot / "ready").exists() else None
    created: list[str] = []
    LAB_DIR.mkdir(parents=True, mode=0o755)
    CREATED.write_text("[]")
    _mkdirs_on_host_fs(created)
    CREATED.write_text(json.dumps(created))
    secrets_dir = LAB_DIR / "secrets"
    secrets_dir.mkdir(mode=0o755)
    if restore_from is not None:
        secrets = {name: (restore_from / "secrets" / name).read_text().strip() for name in SECRETS}
    else:
        secrets = {name: os.urandom(12).hex() for name in SECRETS}
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value + "\n")
        (secrets_dir / name).chmod(0o644 if name == "pg_superuser" else 0o600)  # initdb reads it as postgres
    cfg.save()
    from lab import keys, pgnode

    keys.pki(cfg)
    keys.ssh_keys(cfg)
    _node_files(cfg)
    pg_hosts = [h for h in cfg.hosts if h.has_postgres]
    with ThreadPoolExecutor(2) as pool:
        if restore_from is not None:
            initdbs = [pool.submit(pgnode.restore_data, cfg, h, restore_from) for h in pg_hosts]
        else:
            initdbs = [pool.submit(pgnode.initdb, cfg, h) for h in pg_hosts]
        _network(cfg)
        for h in cfg.hosts:
            _start_holder(h)
        _wait_holders(cfg)
        for f in initdbs:
            f.result()
    (secrets_dir / "pg_superuser").chmod(0o600)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(_start_sshd, cfg.hosts))
        list(pool.map(lambda h: pgnode.start_postgres(cfg, h, secrets, create=restore_from is None), pg_hosts))
    if restore_from is None:
        if seed is not None:
            seed(cfg)
        if snapshot is not None:
            _take_snapshot(cfg, pg_hosts, snapshot, secrets)
    if snapshot is not None and spares:
        _copy_spares(cfg, pg_hosts, snapshot)
    from lab import tokens

    tokens.issue_admin_token(cfg, lifetime_s=4 * 3600)
    # The master starts out as a standalone monolithic PE master (simulated).
    node_run(cfg.master, "pe-sim", "lab-init-master")
    elapsed = time.monotonic() - started
    if verbose:
        print(f"lab up: {len(cfg.hosts)} hosts in {elapsed:.1f} s "
              f"({', '.join(f'{h.short}={h.address}' for h in cfg.hosts)})")
    write_env_file(cfg)
    return {"seconds": elapsed}


def _snapshot_key(cfg: LabConfig) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _take_snapshot(cfg: LabConfig, pg_hosts: list[Host], snapshot: Path, secrets: dict[str, str]) -> None:
    """Stop PostgreSQL cleanly, copy its data directories into ``snapshot``, start it again."""
    from lab import pgnode

    shutil.rmtree(snapshot, ignore_errors=True)
    (snapshot / "secrets").mkdir(parents=True, mode=0o700)
    for h in pg_hosts:
        pgnode.stop_postgres(cfg, h)
        sh("cp", "-a", str(h.path(cfg.profile.pg_data)), str(snapshot / h.short))
        pgnode.start_postgres(cfg, h, secrets, create=False)
    for name, value in secrets.items():
        (snapshot / "secrets" / name).write_text(value + "\n")
        (snapshot / "secrets" / name).chmod(0o600)
    (snapshot / "ready").touch()


def _copy_spares(cfg: LabConfig, pg_hosts: list[Host], snapshot: Path) -> None:
    """Copies of the snapshot for the next up, made in the background while this lab is in use: the next up
    moves them into place. A spare appears whole or not at all (copied under another name, then renamed)."""
    spares = snapshot / "spare"
    spares.mkdir(exist_ok=True)
    for h in pg_hosts:
        spare, copying = spares / h.short, spares / f"{h.short}.copying"
        if spare.exists() or copying.exists():
            continue
        copying.touch()
        subprocess.Popen(["sh", "-c", 'rm -rf "$2.tmp" && cp -a "$1" "$2.tmp" && mv "$2.tmp" "$2"; rm -f "$3"', "sh",
                          str(snapshot / h.short), str(spare), str(copying)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)


def write_env_file(cfg: LabConfig) -> Path:
    """Settings for pe-ha pointing at the lab (PEHA_* variables)."""
    def host(h: Host) -> dict:
        return {"name": h.fqdn, "address": h.address, "port": 22, "user": "root"}

    env = {
        "PEHA_INSTALLATION": "lab",
        "PEHA_MASTER": json.dumps(host(cfg.master)),
        "PEHA_REPLICA": json.dumps(host(cfg.replica)),
        "PEHA_MANAGED_NODES": json.dumps([host(h) for h in cfg.agent_hosts]),
        "PEHA_SSH_KEY_FILE": str(LAB_DIR / "ssh" / "id_ed25519"),
        "PEHA_SSH_KNOWN_HOSTS_FILE": str(LAB_DIR / "ssh" / "known_hosts"),
        "PEHA_SSH_CONNECT_TIMEOUT_S": "3",
        "PEHA_RBAC_TOKEN_FILE": str(LAB_DIR / "secrets" / "token"),
        "PEHA_CA_CERT": str(LAB_DIR / "pki" / "ca.pem"),
        "PEHA_CLIENT_CERT": str(LAB_DIR / "pki" / "pe-ha-worker.pem"),
        "PEHA_CLIENT_KEY": str(LAB_DIR / "pki" / "pe-ha-worker.key"),
        "PEHA_HTTP_CONNECT_TIMEOUT_S": "2",
        "PEHA_PG_OS_USER": "postgres",
    }
    path = LAB_DIR / "peha.env"
    path.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
    return path


def lab_env() -> dict[str, str]:
    """The PEHA_* variables for the running lab."""
    out: dict[str, str] = {}
    for line in (LAB_DIR / "peha.env").read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v.strip("'")
    return out


# -- outages ------------------------------------------------------------------------------------------


def pin_cpus(host: Host, cpus: str) -> int:
    """Pin every process of ``host`` (its sshd, PostgreSQL, services) to ``cpus`` (``taskset`` list syntax, e.g.
    ``0`` or ``0-1``); returns how many were pinned. Children forked later (an SSH session's pg_dump, a backend)
    inherit it, so one host behaves as a machine with those cores; ``nproc`` there counts them."""
    pids = netns_pids(host.netns)
    pinned = 0
    for pid in pids:
        # A process may end between the listing and the pinning; the rest are still pinned.
        if sh("taskset", "-a", "-c", "-p", cpus, str(pid), check=False).returncode == 0:
            pinned += 1
    return pinned


def cpu_models(cpu_count: int) -> dict[str, dict[str, str]]:
    """The benchmark's CPU models: ``shared`` (every host on every core, today's one-machine lab) and ``split``
    (the master on the first half of the cores, the replica on the second, as two machines would be)."""
    every = "0" if cpu_count == 1 else f"0-{cpu_count - 1}"
    if cpu_count < 2:
        return {"shared": {"master": every, "replica": every}}  # one core cannot be split
    half = cpu_count // 2
    first = "0" if half == 1 else f"0-{half - 1}"
    second = str(half) if cpu_count - half == 1 else f"{half}-{cpu_count - 1}"
    return {"shared": {"master": every, "replica": every}, "split": {"master": first, "replica": second}}


def outage(host: Host, mode: str, rate: str = "100mbit") -> str:
    """drop | reject | restore | slow | fast: cut a host off (inside its own netns only), or limit its link."""
    ns = ["ip", "netns", "exec", host.netns]
    if mode in ("drop", "reject"):
        sh(*ns, "iptables", "-N", "PEHA-OUTAGE", check=False)
        sh(*ns, "iptables", "-F", "PEHA-OUTAGE")
        if mode == "drop":
            sh(*ns, "iptables", "-A", "PEHA-OUTAGE", "-j", "DROP")
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                if sh(*ns, "iptables", "-C", chain, flag, "eth0", "-j", "PEHA-OUTAGE", check=False).returncode:
                    sh(*ns, "iptables", "-I", chain, flag, "eth0", "-j", "PEHA-OUTAGE")
        else:
            sh(*ns, "iptables", "-A", "PEHA-OUTAGE", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
            sh(*ns, "iptables", "-A", "PEHA-OUTAGE", "-j", "REJECT")
            if sh(*ns, "iptables", "-C", "INPUT", "-i", "eth0", "-j", "PEHA-OUTAGE", check=False).returncode:
                sh(*ns, "iptables", "-I", "INPUT", "-i", "eth0", "-j", "PEHA-OUTAGE")
        return f"{host.short}: cut off ({mode})"
    if mode == "restore":
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            while sh(*ns, "iptables", "-D", chain, flag, "eth0", "-j", "PEHA-OUTAGE", check=False).returncode == 0:
                pass
        sh(*ns, "iptables", "-F", "PEHA-OUTAGE", check=False)
        sh(*ns, "iptables", "-X", "PEHA-OUTAGE", check=False)
        return f"{host.short}: restored"
    if mode == "slow":
        sh("tc", "-n", host.netns, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
           "burst", "256kb", "latency", "50ms")
        return f"{host.short}: link limited to {rate}"
    if mode == "fast":
        sh("tc", "-n", host.netns, "qdisc", "del", "dev", "eth0", "root", check=False)
        return f"{host.short}: link unlimited"
    raise ValueError(f"unknown outage mode {mode!r}")


def is_cut_off(host: Host) -> bool:
    out = sh("ip", "netns", "exec", host.netns, "iptables", "-S", "INPUT", check=False).stdout
    return "PEHA-OUTAGE" in out


def status(cfg: LabConfig) -> list[dict]:
    rows = []
    namespaces = set(lab_netns())
    for h in cfg.hosts:
        row = {"host": h.fqdn, "address": h.address, "role": h.role, "up": h.netns in namespaces}
        if row["up"]:
            row["cut_off"] = is_cut_off(h)
            row["processes"] = len(netns_pids(h.netns))
            try:
                state = json.loads(h.path("/opt/puppetlabs/sim/state.json").read_text())
                row["sim_role"] = state.get("role")
            except (OSError, ValueError):
                pass
        rows.append(row)
    return rows
