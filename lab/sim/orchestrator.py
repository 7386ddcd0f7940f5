"""pe-ha lab simulator (not PE): PE's orchestrator, simulated: the jobs API (POST /command/deploy, /command/stop;
GET /jobs/<id>, /jobs/<id>/nodes) that runs the agent on the nodes PuppetDB knows as active and reports each run. Bodies follow PE's documented samples (tests/contract/samples; docs/simulator.md)."""

import datetime
import itertools
import subprocess
import threading

from base import Route, certname, ssh, state
from puppetdb import pdb_nodes


def active_nodes():
    """What ``nodes {deactivated is null and expired is null}`` finds: the lab's hosts PuppetDB has not deactivated."""
    s = state()
    deactivated = {n["certname"] for n in pdb_nodes() if n["deactivated"]}
    return [n for n in sorted(s["lab_hosts"]) if n not in deactivated and n != s.get("promoted_from")]


def agent_run_on(node):
    if node == certname():
        from agent import cmd_agent_subprocess  # agent imports the services, which import this module

        return cmd_agent_subprocess()
    try:
        return ssh(node, "/opt/puppetlabs/bin/puppet agent -t", timeout=300).returncode
    except subprocess.TimeoutExpired:
        return 124


# -- the jobs API (in the orchestration services' daemon: jobs live as long as the service) ------------------

_JOBS = {}
_LOCK = threading.Lock()
_IDS = itertools.count(1)


def _now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _url(job_id, tail=""):
    return "https://%s:8143/orchestrator/v1/jobs/%s%s" % (certname(), job_id, tail)


def _error(code, kind, msg):
    return code, {"kind": "puppetlabs.orchestrator/" + kind, "msg": msg, "details": {}}


def _enter(job, new_state):
    now = _now()
    if job["status"]:
        job["status"][-1]["exit_time"] = now
    job["status"].append({"state": new_state, "enter_time": now, "exit_time": None})
    job["state"] = new_state


def _deploy(port, path, body):
    if not isinstance(body, dict) or not isinstance(body.get("environment"), str):
        return _error(400, "validation-error", "environment is required")
    scope = body.get("scope") or {}
    if not isinstance(scope, dict) or len(scope) != 1:
        return _error(400, "validation-error", "scope must contain exactly one of nodes, query, node_group")
    if body["environment"] == "" and body.get("enforce_environment", True) is not False:
        return _error(400, "validation-error", "enforce_environment must be false when environment is empty")
    if "nodes" in scope:
        targets = sorted(set(scope["nodes"]))
    elif "query" in scope and "deactivated is null" in scope["query"]:
        targets = active_nodes()
    else:
        return _error(400, "validation-error", "this simulator models scope nodes or the active-nodes query")
    with _LOCK:
        job_id = str(next(_IDS))
        now = _now()
        job = {"id": _url(job_id), "name": job_id, "command": "deploy", "type": "deploy", "state": "new",
               "options": {"concurrency": body.get("concurrency"), "noop": bool(body.get("noop")), "trace": False,
                           "debug": False, "scope": scope, "enforce_environment": body.get("enforce_environment", True),
                           "environment": body["environment"], "evaltrace": False, "target": None,
                           "description": body.get("description", "")},
               "node_count": len(targets),
               "owner": {"email": "", "is_revoked": False, "last_login": now, "is_remote": False, "login": "admin",
                         "is_superuser": True, "id": "42bf351c-f9ec-40af-84ad-e976fec7f4bd", "role_ids": [1],
                         "display_name": "Administrator", "is_group": False},
               "description": body.get("description", ""), "timestamp": now, "started_timestamp": now,
               "finished_timestamp": None, "duration": None, "environment": {"name": body["environment"]},
               "status": [], "nodes": {"id": _url(job_id, "/nodes")}, "report": {"id": _url(job_id, "/report")},
               "events": {"id": _url(job_id, "/events")}, "userdata": body.get("userdata") or {},
               "_nodes": {n: {"name": n, "state": "new", "start_timestamp": None, "finish_timestamp": None,
                              "timestamp": now, "duration": None, "transaction_uuid": None,
                              "details": {"message": ""}, "result": {}} for n in targets},
               "_stop": False, "_t0": datetime.datetime.now(datetime.UTC)}
        for step in ("new", "ready", "running"):  # PE's sample records each state the job passed through
            _enter(job, step)
        _JOBS[job_id] = job
    threading.Thread(target=_run_job, args=(job,), daemon=True).start()
    return 202, {"job": {"id": job["id"], "name": job_id}}


def _run_job(job):
    limit = threading.Semaphore(8)  # PE's default concurrency bound (global_concurrent_compiles)

    def run_one(node):
        with limit:
            entry = job["_nodes"][node]
            with _LOCK:
                if job["_stop"]:
                    entry.update(state="stopped", timestamp=_now(), details={"message": "job stopped"})
                    return
                entry.update(state="running", start_timestamp=_now(), timestamp=_now())
            code = agent_run_on(node)
            ok = code in (0, 2)
            with _LOCK:
                now = _now()
                entry.update(state="finished" if ok else "failed", finish_timestamp=now, timestamp=now,
                             details={"message": ("Finished puppet run on %s - Success!" % node) if ok else
                                      ("Error running puppet on %s: puppet agent -t exited %d" % (node, code))})

    threads = [threading.Thread(target=run_one, args=(n,)) for n in job["_nodes"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with _LOCK:
        states = {e["state"] for e in job["_nodes"].values()}
        _enter(job, "stopped" if job["_stop"] else "failed" if states - {"finished"} else "finished")
        job["finished_timestamp"] = _now()
        job["duration"] = "%.1f" % (datetime.datetime.now(datetime.UTC) - job["_t0"]).total_seconds()


def _stop(port, path, body):
    job = _JOBS.get(str((body or {}).get("job", "")))
    if job is None:
        return _error(404, "unknown-job", "no job %s" % (body or {}).get("job"))
    with _LOCK:
        job["_stop"] = True
        if job["state"] == "running":
            _enter(job, "stopping")
    return 202, {"job": {"id": job["id"], "name": job["name"]}}


def _jobs(port, path, body):
    rest = path[len("/orchestrator/v1/jobs/"):].strip("/").split("/")
    if not rest[0].isdigit():
        return _error(400, "validation-error", "job id must be an integer")
    job = _JOBS.get(rest[0])
    if job is None:
        return _error(404, "unknown-job", "no job %s" % rest[0])
    with _LOCK:
        if rest[1:] == ["nodes"]:
            items = [dict(e) for _, e in sorted(job["_nodes"].items())]
            return 200, {"next-events": {"id": _url(job["name"], "/events"), "event": "0"}, "items": items}
        if rest[1:]:
            return _error(404, "not-found", "this simulator models /jobs/<id> and /jobs/<id>/nodes")
        return 200, {k: v for k, v in job.items() if not k.startswith("_")}


ROUTES = [
    Route("POST", 8143, "/orchestrator/v1/command/deploy", _deploy, auth=True),
    Route("POST", 8143, "/orchestrator/v1/command/stop", _stop, auth=True),
    Route("GET", 8143, "/orchestrator/v1/jobs/", _jobs, prefix=True, auth=True),
]
