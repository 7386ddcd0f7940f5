"""Real PuppetDB on the lab's master and replica: Debian's ``puppetdb`` 7.12.1 (the open-source PuppetDB, not
PE's build), each on its own host's PE PostgreSQL and ``pe-puppetdb``, as PE configures it: cleartext on
``localhost:8080`` (PE's ``jetty.ini``), the database user ``pe-puppetdb``.

The simulator keeps 8081 (PE's TLS port with RBAC tokens) for now; see docs/simulator.md.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lab import jvmservice
from lab.config import LAB_DIR, Host, LabConfig
from lab.core import node_run

JAR = "/usr/share/puppetdb/puppetdb.jar"
BOOTSTRAP = "/etc/puppetdb/bootstrap.cfg"
AUTH_CONF = "/etc/puppetdb/conf.d/auth.conf"
CONF_D = "/etc/puppetlabs/puppetdb/conf.d"  # PE's path, inside each lab host
VARDIR = "/opt/puppetlabs/server/data/puppetdb"
LOG = "/var/log/puppetlabs/puppetdb/puppetdb.log"
HEAP = "-Xmx384m"
URL = "http://127.0.0.1:8080"


class PuppetDBError(RuntimeError):
    """A real PuppetDB in the lab did not start, answer or store what it was sent."""


def installed() -> bool:
    from pathlib import Path

    return Path(JAR).exists() and Path(BOOTSTRAP).exists()


def _service_password() -> str:
    return (LAB_DIR / "secrets" / "pg_service").read_text().strip()


def write_config(cfg: LabConfig, h: Host) -> None:
    """config.ini, database.ini, jetty.ini, auth.conf and logging for ``h``'s PuppetDB."""
    conf = h.path(CONF_D)
    conf.mkdir(parents=True, exist_ok=True)
    h.path(VARDIR).mkdir(parents=True, exist_ok=True)
    h.path(LOG).parent.mkdir(parents=True, exist_ok=True)
    logback = conf.parent / "logback.xml"
    logback.write_text(
        '<configuration>\n  <appender name="F" class="ch.qos.logback.core.FileAppender">\n'
        f"    <file>{LOG}</file>\n    <append>true</append>\n"
        "    <encoder><pattern>%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5p [%c{2}] %m%n</pattern></encoder>\n"
        '  </appender>\n  <root level="info"><appender-ref ref="F"/></root>\n</configuration>\n')
    (conf / "config.ini").write_text(
        f"[global]\nvardir = {VARDIR}\nlogging-config = {CONF_D.rsplit('/', 1)[0]}/logback.xml\n\n"
        "[command-processing]\nthreads = 2\n")
    (conf / "database.ini").write_text(
        f"[database]\nsubname = //{h.address}:5432/pe-puppetdb\nusername = pe-puppetdb\n"
        f"password = {_service_password()}\nmigrator-username = pe-puppetdb\nmigrator-password = {_service_password()}\n"
        # PuppetDB's own partition and GC work stays out of the way of the copy under test
        "gc-interval = 0\nnode-purge-ttl = 0s\nreport-ttl = 3650d\nnode-ttl = 0s\n")
    (conf / "database.ini").chmod(0o600)
    (conf / "jetty.ini").write_text("[jetty]\nhost = 127.0.0.1\nport = 8080\n")
    (conf / "auth.conf").write_text(open(AUTH_CONF).read())


# The host's PuppetDB as a service: the simulated pe-puppetdb's start and stop run it too (lab/sim/services.py), so a
# flow's `puppet resource service pe-puppetdb` starts and stops the real JVM, as PE's unit does.
SERVICE_SCRIPT = "/opt/puppetlabs/sim/real-puppetdb.sh"


def write_service_script(cfg: LabConfig, h: Host) -> None:
    write_config(cfg, h)
    java = (f"exec /usr/bin/java {HEAP} -XX:+UseSerialGC -Djava.security.egd=file:/dev/urandom -cp {JAR} "
            f"clojure.main -m puppetlabs.puppetdb.core services --config {CONF_D} --bootstrap-config {BOOTSTRAP}"
            f" >> {LOG}.out 2>&1")
    h.path(SERVICE_SCRIPT).write_text(jvmservice.script(
        "Debian's real PuppetDB on this host, started and stopped like a service", java, VARDIR))


@dataclass
class RealPuppetDB:
    """One host's PuppetDB process (started inside the host's namespaces)."""

    cfg: LabConfig
    host: Host

    def start(self, *, timeout_s: float = 120) -> float:
        """Start PuppetDB (unless the simulated pe-puppetdb service started it) and wait until its status is
        ``running``; returns the seconds it took."""
        if self.running():
            return 0.0
        write_service_script(self.cfg, self.host)
        offset = self.log_size()
        return jvmservice.start_and_wait(self.host, SERVICE_SCRIPT, VARDIR, ready=lambda: self.status() == "running",
                                         log_tail=lambda: self.log_since(offset), what="PuppetDB",
                                         error=PuppetDBError, timeout_s=timeout_s)

    def stop(self) -> None:
        if self._pid() is not None:
            node_run(self.host, "sh", SERVICE_SCRIPT, "stop", timeout=60)

    def drop_queue(self) -> None:
        """Stop PuppetDB and drop the commands it has not processed: kept on disk (its stockpile), they are
        processed again at its next start, whatever database it then finds."""
        import shutil

        self.stop()
        shutil.rmtree(self.host.path(f"{VARDIR}/stockpile"), ignore_errors=True)

    def _pid(self) -> int | None:
        return jvmservice.pid(self.host, VARDIR)

    def _pid_alive(self) -> bool:
        return jvmservice.alive(self.host, VARDIR)

    def running(self) -> bool:
        return self._pid_alive() and self.status() == "running"

    def log_size(self) -> int:
        path = self.host.path(LOG)
        return path.stat().st_size if path.exists() else 0

    def log_since(self, offset: int) -> str:
        path = self.host.path(LOG)
        if not path.exists():
            return ""
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    # -- HTTP inside the host (PuppetDB listens on the host's own loopback) ----------------------------

    def _curl(self, *args: str, timeout: float = 60) -> tuple[int, str]:
        out = node_run(self.host, "curl", "-sS", "-m", str(int(timeout)), "-w", "\n%{http_code}", *args,
                       check=False, timeout=timeout + 10)
        body, _, code = out.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def status(self) -> str | None:
        code, body = self._curl(f"{URL}/status/v1/services/puppetdb-status", timeout=5)
        if code not in (200, 503):
            return None
        try:
            return json.loads(body).get("state")
        except ValueError:
            return None

    def query(self, pql: str) -> list:
        code, body = self._curl("-G", f"{URL}/pdb/query/v4", "--data-urlencode", f"query={pql}")
        if code != 200:
            raise PuppetDBError(f"PQL {pql!r} on {self.host.fqdn}: HTTP {code}: {body[:500]}")
        return json.loads(body)

    def submit(self, command: str, version: int, certname: str, payload: dict, *, wait_s: int = 60) -> dict:
        """POST a command to ``/pdb/cmd/v1`` and wait for PuppetDB to process it."""
        params = urllib.parse.urlencode({"command": command, "version": version, "certname": certname,
                                         "producer-timestamp": payload.get("producer_timestamp", _now()),
                                         "secondsToWaitForCompletion": wait_s})
        inside = f"/var/tmp/pe-ha-lab-command-{uuid.uuid4().hex}.json"  # one per command: fill sends several at once
        staging = self.host.path(inside)
        staging.write_text(json.dumps(payload))
        try:
            code, body = self._curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                                    f"@{inside}", f"{URL}/pdb/cmd/v1?{params}", timeout=wait_s + 10)
        finally:
            staging.unlink(missing_ok=True)
        if code != 200:
            raise PuppetDBError(f"{command} for {certname} on {self.host.fqdn}: HTTP {code}: {body[:500]}")
        answer = json.loads(body)
        if answer.get("timed_out") or answer.get("processed") is False:
            raise PuppetDBError(f"{command} for {certname} on {self.host.fqdn} was not processed: {answer}")
        return answer


def _now(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the data PuppetDB is fed: facts, a catalog and reports per node, through its command API ----------------


def node_commands(certname: str, *, index: int, reports: int, resources: int, producer: str) -> list[tuple[str, int, dict]]:
    """``replace facts`` v5, ``replace catalog`` v9 and ``reports`` x ``store report`` v8 for one node, as an agent
    run sends them (PuppetDB's wire formats: documentation/wire_format/*.markdown in puppetlabs/puppetdb)."""
    env = "production"
    facts = {"certname": certname, "environment": env, "producer_timestamp": _now(), "producer": producer,
             "values": {"os": {"family": "Debian", "release": {"major": "12"}}, "fqdn": certname,
                        "memorysize_mb": 2048 + index, "processors": {"count": 2}, "region": "east" if index % 2 else "west",
                        "networking": {"ip": f"10.1.{index // 250}.{index % 250}", "hostname": certname.split(".")[0]},
                        "packages_count": 300 + index}}
    resources_list = [{"type": "Class", "title": "Main", "exported": False, "file": None, "line": None,
                       "tags": ["class", "main"], "parameters": {}}]
    resources_list += [{"type": "File", "title": f"/etc/app/{i}.conf", "exported": False,
                        "file": "/etc/puppetlabs/code/environments/production/manifests/site.pp", "line": 10 + i,
                        "tags": ["file", "class"], "parameters": {"ensure": "file", "content": f"setting {i} = {index}\n",
                                                                  "mode": "0644"}}
                       for i in range(resources)]
    catalog = {"certname": certname, "version": str(1700000000 + index), "environment": env,
               "transaction_uuid": str(uuid.uuid4()), "catalog_uuid": str(uuid.uuid4()), "code_id": None,
               "job_id": None, "producer_timestamp": _now(), "producer": producer, "resources": resources_list,
               "edges": [{"source": {"type": "Class", "title": "Main"}, "target": {"type": "File", "title": r["title"]},
                          "relationship": "contains"} for r in resources_list[1:]]}
    out: list[tuple[str, int, dict]] = [("replace facts", 5, facts), ("replace catalog", 9, catalog)]
    for n in range(reports):
        at = timedelta(days=-((reports - 1 - n) % 4), minutes=-(reports - n) * 30)  # spread over the last days
        events = [{"status": "success", "timestamp": _now(at), "property": "content", "name": "content",
                   "new_value": "{md5}new", "old_value": "{md5}old", "message": "content changed",
                   "corrective_change": False}
                  for i in range(min(2, resources))]
        out.append(("store report", 8, {
            "certname": certname, "environment": env, "puppet_version": "7.23.0", "report_format": 10,
            "configuration_version": str(1700000000 + index), "start_time": _now(at - timedelta(seconds=20)),
            "end_time": _now(at), "producer_timestamp": _now(at), "producer": producer,
            "transaction_uuid": str(uuid.uuid4()), "catalog_uuid": catalog["catalog_uuid"], "code_id": None,
            "job_id": None, "cached_catalog_status": "not_used", "status": "changed", "noop": False,
            "noop_pending": False, "corrective_change": False, "type": "agent",
            "logs": [{"file": None, "line": None, "level": "notice", "message": "Applied catalog in 1.2 seconds",
                      "source": "Puppet", "tags": ["notice"], "time": _now(at)}],
            "metrics": [{"category": "time", "name": "total", "value": 1.2}],
            "resources": [{"timestamp": _now(at), "resource_type": "File", "resource_title": f"/etc/app/{i}.conf",
                           "skipped": False, "file": None, "line": None,
                           "containment_path": ["Stage[main]", "Main", f"File[/etc/app/{i}.conf]"],
                           "corrective_change": False, "events": [e]} for i, e in enumerate(events)]}))
    return out


def fill(db: RealPuppetDB, nodes: int, *, reports: int = 3, resources: int = 20, first: int = 0,
         senders: int = 4) -> float:
    """Feed ``nodes`` simulated agents' facts, catalogs and reports through PuppetDB's command API, ``senders``
    agents at once (each agent's commands in order, as one agent run sends them)."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    producer = db.cfg.master.fqdn

    def one_agent(i: int) -> None:
        for command, version, payload in node_commands(f"pdbnode{i:05d}.lab.test", index=i, reports=reports,
                                                       resources=resources, producer=producer):
            db.submit(command, version, payload["certname"], payload)

    with ThreadPoolExecutor(max_workers=senders) as pool:
        for done in [pool.submit(one_agent, i) for i in range(first, first + nodes)]:
            done.result()
    return time.monotonic() - started


# Questions whose answers must be the same from the master's PuppetDB and the replica's on the copy.
ACCEPTANCE_QUERIES = {
    "nodes": "nodes[certname, catalog_timestamp, facts_timestamp, report_timestamp, latest_report_hash] "
             "{ order by certname }",
    "facts": "facts[count()] {}",
    "reports": "reports[count()] {}",
    "resources": "resources[count()] {}",
    "events": "events[count()] { certname ~ \".\" }",
    "catalogs": "catalogs[count()] {}",
    "fact_contents": "fact_contents[count()] {}",
}


def answers(db: RealPuppetDB) -> dict[str, list]:
    return {name: db.query(pql) for name, pql in ACCEPTANCE_QUERIES.items()}


def seed(cfg: LabConfig, nodes: int, *, reports: int = 3, resources: int = 20) -> dict[str, float]:
    """The real profile's pe-puppetdb: the master's PuppetDB migrates its empty database, then ``nodes`` agents'
    data arrive through its command API. The schema it built, with its recorded migrations, becomes what a
    provisioned replica's PuppetDB migrates to (the simulator's provision step), so both ends have PuppetDB's own
    schema and the replica's PuppetDB starts on it."""
    for h in (cfg.master, cfg.replica):
        write_service_script(cfg, h)
    master = RealPuppetDB(cfg, cfg.master)
    started = master.start()
    filled = fill(master, nodes, reports=reports, resources=resources)
    schema = "\n".join(line for line in schema_dump(cfg, cfg.master).splitlines()
                       if not line.startswith("COMMENT ON EXTENSION"))  # owned by the superuser, not pe-puppetdb
    # With the migrations it records: else the replica's PuppetDB would migrate again over the tables and fail to
    # start ("relation ... already exists"), as it did once provisioning waited for it.
    schema += "\n" + node_run(cfg.master, "pg_dump", "-h", "/run/postgresql", "--data-only", "--no-owner",
                              "--no-privileges", "-t", "public.schema_migrations", "-d", "pe-puppetdb",
                              as_postgres=True, timeout=120).stdout
    for h in cfg.hosts:
        h.path("/opt/puppetlabs/sim/puppetdb_schema.sql").write_text(schema + "\n")
    return {"start": started, "fill": filled}


def stop_all(cfg: LabConfig) -> None:
    for h in cfg.hosts:
        if h.has_postgres:
            RealPuppetDB(cfg, h).stop()


def schema_dump(cfg: LabConfig, h: Host) -> str:
    """``pg_dump --schema-only`` of ``h``'s pe-puppetdb (what PuppetDB's migrations built)."""
    return node_run(h, "pg_dump", "-h", "/run/postgresql", "--schema-only", "--no-owner", "--no-privileges",
                    "-d", "pe-puppetdb", as_postgres=True, timeout=120).stdout



