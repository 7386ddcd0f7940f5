"""RBAC tokens for the lab's simulated console (the simulator's token store on master and replica)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from lab.config import LAB_DIR, LabConfig

STORE = "/etc/puppetlabs/console-services/rbac-tokens.json"


def _write(cfg: LabConfig, store: dict) -> None:
    for h in (cfg.master, cfg.replica):
        path = h.path(STORE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(store))
        path.chmod(0o600)


def _read(cfg: LabConfig) -> dict:
    path = cfg.master.path(STORE)
    return json.loads(path.read_text()) if path.exists() else {}


def issue_admin_token(cfg: LabConfig, *, lifetime_s: float) -> str:
    """Issue an admin token valid for ``lifetime_s``; store it for pe-ha in LAB_DIR/secrets/token."""
    token = "sim-" + secrets.token_urlsafe(32)
    store = _read(cfg)
    store[hashlib.sha256(token.encode()).hexdigest()] = {"user": "admin", "expires": time.time() + lifetime_s}
    _write(cfg, store)
    path = LAB_DIR / "secrets" / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def issue_user_token(cfg: LabConfig, login: str, *, lifetime_s: float = 3600) -> str:
    """A token for the PE user ``login`` (as if they ran `puppet-access login`); RBAC answers with that login."""
    token = "sim-" + secrets.token_urlsafe(32)
    store = _read(cfg)
    store[hashlib.sha256(token.encode()).hexdigest()] = {"user": login, "expires": time.time() + lifetime_s}
    _write(cfg, store)
    return token


def expire_token_in(cfg: LabConfig, token: str, seconds: float) -> None:
    """Fault switch: make ``token`` expire ``seconds`` from now."""
    store = _read(cfg)
    store[hashlib.sha256(token.encode()).hexdigest()]["expires"] = time.time() + seconds
    _write(cfg, store)
