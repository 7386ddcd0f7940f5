"""pe-ha lab simulator (not PE): The simulated PE services as daemons: start, stop, and the HTTPS server that routes each request to the service module that answers it."""

import http.server
import json
import os
import signal
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import classifier
import orchestrator
import puppetdb
import rbac
import status
from base import (
    LOG,
    ROLE_SERVICES,
    RUN,
    SERVICES,
    SIM,
    SSLDIR,
    SimError,
    certname,
    log,
    my_address,
    pe_profile,
    pg_data,
    reachable,
    role,
    state,
    update_state,
)
from puppetdb import local_db_up, pdb_sync_loop
from rbac import token_problem

LOOPBACK_PORT = 8080  # PuppetDB's cleartext listener
# Where the lab's real-PuppetDB profile puts the real PuppetDB's start/stop (lab/realpuppet.py)
REAL_PUPPETDB = SIM + "/real-puppetdb.sh"
# Where the lab's real-Puppet profile puts the real Puppet Server's start/stop (lab/realserver.py): this host's
# 8140 then hands the agent's requests to it, as an SSL-terminating proxy does (Puppet Server's documented headers).
REAL_PUPPETSERVER = SIM + "/real-puppetserver.sh"
REAL_PUPPETSERVER_PORT = 8141
AGENT_PATHS = ("/puppet/", "/puppet-ca/")
REAL_PUPPETDB_PORT = 8080  # the real PuppetDB's cleartext listener on the host's loopback

# Every HTTPS route, by the PE service that answers it.
ROUTES = status.ROUTES + rbac.ROUTES + classifier.ROUTES + puppetdb.ROUTES + orchestrator.ROUTES


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

    def _relay(self, method, port):
        """Relay one request to the real Puppet Server (8140's agent paths) or PuppetDB (8081's ``/pdb/``) behind
        this TLS port, with the client certificate in ``X-Client-Verify``/``X-Client-DN``/``X-Client-Cert``
        (Puppet Server's external SSL termination; PuppetDB's cleartext listener ignores them)."""
        import http.client

        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():  # the terminus's gzip body
            raw = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if not size:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")}
        der = self.connection.getpeercert(binary_form=True)
        if der:
            subject = dict(x[0] for x in self.connection.getpeercert().get("subject", ()))
            headers.update({"X-Client-Verify": "SUCCESS", "X-Client-DN": "CN=%s" % subject.get("commonName", ""),
                            "X-Client-Cert": urllib.parse.quote(ssl.DER_cert_to_PEM_cert(der))})
        else:
            headers["X-Client-Verify"] = "NONE"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request(method, self.path, body=raw, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except OSError as e:
            return self._send(503, {"kind": "service-unavailable", "msg": "127.0.0.1:%d: %s" % (port, e)})
        finally:
            conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method):
        port = self.server.server_address[1]
        path = urllib.parse.urlparse(self.path).path
        if port == 8140 and path.startswith(AGENT_PATHS) and os.path.exists(REAL_PUPPETSERVER):
            return self._relay(method, REAL_PUPPETSERVER_PORT)
        # Puppet Server's PuppetDB terminus (its commands name themselves in the query); the simulated agent's own
        # report on master and replica carries no command and stays the simulator's.
        if (port == 8081 and path.startswith("/pdb/") and os.path.exists(REAL_PUPPETDB)
                and (path != "/pdb/cmd/v1" or "command=" in urllib.parse.urlparse(self.path).query)):
            return self._relay(method, REAL_PUPPETDB_PORT)
        body = self._body() if method == "POST" else None
        for route in ROUTES:
            if route.method == method and route.port in (None, port) and route.matches(path):
                if route.auth and not self._auth():
                    return
                return self._send(*route.answer(port, path, body))
        self._send(404, {"kind": "not-found", "msg": "no route %s" % path})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")


class LoopbackHandler(Handler):
    """PuppetDB's cleartext listener on the host's loopback (PuppetDB's default jetty settings: 8080 on localhost):
    its status and PQL counts, no authentication."""

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/pdb/query/v4":
            return self._send(*puppetdb.pql_answer(urllib.parse.parse_qs(url.query).get("query", [""])[0]))
        if url.path == "/status/v1/services/puppetdb-status":  # the same body PuppetDB serves on 8081
            return self._send(*status.one_service(8081, url.path, None))
        self._send(404, {"kind": "not-found", "msg": "no route %s" % url.path})

    def do_POST(self):
        self._send(404, {"kind": "not-found", "msg": "the simulator's loopback listener takes no commands"})


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
        if not pe_profile().get("real_puppetdb"):  # there the real PuppetDB has this listener
            loopback = socketserver.ThreadingTCPServer(("127.0.0.1", LOOPBACK_PORT), LoopbackHandler,
                                                        bind_and_activate=False)
            loopback.allow_reuse_address = loopback.daemon_threads = True
            loopback.server_bind()
            loopback.server_activate()
            servers.append(loopback)
            threading.Thread(target=loopback.serve_forever, daemon=True).start()
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


def pg_ctl(*args):
    """PE's PostgreSQL service, as its unit runs it: pg_ctl on the node's data directory, as its OS user."""
    subprocess.run(["runuser", "-u", "postgres", "--", "/opt/puppetlabs/server/bin/pg_ctl", "-D", pg_data(), *args],
                   check=True, capture_output=True)


def start_service(name):
    if service_running(name):
        if name == "pe-puppetdb" and os.path.exists(REAL_PUPPETDB):  # the lab may have stopped the JVM alone
            start_real_puppetdb()
        return False
    if name == "puppet":
        update_state(puppet_service="running")
        return True
    if name == "pe-postgresql":
        pg_ctl("-l", "/var/log/puppetlabs/postgresql/postgresql.log", "-w", "start")
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
            if name == "pe-puppetdb" and os.path.exists(REAL_PUPPETDB):
                start_real_puppetdb()
            return True
        if proc.poll() is not None:
            raise SimError("Error: %s failed to start (see %s/%s.log)" % (name, LOG, name))
        time.sleep(0.05)
    raise SimError("Error: %s did not start listening within 15 s" % name)


def start_real_puppetdb(timeout_s=300):
    """Start the real PuppetDB and return once its services have started, as PE's service start does: ezbake's
    start script waits for Trapperkeeper's restart file (Trapperkeeper's docs, "Restart File"). The lab's waits
    for PuppetDB's status."""
    subprocess.run(["sh", REAL_PUPPETDB, "start"], check=True, timeout=30)
    deadline = time.time() + timeout_s
    url = "http://127.0.0.1:%d/status/v1/services/puppetdb-status" % REAL_PUPPETDB_PORT
    while time.time() < deadline:
        if subprocess.run(["sh", REAL_PUPPETDB, "status"], timeout=10).returncode != 0:
            raise SimError("Error: pe-puppetdb exited while starting (see /var/log/puppetlabs/puppetdb/puppetdb.log)")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if json.loads(resp.read()).get("state") == "running":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise SimError("Error: pe-puppetdb did not finish starting within %d s" % timeout_s)


def stop_service(name):
    if not service_running(name):
        return False
    if name == "puppet":
        update_state(puppet_service="stopped")
        return True
    if name == "pe-postgresql":
        pg_ctl("-m", "fast", "-w", "stop")
        return True
    if name == "pe-puppetdb" and os.path.exists(REAL_PUPPETDB):
        subprocess.run(["sh", REAL_PUPPETDB, "stop"], check=True, timeout=60)
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
