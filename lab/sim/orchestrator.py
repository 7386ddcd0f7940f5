"""pe-ha lab simulator (not PE): PE's orchestrator, simulated: `puppet job run` over the agents PuppetDB knows."""

import os
import subprocess
import threading

from agent import cmd_agent_subprocess
from base import SimError, certname, flag, option, role, ssh, state
from puppetdb import pdb_nodes
from rbac import read_token_file, token_problem


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
