"""pe-ha lab simulator (not PE): PE's RBAC service, simulated: tokens (issue, authenticate, expiry and revocation) and the puppet-access tool."""

import hashlib
import os
import sys
import time

from base import (
    SIM,
    TOKENS,
    Route,
    SimError,
    StateLock,
    _read_json,
    _write_json,
    _write_json_text,
    certname,
    https,
    option,
    state,
)
from classifier import replicate_console


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def token_info(token, entry):
    """The body of POST /rbac-api/v2/auth/token/authenticate, keyed as PE documents it (contract sample
    rbac-authenticate-200.json: ``expiration`` is ISO 8601, there is no numeric expiry)."""
    user_id = "42bf351c-f9ec-40af-84ad-e976fec7f4bd"
    issued = entry.get("issued", entry["expires"] - 3600)
    user = entry["user"]
    admin = user == "admin"  # PE's built-in superuser; other logins are the lab's ordinary users
    return {"description": None, "creation": _iso(issued), "email": "%s@%s" % (user, certname()), "is_revoked": False,
            "last_active": _iso(time.time()), "last_login": _iso(issued), "expiration": _iso(entry["expires"]),
            "is_remote": False, "client": None, "login": user, "is_superuser": admin,
            "label": None, "id": hashlib.sha256(token.encode()).hexdigest()[:36], "role_ids": [1] if admin else [],
            "user_id": user_id if admin else hashlib.sha256(user.encode()).hexdigest()[:36], "timeout": None,
            "display_name": "Administrator" if admin else user, "is_group": False}


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


def _authenticate(port, path, body):
    token = (body or {}).get("token")
    problem = token_problem(token)
    if problem:
        return problem[0], {"kind": problem[1], "msg": problem[2]}
    entry = _read_json(TOKENS, {})[hashlib.sha256(token.encode()).hexdigest()]
    return 200, token_info(token, entry)


ROUTES = [
    Route("POST", 4433, "/rbac-api/v2/auth/token/authenticate", _authenticate),
    Route("POST", 4433, "/rbac-api/v1/auth/token", lambda port, path, body: (200, issue_token(body or {}))),
]
