"""A small typed client for PE's HTTPS APIs (status, RBAC, classifier, orchestrator jobs), built on httpx.

TLS always verifies the PE CA (a wrong CA fails closed). httpx errors are translated here into
``ApiUnavailable`` (connect errors, timeouts, 5xx: retryable) and ``AuthError`` (401/403: never
retried). ``transport`` is the test seam: pass ``httpx.MockTransport`` in unit tests.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from pe_ha.errors import ApiError, ApiUnavailable, AuthError, ConfigurationError
from pe_ha.settings import Settings

T = TypeVar("T")
PUPPETSERVER, PUPPETDB, CONSOLE, ORCHESTRATOR, PCP_BROKER, CODE_MANAGER = 8140, 8081, 4433, 8143, 8142, 8170
PE_PORTS = (PUPPETSERVER, PUPPETDB, CONSOLE, ORCHESTRATOR, PCP_BROKER, CODE_MANAGER)
# The ports PE documents for the status API (Code Manager and file sync report on 8140, not 8170).
STATUS_PORTS = (PUPPETSERVER, PUPPETDB, CONSOLE, ORCHESTRATOR)
# A replica runs Puppet Server, PuppetDB and the console services; orchestration and Code Manager
# activate only when it is promoted (PE's HA overview).
REPLICA_STATUS_PORTS = (PUPPETSERVER, PUPPETDB, CONSOLE)


# Severities that do not fail health; PE's status API says "info", its CLI JSON may say "information".
PASSING_SEVERITIES = ("warning", "info", "information")


def failing_alerts(alerts: Any) -> list[dict[str, Any]]:
    """Alerts that fail health: any severity but a passing one (a missing or unknown severity counts)."""
    return [a for a in alerts or [] if isinstance(a, dict)
            and str(a.get("severity", "error")).lower() not in PASSING_SEVERITIES]


@dataclass(frozen=True)
class ServiceStatus:
    host: str
    port: int
    service: str
    state: str
    status: dict[str, Any] | None
    alerts: list[dict[str, Any]]

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def errors(self) -> list[dict[str, Any]]:
        return failing_alerts(self.alerts)


def parse_services_status(host: str, port: int, status_code: int, text: str) -> list[ServiceStatus]:
    """A ``/status/v1/services`` body: an object of service name -> status. Anything else (an HTML page from
    a load balancer, a string, a list) becomes one ``unknown`` row carrying the body's first 200 characters."""
    import json

    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not body:
        return [ServiceStatus(host, port, f"port {port}", "unknown", None,
                              [{"severity": "error", "message": f"HTTP {status_code}, not a status object: {text[:200]}"}])]
    rows = []
    for key, value in sorted(body.items()):
        if not isinstance(value, dict):
            rows.append(ServiceStatus(host, port, key, "unknown", None,
                                      [{"severity": "error", "message": f"not a status object: {str(value)[:200]}"}]))
            continue
        alerts = value.get("active_alerts")
        status = value.get("status")
        rows.append(ServiceStatus(host, port, key, str(value.get("state", "unknown")),
                                  status if isinstance(status, dict) else None,
                                  [a for a in alerts if isinstance(a, dict)] if isinstance(alerts, list) else []))
    return rows


def token_expiration(info: dict[str, Any]) -> dt.datetime | None:
    """``expiration`` of ``POST /rbac-api/v2/auth/token/authenticate``: ISO 8601 (``2021-06-02T02:24:30Z``), or
    null for a token without one. Anything unreadable is None: the caller says the expiry is not known."""
    value = info.get("expiration")
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """PE's CA (and the client certificate, when set); a file gone or unreadable since the run's start check is
    named by its setting."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_cert))
    except OSError as exc:
        raise ConfigurationError("PEHA_CA_CERT", f"{settings.ca_cert} cannot be read ({exc.strerror or exc})") from None
    if settings.client_cert and settings.client_key:
        try:
            context.load_cert_chain(str(settings.client_cert), str(settings.client_key))
        except OSError as exc:
            raise ConfigurationError("PEHA_CLIENT_CERT", f"{settings.client_cert} or {settings.client_key} cannot be "
                                     f"read ({exc.strerror or exc})") from None
    return context


class PEApi:
    """PE's HTTPS APIs on the hosts of one installation."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        timeout = httpx.Timeout(settings.http_read_timeout_s, connect=settings.http_connect_timeout_s)
        verify: ssl.SSLContext | bool = True
        if transport is None:
            verify = _tls_context(settings)
        self._client = httpx.Client(verify=verify, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def _base(self, host: str, port: int) -> str:
        entry = self.settings.host(host)
        return f"https://{entry.address or entry.name}:{port}"

    def request(self, method: str, host: str, port: int, path: str, *, token: SecretStr | None = None,
                json: Any = None, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        entry = self.settings.host(host)
        url = self._base(host, port) + path
        headers = {"X-Authentication": token.get_secret_value()} if token is not None else {}
        extensions: dict[str, Any] = {}
        if entry.address:
            # Connect to the address, but verify the certificate against the certname (SNI and hostname check):
            # PE's CA issues certificates with DNS names only.
            extensions["sni_hostname"] = entry.name
            headers["Host"] = f"{entry.name}:{port}"
        try:
            response = self._client.request(method, url, headers=headers, json=json, extensions=extensions)
        except httpx.TimeoutException as exc:
            raise ApiUnavailable(f"timed out ({type(exc).__name__})", url=url,
                                 hint="the host may be down or cut off") from None
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ApiError("TLS verification failed", url=url,
                               hint="check PEHA_CA_CERT: it must be the PE CA that signed this host") from None
            raise ApiUnavailable(f"connection failed: {exc}", url=url) from None
        if response.status_code in (401, 403):
            kind = _kind(response)
            hint = ("renew the token (puppet-access login --lifetime 2h) and update PEHA_RBAC_TOKEN_FILE"
                    if "token" in kind or response.status_code == 401 else "the token's user lacks permission")
            raise AuthError(f"HTTP {response.status_code} {kind}", url=url, status=response.status_code, hint=hint)
        if response.status_code >= 500 and response.status_code not in ok:
            raise ApiUnavailable(f"HTTP {response.status_code}", url=url, status=response.status_code)
        if response.status_code not in ok:
            raise ApiError(f"HTTP {response.status_code}: {response.text[:200]}", url=url, status=response.status_code)
        return response

    # -- status -------------------------------------------------------------------------------------

    def services_status(self, host: str, port: int) -> list[ServiceStatus]:
        """``GET /status/v1/services?level=debug`` (200 when all run, 503 otherwise: both are answers)."""
        response = self.request("GET", host, port, "/status/v1/services?level=debug", ok=(200, 503))
        return parse_services_status(host, port, response.status_code, response.text)

    def simple_status(self, host: str, port: int) -> str:
        return self.request("GET", host, port, "/status/v1/simple", ok=(200, 503)).text.strip()

    # -- RBAC ---------------------------------------------------------------------------------------

    def authenticate(self, token: SecretStr, master: str | None = None) -> dict[str, Any]:
        """Validate the token (``POST /rbac-api/v2/auth/token/authenticate``); AuthError when it is not valid."""
        master = master or self.settings.master.name
        response = self.request("POST", master, CONSOLE, "/rbac-api/v2/auth/token/authenticate",
                                json={"token": token.get_secret_value(), "update_last_activity?": False})
        return response.json()

    def login(self, token: SecretStr) -> str:
        """The PE login RBAC names for ``token``: the identity behind an approval or a run's start."""
        login = self.authenticate(token).get("login")
        if not isinstance(login, str) or not login:
            raise ApiError("RBAC's answer for the token names no login",
                           url=f"https://{self.settings.master.name}:{CONSOLE}/rbac-api/v2/auth/token/authenticate")
        return login

    # -- orchestrator ---------------------------------------------------------------------------------

    def deploy(self, token: SecretStr, master: str, query: str) -> str:
        """Run Puppet on the nodes ``query`` finds, each in its own environment (what ``puppet job run
        --no-enforce-environment --query`` asks for): ``POST /orchestrator/v1/command/deploy``. Returns the job id."""
        response = self.request("POST", master, ORCHESTRATOR, "/orchestrator/v1/command/deploy", token=token,
                                json={"environment": "", "enforce_environment": False, "scope": {"query": query}},
                                ok=(200, 202))
        return _parsed(response, parse_job_started)

    def job_state(self, token: SecretStr, master: str, job: str) -> str:
        response = self.request("GET", master, ORCHESTRATOR, f"/orchestrator/v1/jobs/{_job_id(job)}", token=token)
        return _parsed(response, parse_job_state)

    def job_nodes(self, token: SecretStr, master: str, job: str) -> list[JobNode]:
        response = self.request("GET", master, ORCHESTRATOR, f"/orchestrator/v1/jobs/{_job_id(job)}/nodes",
                                token=token)
        return _parsed(response, parse_job_nodes)

    def stop_job(self, token: SecretStr, master: str, job: str) -> None:
        """``POST /orchestrator/v1/command/stop``: nodes not yet started are not run; running ones finish."""
        self.request("POST", master, ORCHESTRATOR, "/orchestrator/v1/command/stop", token=token,
                     json={"job": _job_id(job)}, ok=(200, 202))

    # -- classifier ---------------------------------------------------------------------------------

    def groups(self, token: SecretStr, host: str | None = None) -> list[dict[str, Any]]:
        response = self.request("GET", host or self.settings.master.name, CONSOLE, "/classifier-api/v1/groups",
                                token=token)
        return response.json()

    def update_group(self, token: SecretStr, group_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", self.settings.master.name, CONSOLE, f"/classifier-api/v1/groups/{group_id}",
                            token=token, json=changes).json()

    def create_group(self, token: SecretStr, group: dict[str, Any]) -> dict[str, Any]:
        response = self.request("POST", self.settings.master.name, CONSOLE, "/classifier-api/v1/groups",
                                token=token, json=group, ok=(200, 201, 303))
        return response.json() if response.content else {}


# A job's states (the orchestrator's jobs endpoints): these three are final.
JOB_FINAL_STATES = ("finished", "failed", "stopped")


@dataclass(frozen=True)
class JobNode:
    """One node of an orchestrator job (``GET /orchestrator/v1/jobs/<id>/nodes``)."""

    name: str
    state: str  # new, ready, running, stopping, stopped, finished or failed
    message: str  # why it failed, where the orchestrator says so


def parse_job_started(body: Any) -> str:
    """The job's id (its ``name``, a stringified number) from ``POST /command/deploy``'s 202 answer."""
    name = body.get("job", {}).get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.isdigit():
        raise ValueError(f"the orchestrator's answer names no job: {str(body)[:200]}")
    return name


def parse_job_state(body: Any) -> str:
    state = body.get("state") if isinstance(body, dict) else None
    if not isinstance(state, str) or not state:
        raise ValueError(f"the orchestrator's job has no state: {str(body)[:200]}")
    return state


def parse_job_nodes(body: Any) -> list[JobNode]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"the orchestrator's job nodes have no items: {str(body)[:200]}")
    nodes = []
    for item in items:
        details = item.get("details") if isinstance(item.get("details"), dict) else {}
        result = item.get("result") if isinstance(item.get("result"), dict) else {}
        message = details.get("message") or result.get("msg") or result.get("message") or ""
        nodes.append(JobNode(name=str(item.get("name", "")), state=str(item.get("state", "")), message=str(message)))
    return nodes


def _parsed(response: httpx.Response, parse: Callable[[Any], T]) -> T:
    """``parse`` the answer's JSON; a body PE's documents do not describe becomes an ApiError naming the URL."""
    try:
        return parse(response.json())
    except ValueError as exc:
        raise ApiError(str(exc), url=str(response.url)) from None


def _job_id(job: str) -> str:
    if not job.isdigit():
        raise ValueError(f"orchestrator job id {job!r} is not a number")
    return job


def _kind(response: httpx.Response) -> str:
    try:
        return str(response.json().get("kind", ""))
    except ValueError:
        return ""
