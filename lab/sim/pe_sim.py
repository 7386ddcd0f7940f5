#!/usr/bin/python3
"""pe-ha lab: a SIMULATOR of Puppet Enterprise's CLI tools and HTTPS services. It is not PE.

Runs on each lab host with Debian's /usr/bin/python3 (stdlib only). Entry points (by argv[1]):
  puppet infrastructure|resource|agent|job|config ...   the simulated PE CLI
  puppet-access login|show                               simulated RBAC token tool
  pe-sim service <name>                                  a simulated PE service daemon (HTTPS)
  pe-sim <admin command>                                 lab-internal helpers (called by the lab or peers)
Behaviour follows PE's documentation; docs/simulator.md lists each behaviour beside the PE fact.
"""

import fcntl
import hashlib
import http.server
import json
import os
import shlex
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
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
# (status key, display name, port, url path, master-only)
STATUS_ENTRIES = [
    ("code-manager-service", "Code Manager", 8140, "/", True),  # PE's status API docs: Code Manager on 8140
    ("file-sync-storage-service", "File Sync Storage Service", 8140, "/", True),
    ("file-sync-client-service", "File Sync Client Service", 8140, "/", False),
    ("pe-master", "Puppet Server", 8140, "/", False),
    ("classifier-service", "Classifier", 4433, "/classifier-api", False),
    ("rbac-service", "RBAC", 4433, "/rbac-api", False),
    ("activity-service", "Activity Service", 4433, "/activity-api", False),
    ("orchestrator-service", "Orchestrator", 8143, "/orchestrator", True),
    ("broker-service", "PCP Broker", 8143, "/pcp", True),
    ("broker-service-v2", "PCP Broker v2", 8143, "/pcp2", True),
    ("puppetdb-status", "PuppetDB", 8081, "/pdb", False),
]
PORT_KEYS = {}
for _k, _d, _p, _u, _m in STATUS_ENTRIES:
    PORT_KEYS.setdefault(_p, []).append((_k, _m))


class SimError(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# -- state ------------------------------------------------------------------------------------------


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


# -- puppet.conf --------------------------------------------------------------------------------------


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
    facts = {"certname": certname()}
    try:
        with open("/etc/puppetlabs/puppet/csr_attributes.yaml") as f:
            for line in f:
                if ":" in line and line.startswith("  "):
                    k, _, v = line.strip().partition(":")
                    facts[k.strip()] = v.strip()
    except OSError:
        pass
    return facts


# -- TLS and HTTP client ------------------------------------------------------------------------------


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


# -- RBAC tokens --------------------------------------------------------------------------------------


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def token_info(token, entry):
    """The body of POST /rbac-api/v2/auth/token/authenticate, keyed as PE documents it (contract sample
    rbac-authenticate-200.json: ``expiration`` is ISO 8601, there is no numeric expiry)."""
    user_id = "42bf351c-f9ec-40af-84ad-e976fec7f4bd"
    issued = entry.get("issued", entry["expires"] - 3600)
    return {"description": None, "creation": _iso(issued), "email": "admin@%s" % certname(), "is_revoked": False,
            "last_active": _iso(time.time()), "last_login": _iso(issued), "expiration": _iso(entry["expires"]),
            "is_remote": False, "client": None, "login": entry["user"], "is_superuser": True,
            "label": None, "id": hashlib.sha256(token.encode()).hexdigest()[:36], "role_ids": [1],
            "user_id": user_id, "timeout": None, "display_name": "Administrator", "is_group": False}


def token_problem(token):
    """None when the token is valid, else (http status, kind, message)."""
    if not token:
        return 401, "puppetlabs.rbac/user-unauthenticated", "Route requires authentication"
    entry = _read_json(TOKENS, {}).get(hashlib.sha256(token.encode()).hexdigest())
    if entry is None:
        return 401, "puppetlabs.rbac/token-revoked", "The provided token has been revoked."
    if time.time() >= entry["expires"]:
        return 401, "puppetlabs.rbac/token-expired", "The provided token has expired."
    return None


def read_token_file(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


# Set while the enable_ha_failover plan runs: from PE 2019.3 its inner steps authenticate with the primary's
# certificate and read no token (2019.3 release notes; SOURCES.md CLI table).
PLAN_CERT_AUTH = {"on": False}


def require_token(args):
    """The CLI's check: authenticate the token against the master's RBAC (over HTTPS, for real)."""
    if PLAN_CERT_AUTH["on"]:
        return
    path = option(args, "--token-file") or os.path.expanduser("~/.puppetlabs/token")
    token = read_token_file(path)
    if not token:
        raise SimError("Error: No token found at %s. Run `puppet-access login` first, or pass --token-file." % path)
    master = state().get("master")
    try:
        status, body = https("POST", master, 4433, "/rbac-api/v2/auth/token/authenticate", {"token": token})
    except OSError as e:
        raise SimError("Error: Could not connect to RBAC service on %s:4433: %s" % (master, e))
    if status != 200:
        kind = body.get("kind") if isinstance(body, dict) else "unknown"
        msg = body.get("msg") if isinstance(body, dict) else str(body)
        raise SimError("Error: RBAC token rejected (HTTP %d, %s): %s" % (status, kind, msg))
    return token


# -- CLI helpers --------------------------------------------------------------------------------------


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


# -- simulated services ---------------------------------------------------------------------------------


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


def local_db_up():
    return reachable(my_address(), 5432, timeout=1.0)


def replication_status():
    s = state()
    if s.get("role") == "master" and s.get("replica"):
        ok = reachable(s["replica"], 5432, timeout=1.0)
        return {"mode": "source", "status": "active" if ok else "inactive"}
    if s.get("role") == "replica" and s.get("provisioned"):
        ok = reachable(s["master"], 5432, timeout=1.0)
        return {"mode": "replica", "status": "running" if ok else "down"}
    return {"mode": "none", "status": "none"}


def service_status(key):
    s = state()
    now = time.time()
    st, alerts, detail = "running", [], {}
    if key == "puppetdb-status":
        starting = now < s.get("puppetdb_sync_until", 0) or fault_active("puppetdb_stuck_starting")
        db = local_db_up()
        st = "starting" if starting else ("running" if db else "error")
        # PuppetDB's own keys (contract sample status-services-503-puppetdb-down.json)
        detail = {"maintenance_mode?": starting, "read_db_up?": db, "write_db_up?": db, "write_dbs_up?": db,
                  "write_db": {"default": {"up?": db}}, "queue_depth": 0, "rbac_status": "running",
                  "sync_status": {"state": "syncing" if starting else "idle",
                                  "last_successful_sync_time": s.get("last_pdb_sync")}}
    elif key in ("classifier-service", "rbac-service", "activity-service", "orchestrator-service"):
        rep = replication_status()
        detail = {"db_up": local_db_up(), "replication": rep}
        name = {"classifier-service": "Classifier", "rbac-service": "RBAC", "activity-service": "Activity",
                "orchestrator-service": "Orchestrator"}[key]
        if rep["status"] in ("inactive", "down"):
            verb = "is inactive" if rep["status"] == "inactive" else "is currently down"
            alerts.append({"severity": "error", "message": "Database replication for %s %s." % (name, verb)})
        if not detail["db_up"]:
            st = "error"
    return {"service_version": VERSION, "service_status_version": 1, "detail_level": "info", "state": st,
            "status": detail, "active_alerts": alerts}


def port_statuses(port):
    r = role()
    out = {}
    for key, master_only in PORT_KEYS.get(port, []):
        if master_only and r != "master":
            continue
        out[key] = service_status(key)
    if port == 8142:
        out["broker-service"] = service_status("broker-service")
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pe-sim/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log("%s:%d %s" % (self.client_address[0], self.server.server_address[1], fmt % args))

    def _send(self, code, body, content_type="application/json"):
        raw = (json.dumps(body) if content_type == "application/json" else str(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _auth(self):
        """Console APIs take an RBAC token, or a client certificate from the lab CA (like PE's whitelist)."""
        token = self.headers.get("X-Authentication")
        if token:
            problem = token_problem(token)
            if problem:
                self._send(problem[0], {"kind": problem[1], "msg": problem[2]})
                return False
            return True
        if self.connection.getpeercert():
            return True
        self._send(401, {"kind": "puppetlabs.rbac/user-unauthenticated", "msg": "Route requires authentication"})
        return False

    def do_GET(self):
        port = self.server.server_address[1]
        url = urllib.parse.urlparse(self.path)
        if url.path == "/status/v1/services":
            statuses = port_statuses(port)
            code = 200 if all(v["state"] == "running" for v in statuses.values()) else 503
            return self._send(code, statuses)
        if url.path.startswith("/status/v1/services/"):
            key = url.path.rsplit("/", 1)[1]
            statuses = port_statuses(port)
            if key not in statuses:  # trapperkeeper-status's 404 (contract sample status-service-404-not-found.json)
                return self._send(404, {"kind": "service-not-found", "msg": "No status information found for service %s" % key})
            # a single service's body is flat and names the service (trapperkeeper-status build-json-routes)
            return self._send(200 if statuses[key]["state"] == "running" else 503,
                              dict(statuses[key], service_name=key))
        if url.path.startswith("/status/v1/simple"):
            statuses = port_statuses(port)
            key = url.path[len("/status/v1/simple"):].strip("/")
            states = [v["state"] for k, v in statuses.items() if not key or k == key or key == "master"]
            if not states:
                return self._send(404, "not found: %s" % key, "text/plain")
            worst = "running" if all(x == "running" for x in states) else next(x for x in states if x != "running")
            return self._send(200 if worst == "running" else 503, worst, "text/plain")
        if port == 4433 and url.path == "/classifier-api/v1/groups":
            if not self._auth():
                return
            return self._send(200, _read_json(GROUPS, []))
        if port == 8081 and url.path == "/pdb/query/v4/nodes":
            return self._send(200, pdb_nodes())
        self._send(404, {"kind": "not-found", "msg": "no route %s" % url.path})

    def do_POST(self):
        port = self.server.server_address[1]
        url = urllib.parse.urlparse(self.path)
        body = self._body()
        if port == 4433 and url.path == "/rbac-api/v2/auth/token/authenticate":
            token = (body or {}).get("token")
            problem = token_problem(token)
            if problem:
                return self._send(problem[0], {"kind": problem[1], "msg": problem[2]})
            entry = _read_json(TOKENS, {})[hashlib.sha256(token.encode()).hexdigest()]
            return self._send(200, token_info(token, entry))
        if port == 4433 and url.path == "/rbac-api/v1/auth/token":
            return self._send(200, issue_token(body or {}))
        if port == 4433 and url.path.startswith("/classifier-api/v1/"):
            if not self._auth():
                return
            if role() != "master":
                return self._send(503, {"kind": "read-only", "msg": "classifier on a replica is read-only"})
            if url.path == "/classifier-api/v1/import-hierarchy":
                if not isinstance(body, list) or not any(g.get("id") == ROOT_GROUP for g in body):
                    return self._send(400, {"kind": "schema-violation", "msg": "hierarchy must contain the root group"})
                save_groups(body)
                return self._send(204, "", "text/plain")
            if url.path == "/classifier-api/v1/groups":
                group = upsert_group(body or {}, None)
                return self._send(303 if group is None else 200, group or {})
            gid = url.path.rsplit("/", 1)[1]
            group = upsert_group(body or {}, gid)
            if group is None:
                return self._send(404, {"kind": "not-found", "msg": gid})
            return self._send(200, group)
        if port == 8140 and url.path == "/sim/v1/catalog":
            return self._send(200, compile_catalog(body or {}))
        if port == 8081 and url.path == "/pdb/cmd/v1":
            store_report(body or {})
            return self._send(200, {"uuid": hashlib.md5(json.dumps(body).encode()).hexdigest()})
        self._send(404, {"kind": "not-found", "msg": "no route %s" % url.path})


class TLSServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, ctx):
        self.ctx = ctx
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        try:
            return self.ctx.wrap_socket(sock, server_side=True), addr
        except (ssl.SSLError, OSError):
            sock.close()
            raise


def run_service(name):
    """A simulated PE service: HTTPS on its ports, bound to this host's address."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=SSLDIR + "/certs/ca.pem")
    me = certname()
    ctx.load_cert_chain(SSLDIR + "/certs/%s.pem" % me, SSLDIR + "/private_keys/%s.pem" % me)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    servers = []
    for port in SERVICES[name]:
        srv = TLSServer((my_address(), port), ctx)
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    log("service %s listening on %s" % (name, SERVICES[name]))
    if name == "pe-puppetdb":
        threading.Thread(target=pdb_sync_loop, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    while not stop.wait(1):
        pass
    for srv in servers:
        srv.shutdown()


def _pidfile(name):
    return "%s/%s.pid" % (RUN, name)


def service_pid(name):
    try:
        pid = int(open(_pidfile(name)).read())
        os.kill(pid, 0)
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"pe_sim.py" not in f.read():
                return None
        return pid
    except (OSError, ValueError):
        return None


def service_running(name):
    if name == "puppet":
        return state().get("puppet_service", "running") == "running"
    if name == "pe-postgresql":
        return local_db_up()
    return service_pid(name) is not None


def start_service(name):
    if service_running(name):
        return False
    if name == "puppet":
        update_state(puppet_service="running")
        return True
    if name == "pe-postgresql":
        subprocess.run(["runuser", "-u", "postgres", "--", "/opt/puppetlabs/server/bin/pg_ctl", "-D",
                        pg_data(), "-l",
                        "/var/log/puppetlabs/postgresql/postgresql.log", "-w", "start"], check=True,
                       capture_output=True)
        return True
    os.makedirs(RUN, exist_ok=True)
    os.makedirs(LOG, exist_ok=True)
    out = open("%s/%s.log" % (LOG, name), "a")
    proc = subprocess.Popen(["/usr/bin/python3", SIM + "/pe_sim.py", "pe-sim", "service", name],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    with open(_pidfile(name), "w") as f:
        f.write(str(proc.pid))
    ports = SERVICES[name]
    deadline = time.time() + 15
    while time.time() < deadline:
        if all(reachable(my_address(), p, 0.5) for p in ports):
            return True
        if proc.poll() is not None:
            raise SimError("Error: %s failed to start (see %s/%s.log)" % (name, LOG, name))
        time.sleep(0.05)
    raise SimError("Error: %s did not start listening within 15 s" % name)


def stop_service(name):
    if not service_running(name):
        return False
    if name == "puppet":
        update_state(puppet_service="stopped")
        return True
    if name == "pe-postgresql":
        subprocess.run(["runuser", "-u", "postgres", "--", "/opt/puppetlabs/server/bin/pg_ctl", "-D",
                        pg_data(), "-m", "fast", "-w", "stop"],
                       check=True, capture_output=True)
        return True
    pid = service_pid(name)
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while time.time() < deadline and service_pid(name):
        time.sleep(0.05)
    if service_pid(name):
        os.kill(pid, signal.SIGKILL)
    try:
        os.unlink(_pidfile(name))
    except OSError:
        pass
    return True


def ensure_role_services():
    for name in ROLE_SERVICES.get(role(), ()):
        start_service(name)


# -- classifier -----------------------------------------------------------------------------------------


def _group(name, gid, parent, classes=None, rule=None, description=""):
    return {"name": name, "id": gid, "description": description, "environment": "production",
            "environment_trumps": False, "parent": parent, "rule": rule, "classes": classes or {},
            "config_data": {}, "deleted": {}, "variables": {}, "serial_number": 1}


def default_groups(master):
    ids = {n: "%08x-0000-4000-8000-%012x" % (i + 1, i + 1) for i, n in enumerate(
        ["PE Infrastructure", "PE Master", "PE Agent", "PE Infrastructure Agent", "PE Database", "PE Console",
         "PE Orchestrator", "PE Certificate Authority"])}
    pin = ["or", ["=", "name", master]]
    return [
        _group("All Nodes", ROOT_GROUP, ROOT_GROUP, rule=["and", ["~", "name", ".*"]]),
        _group("PE Infrastructure", ids["PE Infrastructure"], ROOT_GROUP,
               {"puppet_enterprise": {"puppet_master_host": master, "ha_enabled_replicas": []}}),
        _group("PE Master", ids["PE Master"], ids["PE Infrastructure"],
               {"puppet_enterprise::profile::master": {"replication_mode": "none"}}, pin),
        _group("PE Database", ids["PE Database"], ids["PE Infrastructure"],
               {"puppet_enterprise::profile::database": {"replication_mode": "none"}}, pin),
        _group("PE Console", ids["PE Console"], ids["PE Infrastructure"],
               {"puppet_enterprise::profile::console": {"replication_mode": "none"}}, pin),
        _group("PE Orchestrator", ids["PE Orchestrator"], ids["PE Infrastructure"], {}, pin),
        _group("PE Certificate Authority", ids["PE Certificate Authority"], ids["PE Infrastructure"], {}, pin),
        _group("PE Agent", ids["PE Agent"], ids["PE Infrastructure"],
               {"puppet_enterprise::profile::agent": {}}, ["and", ["~", ["fact", "aio_agent_version"], ".+"]]),
        _group("PE Infrastructure Agent", ids["PE Infrastructure Agent"], ids["PE Agent"],
               {"puppet_enterprise::profile::agent": {}}, pin),
    ]


def save_groups(groups):
    _write_json(GROUPS, groups, 0o600)
    replicate_console()


def replicate_console():
    """Simulated pglogical: push classifier groups and RBAC tokens to the replica (best effort)."""
    s = state()
    if s.get("role") != "master" or not s.get("replica"):
        return
    payload = json.dumps({"groups": _read_json(GROUPS, []), "tokens": _read_json(TOKENS, {})}).encode()
    try:
        ssh(s["replica"], "/opt/puppetlabs/bin/pe-sim receive-console", timeout=10, input_bytes=payload)
    except (subprocess.TimeoutExpired, OSError):
        log("console replication to %s failed" % s["replica"])


def groups_by_name():
    return {g["name"]: g for g in _read_json(GROUPS, [])}


def upsert_group(body, gid):
    with StateLock():
        groups = _read_json(GROUPS, [])
        target = None
        if gid is None:
            for g in groups:
                if g["name"] == body.get("name") and g["parent"] == body.get("parent"):
                    target = g
            if target is None:
                gid = body.get("id") or "%s" % __import__("uuid").uuid4()
                target = _group(body.get("name", "unnamed"), gid, body.get("parent", ROOT_GROUP))
                groups.append(target)
        else:
            target = next((g for g in groups if g["id"] == gid), None)
            if target is None:
                return None
        for key in ("name", "description", "environment", "parent", "rule", "variables", "config_data"):
            if key in body:
                target[key] = body[key]
        if "classes" in body:
            for cls, params in body["classes"].items():
                if params is None:
                    target["classes"].pop(cls, None)
                else:
                    merged = dict(target["classes"].get(cls, {}))
                    for k, v in params.items():
                        if v is None:
                            merged.pop(k, None)
                        else:
                            merged[k] = v
                    target["classes"][cls] = merged
        target["serial_number"] = target.get("serial_number", 0) + 1
        _write_json(GROUPS, groups, 0o600)
    replicate_console()
    return target


def rule_matches(rule, facts):
    if not rule:
        return False
    op = rule[0]
    if op in ("and", "or"):
        results = [rule_matches(r, facts) for r in rule[1:]]
        return all(results) if op == "and" else any(results)
    field, value = rule[1], rule[2]
    if isinstance(field, list):  # ["trusted", "extensions", "pp_region"] or ["fact", ...]
        if field[0] == "trusted":
            actual = facts.get(field[-1])
        elif field[0] == "fact" and field[1] == "aio_agent_version":
            actual = "5.5.0"
        else:
            actual = facts.get(field[-1])
    else:
        actual = facts.get("certname") if field == "name" else facts.get(field)
    if actual is None:
        return False
    if op == "=":
        return actual == value
    if op == "~":
        import re
        return re.search(value, actual) is not None
    return False


def compile_catalog(body):
    """The part of a catalog the simulator models: puppet_enterprise::profile::agent settings."""
    facts = body.get("trusted", {})
    node = facts.get("certname", "")
    s = state()
    infra = node in (s.get("master"), s.get("replica"))
    groups = groups_by_name()
    params = {}
    chain = ["PE Agent"] + (["PE Infrastructure Agent"] if infra else [])
    for name in chain:
        params.update(groups.get(name, {}).get("classes", {}).get("puppet_enterprise::profile::agent", {}))
    agent = groups.get("PE Agent")
    if agent and not infra:
        for g in groups.values():
            if g["parent"] == agent["id"] and g["name"] != "PE Infrastructure Agent" and rule_matches(g["rule"], facts):
                params.update(g.get("classes", {}).get("puppet_enterprise::profile::agent", {}))
    settings = {}
    if params.get("server_list"):
        settings["server_list"] = ",".join(params["server_list"])
    if params.get("pcp_broker_list"):
        settings["pcp_broker_list"] = ",".join(params["pcp_broker_list"])
    return {"node": node, "compiled_by": certname(), "settings": settings}


def issue_token(body):
    import secrets as _secrets
    with open(SIM + "/admin_password") as f:
        expected = f.read().strip()
    if body.get("login") != "admin" or body.get("password") != expected:
        return {"kind": "puppetlabs.rbac/invalid-credentials", "msg": "The username or password is not correct."}
    lifetime = parse_lifetime(body.get("lifetime", "1h"))
    token = "sim-" + _secrets.token_urlsafe(32)
    with StateLock():
        tokens = _read_json(TOKENS, {})
        tokens[hashlib.sha256(token.encode()).hexdigest()] = {"user": "admin", "expires": time.time() + lifetime}
        _write_json(TOKENS, tokens, 0o600)
    replicate_console()
    return {"token": token}


def parse_lifetime(text):
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
    text = str(text)
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


# -- PuppetDB (real rows in the host's PostgreSQL) -----------------------------------------------------


def psql(sql, host=None, user="pe-puppetdb", db="pe-puppetdb", input_text=None, timeout=60, script=False):
    argv = ["/opt/puppetlabs/server/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", host or my_address(), "-U", user, "-d", db]
    argv += ["-f", sql] if script else ["-c", sql]
    env = dict(os.environ, PGCONNECT_TIMEOUT="3", PGPASSFILE="/root/.pgpass")
    r = subprocess.run(argv, capture_output=True, text=True, input=input_text, timeout=timeout, env=env)
    if r.returncode:
        raise SimError("psql failed: %s" % r.stderr.strip())
    return r.stdout


def pdb_has_schema(host=None):
    try:
        return psql("SELECT to_regclass('public.reports') IS NOT NULL", host=host).strip() == "t"
    except (SimError, subprocess.TimeoutExpired):
        return False


def insert_reports_sql(columns, select_sql):
    """INSERT the rows of ``select_sql`` into reports as the profile's PuppetDB does: into ``reports`` itself with
    declarative partitions (7.13+), into each day's ``reports_<YYYYMMDD>z`` child with INHERITS (6.10-7.12: no
    trigger on reports, PuppetDB's storage.clj inserts into the child)."""
    if pe_profile().get("partitioning") != "inherits":
        return "INSERT INTO reports (%s) SELECT %s FROM (%s) s;" % (columns, columns, select_sql)
    return ("DO $$ DECLARE d date; BEGIN FOR d IN SELECT DISTINCT (producer_timestamp AT TIME ZONE 'UTC')::date "
            "FROM (%s) s LOOP EXECUTE format('INSERT INTO %%I (%s) SELECT %s FROM (%s) s "
            "WHERE (producer_timestamp AT TIME ZONE ''UTC'')::date = %%L', "
            "'reports_' || to_char(d, 'YYYYMMDD') || 'z', d); END LOOP; END $$;"
            % (select_sql, columns, columns, select_sql.replace("'", "''")))


def store_report(body):
    name = body.get("certname", "")
    if not name or any(c in name for c in "'\\;"):
        return
    status = {"changed": "changed", "unchanged": "unchanged", "failed": "failed"}.get(body.get("status"), "unchanged")
    noop = "true" if body.get("noop") else "false"
    columns = ("hash, certname, puppet_version, report_format, noop, status_id, producer_timestamp, receive_time,"
               " start_time, end_time, metrics, logs")
    row = (f"SELECT digest('{name}' || clock_timestamp()::text, 'sha1') AS hash, '{name}'::text AS certname,"
           f" '5.5.22'::text AS puppet_version, 10::smallint AS report_format, {noop} AS noop,"
           f" (SELECT id FROM report_statuses WHERE status = '{status}') AS status_id, now() AS producer_timestamp,"
           " now() AS receive_time, now() AS start_time, now() AS end_time, '[]'::jsonb AS metrics, '[]'::jsonb AS logs")
    sql = (f"INSERT INTO certnames (certname) VALUES ('{name}') ON CONFLICT (certname) DO NOTHING;"
           + insert_reports_sql(columns, row)
           + f"UPDATE certnames SET latest_report_timestamp = now() WHERE certname = '{name}';")
    try:
        psql(sql)
    except (SimError, subprocess.TimeoutExpired) as e:
        log("store_report failed: %s" % e)


def pdb_nodes():
    try:
        out = psql("SELECT certname, coalesce(deactivated::text, '') FROM certnames ORDER BY certname")
    except (SimError, subprocess.TimeoutExpired):
        return []
    rows = [line.split("|") for line in out.splitlines() if line]
    return [{"certname": r[0], "deactivated": r[1] or None} for r in rows]


SYNC_COLUMNS = ("hash, transaction_uuid, certname, puppet_version, report_format, start_time, end_time, receive_time,"
                " noop, status_id, metrics, logs, producer_timestamp")


def pdb_sync_once(peer):
    """Pull reports (and their certnames) the peer has and this host lacks: PuppetDB HA sync, simulated."""
    if not pdb_has_schema() or not pdb_has_schema(peer):
        return 0
    src = subprocess.run(
        ["/opt/puppetlabs/server/bin/psql", "-X", "-q", "-h", peer, "-U", "pe-puppetdb", "-d", "pe-puppetdb", "-c",
         "COPY (SELECT %s FROM reports WHERE producer_timestamp > now() - interval '1 day') TO STDOUT" % SYNC_COLUMNS],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PGCONNECT_TIMEOUT="3", PGPASSFILE="/root/.pgpass"))
    if src.returncode:
        raise SimError("sync read from %s failed: %s" % (peer, src.stderr.strip()))
    script = "%s/run/sync-%d.sql" % (SIM, os.getpid())
    with open(script, "w") as f:
        f.write("BEGIN;\nCREATE TEMP TABLE incoming AS SELECT %s FROM reports LIMIT 0;\n" % SYNC_COLUMNS)
        f.write("\\copy incoming FROM pstdin\n")
        f.write("INSERT INTO certnames (certname) SELECT DISTINCT certname FROM incoming ON CONFLICT DO NOTHING;\n")
        f.write("DELETE FROM incoming i WHERE EXISTS "
                "(SELECT 1 FROM reports r WHERE r.hash = i.hash AND r.producer_timestamp = i.producer_timestamp);\n")
        f.write(insert_reports_sql(SYNC_COLUMNS, "SELECT * FROM incoming") + "\n")
        f.write("SELECT count(*) FROM incoming;\nCOMMIT;\n")
    try:
        out = psql(script, input_text=src.stdout, script=True)
    finally:
        os.unlink(script)
    added = int((out.strip().splitlines() or ["0"])[-1] or 0)
    update_state(last_pdb_sync=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if added:
        log("puppetdb sync: %d reports from %s" % (added, peer))
    return added


def pdb_sync_loop():
    while True:
        time.sleep(float(state().get("pdb_sync_interval", 2.0)))
        peer = peer_host()
        if not peer or time.time() < state().get("puppetdb_sync_until", 0):
            continue
        try:
            pdb_sync_once(peer)
        except Exception as e:  # the peer may be cut off: keep trying, as PuppetDB does
            log("puppetdb sync with %s failed: %s" % (peer, e))


# -- puppet infrastructure ----------------------------------------------------------------------------


def host_entries(host, label, host_role):
    keys = [e for e in STATUS_ENTRIES if host_role == "master" or not e[4]]
    per_port = {}

    def read(port):
        try:
            _, body = https("GET", host, port, "/status/v1/services?level=debug", timeout=3)
            per_port[port] = body if isinstance(body, dict) else {}
        except OSError:
            per_port[port] = None

    threads = [threading.Thread(target=read, args=(p,)) for p in sorted({e[2] for e in keys})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = []
    for key, display, port, path, _ in keys:
        st = (per_port[port] or {}).get(key)
        entries.append({"service": key, "state": st["state"] if st else "unreachable",
                        "status": st["status"] if st else None, "display_name": display, "server": host,
                        "url": "https://%s:%d%s" % (host, port, path), "type": label,
                        "alerts": st["active_alerts"] if st else []})
    return entries


def infra_status(only_host=None):
    s = state()
    hosts = [(s["master"], "Primary Master", "master")]
    if s.get("replica"):
        hosts.append((s["replica"], "Primary Master Replica", "replica"))
    out = []
    for host, label, r in hosts:
        if only_host and host != only_host:
            continue
        out += host_entries(host, label, r)
    if only_host and not out:
        raise SimError("Error: %s is not the primary master or a provisioned replica" % only_host)
    return out


def cmd_status(args):
    require_root_session()
    entries = infra_status(option(args, "--host"))
    if option(args, "--format") == "json":
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        print("%s: %s on %s, %s" % (e["display_name"], e["state"].capitalize(), e["type"], e["url"]))
        if e["service"] == "puppetdb-status" and e["status"]:
            last = e["status"].get("sync_status", {}).get("last_successful_sync_time")
            if last:
                print("  Info: Last sync successfully completed (at %s)" % last)
        if flag(args, "--verbose"):
            for a in e["alerts"]:
                print("  %s: %s" % (a["severity"].capitalize(), a["message"]))
    ok = sum(1 for e in entries if e["state"] == "running")
    print(time.strftime("%Y-%m-%d %H:%M:%S %z"))
    print("%d of %d services are fully operational." % (ok, len(entries)))
    return 0


def known_host(name):
    if name not in state().get("lab_hosts", {}):
        raise SimError("Error: Could not find node %s (no certificate or not reachable)" % name)


def cmd_provision(args):
    require_root_session()
    if args[:1] != ["replica"] or len(args) < 2:
        raise SimError("Usage: puppet infrastructure provision replica <REPLICA NODE NAME>")
    replica = args[1]
    s = state()
    if s.get("role") != "master":
        raise SimError("Error: provision replica must be run on the primary master.")
    slow_fault("provision")
    require_token(args)
    known_host(replica)
    if replica == s["master"]:
        raise SimError("Error: The replica cannot be the primary master itself.")
    if s.get("replica") and s["replica"] != replica:
        raise SimError("Error: %s is already provisioned as a replica; only one replica is supported. "
                       "Run `puppet infrastructure forget %s` first." % (s["replica"], s["replica"]))
    r = ssh(replica, "/opt/puppetlabs/bin/puppet config print server --section main", timeout=30)
    if r.returncode:
        raise SimError("Error: Could not connect to %s: %s" % (replica, r.stderr.decode().strip()))
    server = r.stdout.decode().strip()
    if server != s["master"]:
        raise SimError("Error: %s must use the primary master as its Puppet Server: its puppet.conf [main] server is "
                       "'%s', expected '%s'." % (replica, server, s["master"]))
    print("Notice: Pinning %s to PE Infrastructure Agent" % replica)
    print("Notice: Running puppet on %s." % replica)
    update_state(replica=replica, replica_enabled=False)
    groups = groups_by_name()
    if "PE HA Replica" not in groups:
        upsert_group({"name": "PE HA Replica", "parent": groups["PE Infrastructure"]["id"],
                      "rule": ["or", ["=", "name", replica]],
                      "classes": {"puppet_enterprise::profile::database": {"replication_mode": "replica"},
                                  "puppet_enterprise::profile::console": {"replication_mode": "replica"}}}, None)
    replicate_console()
    r = ssh(replica, "/opt/puppetlabs/bin/pe-sim provision-target %s %s" % (s["master"], s.get("sync_seconds", 6)),
            timeout=120)
    sys.stdout.write(r.stdout.decode())
    if r.returncode:
        raise SimError("Error: Puppet failed on one or more nodes: %s" % r.stderr.decode().strip())
    print("Notice: A replica has been provisioned for %s. Services are now syncing from the primary master; "
          "check progress with `puppet infrastructure status --verbose`." % s["master"])
    return 0


def admin_provision_target(args):
    master, sync_seconds = args[0], float(args[1])
    if not pdb_has_schema():
        r = subprocess.run(["runuser", "-u", "postgres", "--", "/opt/puppetlabs/server/bin/psql", "-X", "-q",
                            "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d", "pe-puppetdb",
                            "-c", 'SET ROLE "pe-puppetdb"', "-f", PDB_SCHEMA], capture_output=True, text=True)
        if r.returncode:
            raise SimError("PuppetDB schema migration failed: %s" % r.stderr)
    update_state(role="replica", master=master, replica=certname(), provisioned=True, enabled=False,
                 puppetdb_sync_until=time.time() + sync_seconds)
    ensure_role_services()
    print("Notice: %s services installed; PuppetDB initial sync started (simulated: %gs)" % (certname(), sync_seconds))
    return 0


def set_agent_params(group_name, server_list, pcp_list):
    groups = groups_by_name()
    params = {"server_list": server_list or None, "pcp_broker_list": pcp_list or None}
    upsert_group({"classes": {"puppet_enterprise::profile::agent": params}}, groups[group_name]["id"])


def cmd_enable(args):
    require_root_session()
    if args[:1] != ["replica"] or len(args) < 2:
        raise SimError("Usage: puppet infrastructure enable replica <REPLICA NODE NAME> [options]")
    replica = args[1]
    s = state()
    if s.get("role") != "master":
        raise SimError("Error: enable replica must be run on the primary master.")
    slow_fault("enable")
    require_token(args)
    if s.get("replica") != replica:
        raise SimError("Error: %s is not a provisioned replica. Run `puppet infrastructure provision replica %s` first."
                       % (replica, replica))
    topology = option(args, "--topology")
    if topology is None:
        confirm([], "Which topology does this installation use (mono / mono-with-compile)?")
    if topology not in ("mono", "mono-with-compile"):
        raise SimError("Error: --topology must be mono or mono-with-compile, not %r" % topology)
    skip = flag(args, "--skip-agent-config")
    agent_urls = [u for v in options(args, "--agent-server-urls") for u in v.split(",") if u]
    pcp = [u for v in options(args, "--pcp-brokers") for u in v.split(",") if u]
    infra_urls = [u for v in options(args, "--infra-agent-server-urls") for u in v.split(",") if u]
    infra_pcp = [u for v in options(args, "--infra-pcp-brokers") for u in v.split(",") if u]
    if topology == "mono-with-compile" and not skip and not (agent_urls and pcp):
        raise SimError("Error: agent_server_urls and pcp_brokers are required parameters for the 'mono-with-compile' "
                       "topology, unless skip_agent_config is set to true")
    try:
        _, st = https("GET", replica, 8081, "/status/v1/simple", timeout=3)
    except OSError:
        st = "unreachable"
    if st != "running":
        raise SimError("Error: Received a PCP error message (blocking request for 'status query'): replica PuppetDB is "
                       "%s. Check `puppet infrastructure status --verbose`, then retry." % st)
    confirm(args, "Enable %s as a replica of %s with topology %s?" % (replica, s["master"], topology))
    log("enable replica %s (topology %s)" % (replica, topology))
    groups = groups_by_name()
    master = s["master"]
    if "PE HA Master" not in groups:
        upsert_group({"name": "PE HA Master", "parent": groups["PE Master"]["id"], "rule": ["or", ["=", "name", master]],
                      "classes": {"puppet_enterprise::profile::master": {"replication_mode": "source"}}}, None)
    upsert_group({"classes": {"puppet_enterprise": {"ha_enabled_replicas": [replica]}}}, groups["PE Infrastructure"]["id"])
    if not skip:
        if topology == "mono":
            agent_urls = agent_urls or ["%s:8140" % master, "%s:8140" % replica]
            pcp = pcp or ["%s:8142" % master, "%s:8142" % replica]
        set_agent_params("PE Agent", agent_urls, pcp)
        set_agent_params("PE Infrastructure Agent", infra_urls or ["%s:8140" % master, "%s:8140" % replica],
                         infra_pcp or ["%s:8142" % master, "%s:8142" % replica])
        print("Notice: Agents will be configured with server_list %s" % ",".join(agent_urls))
    else:
        print("Notice: Skipping agent configuration (--skip-agent-config)")
    update_state(replica_enabled=True, topology=topology, skip_agent_config=skip)
    r = ssh(replica, "/opt/puppetlabs/bin/pe-sim mark-enabled", timeout=30)
    if r.returncode:
        raise SimError("Error: could not finish enabling on %s: %s" % (replica, r.stderr.decode().strip()))
    print("Notice: Replica %s enabled. Deploy the configuration: run Puppet on all nodes, or with Direct Puppet run "
          "`puppet job run --no-enforce-environment --query 'nodes {deactivated is null and expired is null}'`."
          % replica)
    return 0


def cmd_promote(args):
    require_root_session()
    if args[:1] != ["replica"]:
        raise SimError("Usage: puppet infrastructure promote replica")
    s = state()
    if s.get("role") != "replica" or not s.get("provisioned"):
        raise SimError("Error: promote replica must be run on a provisioned replica; this node is %s." % s.get("role"))
    confirm(args, "Promote %s to primary master? The old master %s must be permanently offline." % (certname(), s["master"]))
    slow_fault("promote")
    me, old = certname(), s["master"]
    print("Notice: Promoting %s; the old master %s is decommissioned." % (me, old))
    with StateLock():
        st = state()
        st.update(role="master", master=me, replica=None, provisioned=False, enabled=False, promoted_from=old,
                  replica_enabled=False, puppetdb_sync_until=0)
        _write_json(STATE, st)
    ensure_role_services()
    groups = [g for g in _read_json(GROUPS, []) if g["name"] not in ("PE HA Master", "PE HA Replica")]
    for g in groups:
        if g.get("rule") == ["or", ["=", "name", old]]:
            g["rule"] = ["or", ["=", "name", me]]
        agent = g["classes"].get("puppet_enterprise::profile::agent")
        if agent and agent.get("server_list"):
            agent["server_list"] = ["%s:8140" % me]
            agent["pcp_broker_list"] = ["%s:8142" % me]
        pe = g["classes"].get("puppet_enterprise")
        if pe:
            pe["ha_enabled_replicas"] = []
            pe["puppet_master_host"] = me
    _write_json(GROUPS, groups, 0o600)
    conf_delete("server_list")
    conf_set("server", me)
    print("Notice: Promotion complete. Update client tools, Code Manager hooks and CNAMEs that point at %s, "
          "then run Puppet on all nodes." % old)
    return 0


def cmd_forget(args):
    require_root_session()
    if not args:
        raise SimError("Usage: puppet infrastructure forget <REPLICA NODE NAME>")
    replica = args[0]
    s = state()
    if s.get("role") != "master":
        raise SimError("Error: forget must be run on the primary master.")
    require_token(args)
    if replica == s["master"]:
        raise SimError("Error: refusing to forget the primary master itself.")
    slow_fault("forget")
    groups = [g for g in _read_json(GROUPS, []) if g["name"] not in ("PE HA Replica", "PE HA Master")]
    for g in groups:
        agent = g["classes"].get("puppet_enterprise::profile::agent")
        if agent and agent.get("server_list"):
            agent["server_list"] = [u for u in agent["server_list"] if not u.startswith(replica)]
            agent["pcp_broker_list"] = [u for u in agent.get("pcp_broker_list", []) if not u.startswith(replica)]
        pe = g["classes"].get("puppet_enterprise")
        if pe and replica in pe.get("ha_enabled_replicas", []):
            pe["ha_enabled_replicas"] = [x for x in pe["ha_enabled_replicas"] if x != replica]
    _write_json(GROUPS, groups, 0o600)
    update_state(replica=None, replica_enabled=False)
    try:
        psql("UPDATE certnames SET deactivated = now() WHERE certname = '%s'" % replica.replace("'", ""))
    except SimError as e:
        log("purge of %s from PuppetDB failed: %s" % (replica, e))
    print("Notice: %s has been decommissioned and purged as an agent; a Puppet run completed on %s." % (replica, s["master"]))
    return 0


def cmd_reinitialize(args):
    require_root_session()
    if args[:1] != ["replica"]:
        raise SimError("Usage: puppet infrastructure reinitialize replica [--db DATABASE]")
    accepted = pe_profile().get("reinitialize_databases") or list(PE_DATABASES)
    dbs = options(args, "--db") or list(PE_DATABASES)
    for db in dbs:  # option values are checked when the command line is parsed, before anything else
        if db not in accepted:
            raise SimError("Error: --db must be one of %s, not %r" % (", ".join(accepted), db))
    s = state()
    if s.get("role") != "replica" or not s.get("provisioned"):
        raise SimError("Error: reinitialize replica must be run on a provisioned replica.")
    master = s["master"]
    try:
        code, _ = https("GET", master, 4433, "/status/v1/services", timeout=3)
    except OSError as e:
        raise SimError("Error: the primary master %s is not reachable (%s); it must be fully functional." % (master, e))
    if code != 200:
        raise SimError("Error: the primary master %s is not fully functional (status %d)." % (master, code))
    confirm(args, "Reinitialize %s on this replica? They are destroyed and re-created." % ", ".join(dbs))
    slow_fault("reinitialize")
    for db in dbs:
        as_pg = ["runuser", "-u", "postgres", "--", "/opt/puppetlabs/server/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                 "-h", "/run/postgresql", "-d", "postgres"]
        r = subprocess.run(as_pg + ["-c", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'" % db,
                                    "-c", 'DROP DATABASE IF EXISTS "%s"' % db], capture_output=True, text=True)
        r2 = subprocess.run(as_pg + ["-c", 'CREATE DATABASE "%s" OWNER "%s"' % (db, db)], capture_output=True, text=True)
        if r.returncode or r2.returncode:
            raise SimError("Error: reinitializing %s failed: %s%s" % (db, r.stderr, r2.stderr))
        dump = subprocess.run(["/opt/puppetlabs/server/bin/pg_dump", "-h", master, "-U", db, "-d", db, "--no-owner"],
                              capture_output=True, text=True, env=dict(os.environ, PGPASSFILE="/root/.pgpass",
                                                                       PGCONNECT_TIMEOUT="3"))
        if dump.returncode:
            raise SimError("Error: copying %s from %s failed: %s" % (db, master, dump.stderr.strip()))
        load = subprocess.run(["/opt/puppetlabs/server/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", my_address(),
                               "-U", db, "-d", db], input=dump.stdout, capture_output=True, text=True,
                              env=dict(os.environ, PGPASSFILE="/root/.pgpass"))
        if load.returncode:
            raise SimError("Error: loading %s failed: %s" % (db, load.stderr.strip()))
        print("Notice: Reinitialized %s from %s" % (db, master))
    return 0


def cmd_run(args):
    require_root_session()
    if args[:1] != ["enable_ha_failover"]:
        raise SimError("Error: unknown plan %r (this simulator knows enable_ha_failover)" % (args[:1] or [""])[0])
    params = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    host = params.get("host")
    topology = params.get("topology")
    if not host or topology not in ("mono", "mono-with-compile"):
        raise SimError("Error: enable_ha_failover needs host=<failed master> and topology=mono|mono-with-compile")
    timeout = float(params.get("replication_timeout_secs", 1800))
    skip = params.get("skip_agent_config") == "true"
    agent_urls, pcp = params.get("agent_server_urls"), params.get("pcp_brokers")
    # The plan's own first check (enterprise_tasks::enable_ha_failover, both public copies)
    if topology == "mono-with-compile" and not skip and not (agent_urls and pcp):
        raise SimError("Error: agent_server_urls and pcp_brokers are required parameters for the 'mono-with-compile' "
                       "topology unless skip_agent_config is true")
    s = state()
    if s.get("role") != "master":
        raise SimError("Error: run enable_ha_failover on the promoted replica (the current master).")
    if host == s["master"]:
        raise SimError("Error: host must be the failed master, not this node.")
    known_host(host)
    started = time.time()
    print("Starting: plan enterprise_tasks::enable_ha_failover")
    slow_fault("enable_ha_failover")
    r = ssh(host, "/opt/puppetlabs/bin/pe-sim become-agent %s" % s["master"], timeout=60)
    if r.returncode:
        raise SimError("Error: could not prepare %s: %s" % (host, r.stderr.decode().strip()))
    print("Finished: disable_all_puppet_services, remove_enterprise_conf_files, delete_ssl_dir on %s" % host)
    PLAN_CERT_AUTH["on"] = True
    cmd_provision(["replica", host])
    deadline = started + timeout
    while True:
        entries = host_entries(host, "Primary Master Replica", "replica")
        ok = sum(1 for e in entries if e["state"] == "running")
        print("%d of %d services are fully operational." % (ok, len(entries)))
        if ok == len(entries) and ok:
            break
        if time.time() >= deadline:
            raise SimError("Error: puppetlabs.hafailover/provision-replica-failed: Replica status check timed out "
                           "after %gs" % timeout)
        time.sleep(min(2.0, max(0.1, deadline - time.time())))
    enable = ["replica", host, "--topology", topology, "--yes"]
    if skip:
        enable.append("--skip-agent-config")
    if agent_urls:
        enable += ["--agent-server-urls", agent_urls]
    if pcp:
        enable += ["--pcp-brokers", pcp]
    cmd_enable(enable)
    print("Finished: plan enterprise_tasks::enable_ha_failover in %.1f sec" % (time.time() - started))
    return 0


def admin_become_agent(args):
    new_master = args[0]
    for name in ("pe-orchestration-services", "pe-console-services", "pe-puppetdb", "pe-puppetserver"):
        stop_service(name)
    with StateLock():
        st = state()
        st.update(role="agent", master=new_master, replica=None, provisioned=False, enabled=False, replica_enabled=False,
                  puppetdb_sync_until=0)
        _write_json(STATE, st)
    conf_delete("server_list")
    conf_set("server", new_master)
    print("Notice: %s now points at %s" % (certname(), new_master))
    return 0


INFRA = {"status": cmd_status, "provision": cmd_provision, "enable": cmd_enable, "promote": cmd_promote,
         "forget": cmd_forget, "reinitialize": cmd_reinitialize, "run": cmd_run}


# -- puppet resource / agent / job / config ------------------------------------------------------------


def cmd_resource(args):
    if args[:1] != ["service"] or len(args) < 2:
        raise SimError("Error: this simulator models `puppet resource service <name> [ensure=running|stopped]`")
    name = args[1]
    known = set(SERVICES) | {"puppet", "pe-postgresql", "pxp-agent"}
    if name not in known or (name in SERVICES and name not in ROLE_SERVICES.get(role(), ())
                             and not service_running(name)):
        if name not in known:
            raise SimError("Error: Could not find service %s" % name)
    ensure = next((a.split("=", 1)[1] for a in args[2:] if a.startswith("ensure=")), None)
    before = "running" if service_running(name) else "stopped"
    if ensure == "running" and before != "running":
        if name == "pxp-agent":
            pass
        else:
            start_service(name)
        print("Notice: /Service[%s]/ensure: ensure changed 'stopped' to 'running'" % name)
    elif ensure == "stopped" and before != "stopped":
        if name != "pxp-agent":
            stop_service(name)
        print("Notice: /Service[%s]/ensure: ensure changed 'running' to 'stopped'" % name)
    elif ensure not in (None, "running", "stopped"):
        raise SimError("Error: Parameter ensure failed on Service[%s]: Invalid value %r" % (name, ensure))
    now = "running" if service_running(name) else "stopped"
    print("service { '%s':\n  ensure   => '%s',\n  provider => 'systemd',\n}" % (name, now))
    return 0


def lock_holder():
    try:
        pid = int(open(LOCKFILE).read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def cmd_agent(args):
    if not flag(args, "-t", "--test", "--onetime"):
        raise SimError("Error: this simulator models `puppet agent -t`")
    noop = flag(args, "--noop")
    slow_fault("agent")
    if lock_holder() or fault_active("agent_lock"):
        print("Notice: Run of Puppet configuration client already in progress; skipping  (%s exists)" % LOCKFILE)
        return 1
    os.makedirs(os.path.dirname(LOCKFILE), exist_ok=True)
    with open(LOCKFILE, "w") as f:
        f.write(str(os.getpid()))
    try:
        return _agent_run(args, noop)
    finally:
        try:
            os.unlink(LOCKFILE)
        except OSError:
            pass


def _agent_run(args, noop):
    override = option(args, "--server_list")
    listing = override or conf_get("server_list", "agent") or conf_get("server", "agent") or ""
    servers = []
    for item in listing.split(","):
        item = item.strip()
        if item:
            host, _, port = item.partition(":")
            servers.append((host, int(port or 8140)))
    if not servers:
        print("Error: Could not run: no server or server_list is configured")
        return 1
    connect_timeout = float(faults().get("agent_connect_timeout", 3))
    chosen = None
    for host, port in servers:
        try:
            code, body = https("GET", host, port, "/status/v1/simple/master", timeout=connect_timeout)
            if code == 200:
                chosen = (host, port)
                break
            print("Debug: %s:%d answered %s (%s)" % (host, port, code, body))
        except OSError as e:
            print("Debug: Unable to connect to server from server_list setting: %s:%d (%s)" % (host, port, e))
    if chosen is None:
        print("Error: Could not run Puppet configuration client: Could not select a functional puppet master from "
              "server_list: '%s'" % listing)
        return 1
    print("Info: Using configured server_list entry %s:%d" % chosen)
    facts = trusted_facts()
    try:
        _, catalog = https("POST", chosen[0], chosen[1], "/sim/v1/catalog", {"trusted": facts}, timeout=30)
    except OSError as e:
        print("Error: Could not retrieve catalog from remote server: %s" % e)
        return 1
    print("Info: Applying configuration version '1700000000' (compiled by %s)" % catalog.get("compiled_by"))
    changes = 0
    for key, value in sorted(catalog.get("settings", {}).items()):
        current = conf_get(key, "main")
        if current == value:
            continue
        if noop:
            print("Notice: /Stage[main]/Puppet_enterprise::Profile::Agent/Pe_ini_setting[%s]/value: current_value '%s', "
                  "should be '%s' (noop)" % (key, current, value))
        else:
            conf_set(key, value, "main")
            print("Notice: /Stage[main]/Puppet_enterprise::Profile::Agent/Pe_ini_setting[%s]/value: value changed "
                  "'%s' to '%s'" % (key, current, value))
            changes += 1
    failed = fault_active("agent_fail")
    if failed:
        print("Error: /Stage[main]/App/Exec[simulated-failure]/returns: change from 'notrun' to ['0'] failed")
    status = "failed" if failed else ("changed" if changes else "unchanged")
    try:
        https("POST", chosen[0], 8081, "/pdb/cmd/v1", {"certname": facts["certname"], "status": status, "noop": noop},
              timeout=10)
    except OSError as e:
        print("Warning: Unable to submit report to PuppetDB: %s" % e)
    print("Notice: Applied catalog in 0.%02d seconds" % (changes + 3))
    if failed:
        return 6 if changes else 4
    return 2 if changes else 0


def cmd_job(args):
    if args[:1] != ["run"]:
        raise SimError("Usage: puppet job run [--no-enforce-environment] --query <PQL>")
    token = read_token_file(option(args, "--token-file") or os.path.expanduser("~/.puppetlabs/token"))
    problem = token_problem(token) if role() == "master" else (401, "x", "not a master")
    if problem:
        raise SimError("Error: Orchestrator rejected the request: %s (%s)" % (problem[2], problem[1]))
    query = option(args, "--query") or ""
    if "deactivated is null" not in query:
        raise SimError("Error: this simulator models the query 'nodes {deactivated is null and expired is null}'")
    s = state()
    deactivated = {n["certname"] for n in pdb_nodes() if n["deactivated"]}
    nodes = [n for n in sorted(s["lab_hosts"]) if n not in deactivated and n != s.get("promoted_from")]
    print("Starting a Puppet run on %d nodes (--no-enforce-environment: %s)" % (len(nodes), flag(args, "--no-enforce-environment")))
    results = {}

    def run_one(node):
        cmd = "/opt/puppetlabs/bin/puppet agent -t" if node != certname() else None
        if cmd is None:
            results[node] = cmd_agent_subprocess()
        else:
            try:
                results[node] = ssh(node, cmd, timeout=300).returncode
            except subprocess.TimeoutExpired:
                results[node] = 124

    threads = [threading.Thread(target=run_one, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = {n: c for n, c in results.items() if c not in (0, 2)}
    for n in nodes:
        print("  %s: %s (exit %s)" % (n, "success" if results[n] in (0, 2) else "failed", results[n]))
    print("Job completed. %d/%d nodes succeeded." % (len(nodes) - len(bad), len(nodes)))
    return 0 if not bad else 1


def cmd_agent_subprocess():
    return subprocess.run(["/opt/puppetlabs/bin/puppet", "agent", "-t"], capture_output=True).returncode


def cmd_config(args):
    if not args:
        raise SimError("Usage: puppet config print|set|delete ...")
    section = option(args, "--section", "main")
    rest = [a for i, a in enumerate(args) if a != "--section" and (i == 0 or args[i - 1] != "--section")]
    action, rest = rest[0], rest[1:]
    if action == "print":
        print(conf_get(rest[0], section) or "")
        return 0
    if action == "set":
        conf_set(rest[0], rest[1], section)
        return 0
    if action == "delete":
        old = conf_get(rest[0], section)
        if conf_delete(rest[0], section):
            print("Deleted setting from '%s': '%s = %s'" % (section, rest[0], old))
        else:
            print("Warning: No setting found in configuration file for section '%s' setting name '%s'" % (section, rest[0]))
        return 0
    raise SimError("Error: unknown config action %r" % action)


def cmd_access(args):
    path = option(args, "--token-file") or os.path.expanduser("~/.puppetlabs/token")
    if args[:1] == ["show"]:
        token = read_token_file(path)
        if not token:
            raise SimError("Error: No token file at %s" % path)
        print(token)
        return 0
    if args[:1] == ["login"]:
        password = sys.stdin.readline().strip()
        master = state().get("master")
        _, body = https("POST", master, 4433, "/rbac-api/v1/auth/token",
                        {"login": option(args, "--username", "admin"), "password": password,
                         "lifetime": option(args, "--lifetime", "1h")})
        if not isinstance(body, dict) or "token" not in body:
            raise SimError("Error: login failed: %s" % (body.get("msg") if isinstance(body, dict) else body))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_json_text(path, body["token"])
        print("Access token saved to: %s" % path)
        return 0
    raise SimError("Usage: puppet-access login [--lifetime 1h] | show")


def _write_json_text(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


# -- pe-sim admin ------------------------------------------------------------------------------------------


def admin(args):
    cmd, rest = args[0], args[1:]
    if cmd == "service":
        run_service(rest[0])
        return 0
    if cmd == "lab-init-master":
        s = state()
        if not os.path.exists(GROUPS):
            _write_json(GROUPS, default_groups(s["master"]), 0o600)
        ensure_role_services()
        return 0
    if cmd == "provision-target":
        return admin_provision_target(rest)
    if cmd == "mark-enabled":
        update_state(enabled=True)
        return 0
    if cmd == "become-agent":
        return admin_become_agent(rest)
    if cmd == "receive-console":
        payload = json.loads(sys.stdin.read())
        _write_json(GROUPS, payload["groups"], 0o600)
        _write_json(TOKENS, payload["tokens"], 0o600)
        return 0
    if cmd == "fault":
        with StateLock():
            f = faults()
            if rest[0] == "clear":
                f = {}
            elif len(rest) >= 2 and rest[1] == "off":
                f.pop(rest[0], None)
            else:
                value = json.loads(rest[1]) if len(rest) > 1 else True
                f[rest[0]] = value
            _write_json(FAULTS, f)
        return 0
    if cmd == "scp-hook":
        if not faults().get("corrupt_transfer"):
            return 0
        with StateLock():
            f = faults()
            f.pop("corrupt_transfer", None)
            _write_json(FAULTS, f)
        host, _, path = rest[-1].partition(":")
        flip = ("import sys; f = open(sys.argv[1], 'r+b'); f.seek(100); b = f.read(1); f.seek(100); "
                "f.write(bytes([b[0] ^ 0xFF])); f.close()")
        r = ssh(host, "/usr/bin/python3 -c %s %s" % (shlex.quote(flip), shlex.quote(path)), timeout=30)
        log("corrupt_transfer: flipped byte 100 of %s:%s (rc %d)" % (host, path, r.returncode))
        return 0
    if cmd == "sync-now":
        peer = peer_host()
        print(pdb_sync_once(peer) if peer else 0)
        return 0
    if cmd == "ensure-services":
        ensure_role_services()
        return 0
    raise SimError("unknown pe-sim command %r" % cmd)


def main(argv):
    tool, args = argv[1], argv[2:]
    try:
        if tool in ("puppet", "puppet-infrastructure"):
            if tool == "puppet-infrastructure":
                args = ["infrastructure"] + args
            if not args:
                raise SimError("Usage: puppet <subcommand> (simulator)")
            sub, rest = args[0], args[1:]
            if sub in ("infrastructure", "infra"):
                if not rest or rest[0] not in INFRA:
                    raise SimError("Usage: puppet infrastructure status|provision|enable|promote|forget|reinitialize|run")
                check_infra_flags(rest[0], rest[1:])
                return INFRA[rest[0]](rest[1:])
            if sub == "resource":
                return cmd_resource(rest)
            if sub == "agent":
                return cmd_agent(rest)
            if sub == "job":
                return cmd_job(rest)
            if sub == "config":
                return cmd_config(rest)
            if sub == "--version":
                print("5.5.22 (pe-ha simulator)")
                return 0
            raise SimError("Error: this simulator does not model `puppet %s`" % sub)
        if tool == "puppet-access":
            return cmd_access(args)
        if tool == "pe-sim":
            return admin(args)
        raise SimError("unknown tool %s" % tool)
    except SimError as e:
        print(str(e), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv))
