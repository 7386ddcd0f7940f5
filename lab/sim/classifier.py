"""pe-ha lab simulator (not PE): PE's node classifier, simulated: the groups PE installs, their replication to the replica, rules, and the catalog settings they give an agent."""

import json
import subprocess

from base import (
    GROUPS,
    ROOT_GROUP,
    TOKENS,
    Route,
    StateLock,
    _read_json,
    _write_json,
    certname,
    log,
    role,
    ssh,
    state,
)


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


def _lookup(tree, path):
    for key in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def rule_matches(rule, trusted, facts):
    """PE's rule grammar over a node's trusted facts and facts: ``"name"`` is the certname, a plain string or
    ``["fact", ...]`` a (structured) fact, ``["trusted", ...]`` a path into ``$trusted``."""
    if not rule:
        return False
    op = rule[0]
    if op in ("and", "or"):
        results = [rule_matches(r, trusted, facts) for r in rule[1:]]
        return all(results) if op == "and" else any(results)
    if op == "not":
        return not rule_matches(rule[1], trusted, facts)
    field, value = rule[1], rule[2]
    if field == "name":
        actual = trusted.get("certname")
    elif isinstance(field, list) and field[0] == "trusted":
        actual = _lookup(trusted, field[1:])
    elif field == ["fact", "aio_agent_version"]:
        actual = "5.5.0"  # the simulated agent's version; its facts carry only what rules in pe-ha read
    elif isinstance(field, list) and field[0] == "fact":
        actual = _lookup(facts, field[1:])
    else:
        actual = facts.get(field)
    if actual is None:
        return False
    if op == "=":
        return actual == value
    if op == "~":
        import re
        return re.search(value, actual) is not None
    return False


def compile_catalog(body):
    """The part of a catalog the simulator models: puppet_enterprise::profile::agent settings. Every child group
    of PE Agent whose rule matches contributes; two sibling groups setting the same parameter to different values
    is a classification conflict, and the catalog request fails, as PE's classifier fails it."""
    trusted = body.get("trusted") or {}
    facts = body.get("facts") or {}
    node = trusted.get("certname", "")
    s = state()
    infra = node in (s.get("master"), s.get("replica"))
    groups = groups_by_name()
    params = dict(groups.get("PE Agent", {}).get("classes", {}).get("puppet_enterprise::profile::agent", {}))
    agent = groups.get("PE Agent")
    from_child = {}
    for g in (groups.values() if agent else ()):
        if g["parent"] != agent["id"]:
            continue
        matches = infra if g["name"] == "PE Infrastructure Agent" else rule_matches(g["rule"], trusted, facts)
        if not matches:
            continue
        for key, value in g.get("classes", {}).get("puppet_enterprise::profile::agent", {}).items():
            if value is None:
                continue
            if key in from_child and from_child[key][1] != value:
                return 500, {"kind": "classification-conflict",
                             "msg": "Classification of %s failed due to a classification conflict: "
                                    "puppet_enterprise::profile::agent::%s is set by %s and by %s"
                                    % (node, key, from_child[key][0], g["name"])}
            from_child[key] = (g["name"], value)
    params.update({k: v for k, (_, v) in from_child.items()})
    settings, files = {}, {}
    if params.get("server_list"):
        settings["server_list"] = ",".join(params["server_list"])
    if params.get("pcp_broker_list"):
        files[PXP_AGENT_CONF] = pxp_agent_conf(params["pcp_broker_list"])
    return 200, {"node": node, "compiled_by": certname(), "settings": settings, "files": files}


PXP_AGENT_CONF = "/etc/puppetlabs/pxp-agent/pxp-agent.conf"


def pxp_agent_conf(pcp_broker_list):
    """pcp_broker_list is no puppet.conf setting: PE's puppet_enterprise::profile::agent writes it as pxp-agent's
    ``broker-ws-uris`` (pxp-agent's README, "broker-ws-uris"; a PE 2018.1 agent's pxp-agent.conf, managed by that
    class, in gist jessereynolds/e2ba966b202de183ac9053a8d5c4aed1)."""
    uris = []
    for entry in pcp_broker_list:
        host, _, port = entry.strip().partition(":")
        uris.append("wss://%s:%s/pcp2/" % (host, port or "8142"))
    return json.dumps({"broker-ws-uris": uris}, indent=2) + "\n"


def set_agent_params(group_name, server_list, pcp_list):
    groups = groups_by_name()
    params = {"server_list": server_list or None, "pcp_broker_list": pcp_list or None}
    upsert_group({"classes": {"puppet_enterprise::profile::agent": params}}, groups[group_name]["id"])


def _without_pins(rule, nodes):
    """The rule with its ``["=", "name", node]`` terms for ``nodes`` removed (and whether any was)."""
    if not isinstance(rule, list) or rule[:1] != ["or"]:
        return rule, False
    kept = [term for term in rule[1:] if not (isinstance(term, list) and len(term) == 3 and term[:2] == ["=", "name"]
                                              and term[2] in nodes)]
    return (["or", *kept] if kept else None), len(kept) < len(rule) - 1


def unpin_from_all(body):
    """POST /v1/commands/unpin-from-all: ``{"nodes": "foo"}`` or a list; answers the groups each node left."""
    nodes = (body or {}).get("nodes")
    nodes = [nodes] if isinstance(nodes, str) else nodes
    if not isinstance(nodes, list) or not nodes:
        return 400, {"kind": "schema-violation", "msg": "the body must name the nodes to unpin"}
    left = {n: [] for n in nodes}
    with StateLock():
        groups = _read_json(GROUPS, [])
        for g in groups:
            for node in nodes:
                g["rule"], removed = _without_pins(g.get("rule"), [node])
                if removed:
                    left[node].append({"id": g["id"], "name": g["name"], "environment": g["environment"]})
                    g["serial_number"] = g.get("serial_number", 0) + 1
        _write_json(GROUPS, groups, 0o600)
    replicate_console()
    return 200, {"nodes": [{"name": n, "groups": gs} for n, gs in left.items() if gs]}


def _write(port, path, body):
    if role() != "master":
        return 503, {"kind": "read-only", "msg": "classifier on a replica is read-only"}
    if path == "/classifier-api/v1/import-hierarchy":
        if not isinstance(body, list) or not any(g.get("id") == ROOT_GROUP for g in body):
            return 400, {"kind": "schema-violation", "msg": "hierarchy must contain the root group"}
        save_groups(body)
        return 204, "", "text/plain"
    if path == "/classifier-api/v1/commands/unpin-from-all":
        return unpin_from_all(body)
    if path == "/classifier-api/v1/groups":
        group = upsert_group(body or {}, None)
        return 303 if group is None else 200, group or {}
    gid = path.rsplit("/", 1)[1]
    group = upsert_group(body or {}, gid)
    if group is None:
        return 404, {"kind": "not-found", "msg": gid}
    return 200, group


ROUTES = [
    Route("GET", 4433, "/classifier-api/v1/groups", lambda port, path, body: (200, _read_json(GROUPS, [])), auth=True),
    Route("POST", 4433, "/classifier-api/v1/", _write, prefix=True, auth=True),
    # puppetserver's catalog compile, as far as the simulator models it (the classification's agent settings)
    Route("POST", 8140, "/sim/v1/catalog", lambda port, path, body: compile_catalog(body or {})),
]
