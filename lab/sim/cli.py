"""pe-ha lab simulator (not PE): The simulator's entry points: the PE CLI tools by argv, and the lab's own `pe-sim` admin commands."""

import json
import os
import shlex
import sys

from agent import cmd_agent, cmd_config, cmd_resource
from base import (
    FAULTS,
    GROUPS,
    TOKENS,
    SimError,
    StateLock,
    _write_json,
    check_infra_flags,
    faults,
    log,
    peer_host,
    require_root_session,
    slow_fault,
    ssh,
    state,
    update_state,
)
from classifier import default_groups
from infrastructure import INFRA, admin_become_agent, admin_provision_target
from puppetdb import cmd_node, pdb_sync_once
from rbac import cmd_access
from services import ensure_role_services, run_service


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
        slow_fault("transfer")
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
                require_root_session()  # every `puppet infrastructure` subcommand (PE's HA guide)
                return INFRA[rest[0]](rest[1:])
            if sub == "resource":
                return cmd_resource(rest)
            if sub == "agent":
                return cmd_agent(rest)
            if sub == "config":
                return cmd_config(rest)
            if sub == "node":
                return cmd_node(rest)
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
