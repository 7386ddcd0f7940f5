"""pe-ha lab simulator (not PE): The simulator's shared ground: paths, state and faults, puppet.conf, option parsing, and the HTTPS and ssh clients it uses between hosts."""

import fcntl
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SIM = "/opt/puppetlabs/sim"


STATE = SIM + "/state.json"


FAULTS = SIM + "/faults.json"


RUN = SIM + "/run"


LOG = "/var/log/puppetlabs/sim"


CONSOLE = "/etc/puppetlabs/console-services"


TOKENS = CONSOLE + "/rbac-tokens.json"


GROUPS = CONSOLE + "/groups.json"


PUPPET_CONF = "/etc/puppetlabs/puppet/puppet.conf"


SSLDIR = "/etc/puppetlabs/puppet/ssl"


LOCKFILE = "/opt/puppetlabs/puppet/cache/state/agent_catalog_run.lock"
# Puppet 7's default ``lastrunfile`` ($publicdir/last_run_summary.yaml); Puppet 6 kept it under cache/state.
LASTRUNFILE = "/opt/puppetlabs/puppet/public/last_run_summary.yaml"


PDB_SCHEMA = SIM + "/puppetdb_schema.sql"


VERSION = "2019.8.12 (pe-ha simulator)"


ROOT_GROUP = "00000000-0000-4000-8000-000000000000"


PE_DATABASES = ("pe-activity", "pe-classifier", "pe-orchestrator", "pe-rbac")


SERVICES = {
    "pe-puppetserver": (8140, 8170),
    "pe-puppetdb": (8081,),
    "pe-console-services": (4433,),
    "pe-orchestration-services": (8143, 8142),
}


ROLE_SERVICES = {
    "master": ("pe-puppetserver", "pe-puppetdb", "pe-console-services", "pe-orchestration-services"),
    "replica": ("pe-puppetserver", "pe-puppetdb", "pe-console-services"),
    "agent": (),
}


# (status key, display name, port its status is read on, the row's URL as "scheme://%s:port/path", master-only,
# the JSON status's `type`). URLs and types follow PE's verified capture (contract sample
# infra-status-json-replica-unreachable.json): Code Manager is shown on 8170 though its status is read on 8140
# (PE's status API docs), both PCP brokers are `broker-service` shown on wss://…:8142, whose status is one
# service on 8143 (SOURCES.md "Status API facts"), and `type` is the service's kind, not the server's role.
STATUS_ENTRIES = [
    ("code-manager-service", "Code Manager", 8140, "https://%s:8170/", True, "code-manager"),
    ("file-sync-storage-service", "File Sync Storage Service", 8140, "https://%s:8140/", True, "file-sync-storage"),
    ("file-sync-client-service", "File Sync Client Service", 8140, "https://%s:8140/", False, "file-sync-client"),
    ("pe-master", "Puppet Server", 8140, "https://%s:8140/", False, "master"),
    ("classifier-service", "Classifier", 4433, "https://%s:4433/classifier-api", False, "classifier"),
    ("rbac-service", "RBAC", 4433, "https://%s:4433/rbac-api", False, "rbac"),
    ("activity-service", "Activity Service", 4433, "https://%s:4433/activity-api", False, "activity"),
    ("orchestrator-service", "Orchestrator", 8143, "https://%s:8143/orchestrator", True, "orchestrator"),
    ("broker-service", "PCP Broker", 8143, "wss://%s:8142/pcp", True, "pcp-broker"),
    ("broker-service", "PCP Broker v2", 8143, "wss://%s:8142/pcp2", True, "pcp-broker"),
    ("puppetdb-status", "PuppetDB", 8081, "https://%s:8081/pdb", False, "puppetdb"),
]


PORT_KEYS = {}


for _k, _d, _p, _u, _m, _t in STATUS_ENTRIES:
    if (_k, _m) not in PORT_KEYS.get(_p, []):
        PORT_KEYS.setdefault(_p, []).append((_k, _m))


class SimError(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write_json(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class StateLock:
    def __enter__(self):
        os.makedirs(RUN, exist_ok=True)
        self.f = open(RUN + "/state.lock", "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def state():
    return _read_json(STATE, {})


def update_state(**changes):
    with StateLock():
        s = state()
        s.update(changes)
        _write_json(STATE, s)
        return s


def pe_profile():
    """The lab's PE profile (lab/profiles.py): version, PostgreSQL data dir, the flags this PE version has."""
    return state().get("pe_profile") or {}


def pg_data():
    return pe_profile().get("pg_data", "/opt/puppetlabs/server/data/postgresql/11/data")


def check_infra_flags(sub, args):
    """Refuse a flag this PE version's `puppet infrastructure <sub>` does not have, as that version would."""
    known = (pe_profile().get("infra_flags") or {}).get(sub)
    if known is None:
        return
    for a in args:
        if a.startswith("-") and a.split("=", 1)[0] not in known:
            raise SimError("Error: Unknown option '%s' for `puppet infrastructure %s` (PE %s)."
                           % (a.split("=", 1)[0], sub, pe_profile().get("pe_version", "?")))


def faults():
    return _read_json(FAULTS, {})


def fault_active(name):
    value = faults().get(name)
    if value is None or value is False:
        return False
    if isinstance(value, dict) and "until" in value:
        return time.time() < value["until"]
    return True


def log(message):
    os.makedirs(LOG, exist_ok=True)
    with open(LOG + "/sim.log", "a") as f:
        f.write("%s [%d] %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), message))


def certname():
    return conf_get("certname") or socket.getfqdn()


def _conf_lines():
    try:
        with open(PUPPET_CONF) as f:
            return f.read().splitlines()
    except OSError:
        return []


def conf_get(key, section="main"):
    current = None
    value = None
    for line in _conf_lines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1]
        elif "=" in s and not s.startswith("#"):
            k, _, v = s.partition("=")
            if k.strip() == key and current in (section, "main"):
                if current == section or value is None:
                    value = v.strip()
    return value


def conf_set(key, value, section="main"):
    lines = _conf_lines()
    out, current, done, seen = [], None, False, False
    for line in lines:
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            if current == section and not done:
                out.append("%s = %s" % (key, value))
                done = True
            current = s[1:-1]
            seen = seen or current == section
        elif current == section and "=" in s and s.partition("=")[0].strip() == key:
            if not done:
                out.append("%s = %s" % (key, value))
                done = True
            continue
        out.append(line)
    if not done:
        if not seen:
            out.append("[%s]" % section)
        out.append("%s = %s" % (key, value))
    with open(PUPPET_CONF + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(PUPPET_CONF + ".tmp", PUPPET_CONF)


def conf_delete(key, section="main"):
    lines, out, current, removed = _conf_lines(), [], None, False
    for line in lines:
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1]
        elif current == section and "=" in s and s.partition("=")[0].strip() == key:
            removed = True
            continue
        out.append(line)
    with open(PUPPET_CONF + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(PUPPET_CONF + ".tmp", PUPPET_CONF)
    return removed


def trusted_facts():
    """Puppet's ``$trusted`` shape: the certname, and the certificate's extensions (the lab reads them from
    csr_attributes.yaml's extension_requests, which its CA copies into the certificate)."""
    extensions = {}
    try:
        with open("/etc/puppetlabs/puppet/csr_attributes.yaml") as f:
            for line in f:
                if ":" in line and line.startswith("  "):
                    k, _, v = line.strip().partition(":")
                    extensions[k.strip()] = v.strip()
    except OSError:
        pass
    return {"certname": certname(), "extensions": extensions}


def ssl_client_context():
    ctx = ssl.create_default_context(cafile=SSLDIR + "/certs/ca.pem")
    name = certname()
    ctx.load_cert_chain(SSLDIR + "/certs/%s.pem" % name, SSLDIR + "/private_keys/%s.pem" % name)
    return ctx


def https(method, host, port, path, body=None, token=None, timeout=3.0):
    """(status, parsed body or text). Raises OSError on connect failure."""
    url = "https://%s:%d%s" % (host, port, path)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Authentication", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ssl_client_context()) as resp:
            raw = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw = e.read().decode()
        status = e.code
    except urllib.error.URLError as e:
        raise OSError(str(e.reason)) from None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def reachable(host, port, timeout=2.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def ssh(host, command, timeout=None, input_bytes=None):
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=4", host, command]
    return subprocess.run(argv, capture_output=True, input=input_bytes, timeout=timeout)


def option(args, name, default=None):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def options(args, name):
    out = []
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith(name + "="):
            out.append(a.split("=", 1)[1])
    return out


def flag(args, *names):
    return any(a in names for a in args)


def require_root_session():
    """PE: `sudo puppet infrastructure` is not sufficient; a root session (sudo su -) is needed."""
    if os.geteuid() != 0:
        raise SimError("Error: puppet infrastructure commands must be run as root.")
    if os.environ.get("SUDO_USER") or os.environ.get("HOME") != "/root" or os.environ.get("USER") != "root":
        raise SimError("Error: puppet infrastructure must be run from a root session (e.g. `sudo su -`); "
                       "running with `sudo puppet infrastructure` is not sufficient (HOME/USER are not root's).")


def confirm(args, question):
    if flag(args, "--yes", "-y"):
        return
    if not sys.stdin.isatty():
        raise SimError("Error: %s [y/N] cannot be answered: no terminal. Pass --yes to answer the prompts." % question)
    answer = input(question + " [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise SimError("Aborted.")


def slow_fault(name):
    """Fault switches: a slow command, and a command that fails once."""
    f = faults()
    if f.get("slow_command") in (name, "*"):
        time.sleep(float(f.get("slow_seconds", 30)))
    if f.get("fail_once") == name:
        with StateLock():
            ff = faults()
            ff.pop("fail_once", None)
            _write_json(FAULTS, ff)
        raise SimError("Error: %s failed (simulated transient failure; re-run)" % name)


def role():
    return state().get("role", "agent")


def peer_host():
    s = state()
    if s.get("role") == "master" and s.get("replica"):
        return s["replica"]
    if s.get("role") == "replica" and s.get("provisioned"):
        return s.get("master")
    return None


def my_address():
    s = state()
    return s.get("lab_hosts", {}).get(certname(), "127.0.0.1")


def psql(sql, host=None, user="pe-puppetdb", db="pe-puppetdb", input_text=None, timeout=60, script=False):
    argv = ["/opt/puppetlabs/server/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", host or my_address(), "-U", user, "-d", db]
    argv += ["-f", sql] if script else ["-c", sql]
    env = dict(os.environ, PGCONNECT_TIMEOUT="3", PGPASSFILE="/root/.pgpass")
    r = subprocess.run(argv, capture_output=True, text=True, input=input_text, timeout=timeout, env=env)
    if r.returncode:
        raise SimError("psql failed: %s" % r.stderr.strip())
    return r.stdout


def known_host(name):
    if name not in state().get("lab_hosts", {}):
        raise SimError("Error: Could not find node %s (no certificate or not reachable)" % name)


def _write_json_text(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


class Route:
    """One HTTPS route of a simulated service: ``answer(port, path, body)`` returns (code, body[, content type]).
    ``prefix`` matches every path under ``path``; ``auth`` asks for an RBAC token or a lab client certificate."""

    def __init__(self, method, port, path, answer, prefix=False, auth=False):
        self.method, self.port, self.path, self.answer, self.prefix, self.auth = method, port, path, answer, prefix, auth

    def matches(self, path):
        return path.startswith(self.path) if self.prefix else path == self.path
