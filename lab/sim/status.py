"""pe-ha lab simulator (not PE): PE's status API, simulated: each service's status body per port, as trapperkeeper-status returns it, and `puppet infrastructure status`'s view."""

import threading
import time

from base import PORT_KEYS, STATUS_ENTRIES, VERSION, Route, SimError, fault_active, https, role, state
from puppetdb import local_db_up, replication_status


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
    return out


def host_entries(host, host_role):
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
    for key, display, port, url, _, kind in keys:
        st = (per_port[port] or {}).get(key)
        entries.append({"service": key, "state": st["state"] if st else "unreachable",
                        "status": st["status"] if st else None, "display_name": display, "server": host,
                        "url": url % host, "type": kind,
                        "alerts": st["active_alerts"] if st else []})
    return entries


def infra_status(only_host=None):
    s = state()
    hosts = [(s["master"], "master")]
    if s.get("replica"):
        hosts.append((s["replica"], "replica"))
    out = []
    for host, r in hosts:
        if only_host and host != only_host:
            continue
        out += host_entries(host, r)
    if only_host and not out:
        raise SimError("Error: %s is not the primary master or a provisioned replica" % only_host)
    return out


def _services(port, path, body):
    statuses = port_statuses(port)
    return 200 if all(v["state"] == "running" for v in statuses.values()) else 503, statuses


def one_service(port, path, body):
    key = path.rsplit("/", 1)[1]
    statuses = port_statuses(port)
    if key not in statuses:  # trapperkeeper-status's 404 (contract sample status-service-404-not-found.json)
        return 404, {"kind": "service-not-found", "msg": "No status information found for service %s" % key}
    # a single service's body is flat and names the service (trapperkeeper-status build-json-routes)
    return 200 if statuses[key]["state"] == "running" else 503, dict(statuses[key], service_name=key)


def _simple(port, path, body):
    statuses = port_statuses(port)
    key = path[len("/status/v1/simple"):].strip("/")
    states = [v["state"] for k, v in statuses.items() if not key or k == key or key == "master"]
    if not states:
        return 404, "not found: %s" % key, "text/plain"
    worst = "running" if all(x == "running" for x in states) else next(x for x in states if x != "running")
    return 200 if worst == "running" else 503, worst, "text/plain"


ROUTES = [
    Route("GET", None, "/status/v1/services", _services),
    Route("GET", None, "/status/v1/services/", one_service, prefix=True),
    Route("GET", None, "/status/v1/simple", _simple, prefix=True),
]
