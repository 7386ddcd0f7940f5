"""pe-ha's parsers on PE's documented response bodies and CLI outputs (``samples/``, sources in
``samples/SOURCES.md``), never on the simulator's output. Samples whose evidence level is ``unverified`` are
not keyed on."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest

from pe_ha.errors import AuthError
from pe_ha.pe_api import STATUS_PORTS, PEApi, parse_services_status, token_expiration
from tests.conftest import make_settings

SAMPLES = Path(__file__).parent / "samples"
MANIFEST = {s["file"]: s for s in json.loads((SAMPLES / "MANIFEST.json").read_text())["samples"]}


def sample(name: str) -> str:
    assert MANIFEST[name]["evidence"] != "unverified", f"{name} is unverified: do not key a test on it"
    return (SAMPLES / name).read_text()


# -- RBAC: POST /rbac-api/v2/auth/token/authenticate ---------------------------------------------------


def test_token_expiration_is_read_from_pes_documented_field():
    info = json.loads(sample("rbac-authenticate-200.json"))
    assert "expires" not in info  # the field the old guard read: PE never sends it
    assert token_expiration(info) == dt.datetime(2021, 6, 2, 2, 24, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("2021-06-02T02:24:30Z", dt.datetime(2021, 6, 2, 2, 24, 30, tzinfo=dt.UTC)),
    ("2021-06-01T22:24:31.340Z", dt.datetime(2021, 6, 1, 22, 24, 31, 340000, tzinfo=dt.UTC)),
    ("2021-06-02T04:24:30+02:00", dt.datetime(2021, 6, 2, 2, 24, 30, tzinfo=dt.UTC)),
    (None, None), ("", None), ("tomorrow", None), (1622600670, None),
])
def test_token_expiration_forms(value, expected):
    assert token_expiration({"expiration": value}) == expected


def _api_answering(settings, path_bodies: dict[str, tuple[int, str, str]]) -> PEApi:
    def handler(request: httpx.Request) -> httpx.Response:
        status, ctype, text = path_bodies[request.url.path]
        return httpx.Response(status, headers={"content-type": ctype}, text=text)

    return PEApi(settings, transport=httpx.MockTransport(handler))


def test_short_lived_token_is_refused_with_the_time_left(tmp_path):
    from pe_ha import context
    from tasks.token import validate_token

    settings = make_settings(tmp_path)
    body = json.loads(sample("rbac-authenticate-200.json"))
    body["expiration"] = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api = _api_answering(settings, {"/rbac-api/v2/auth/token/authenticate": (200, "application/json", json.dumps(body))})
    with context.using(settings=settings, api=api) as ctx, pytest.raises(AuthError) as refused:
        validate_token.fn(ctx, min_validity_s=3600)
    import re

    assert re.search(r"expires in (29\d|300) s \(at ", str(refused.value)), str(refused.value)
    assert "less than the 3600 s" in str(refused.value)


def test_long_lived_token_passes(tmp_path):
    from pe_ha import context
    from tasks.token import validate_token

    settings = make_settings(tmp_path)
    body = json.loads(sample("rbac-authenticate-200.json"))
    body["expiration"] = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api = _api_answering(settings, {"/rbac-api/v2/auth/token/authenticate": (200, "application/json", json.dumps(body))})
    with context.using(settings=settings, api=api) as ctx:
        assert validate_token.fn(ctx, min_validity_s=3600)["login"] == "admin"


@pytest.mark.parametrize("name", ["rbac-token-expired-403.json", "rbac-token-revoked-403.json",
                                  "rbac-token-timed-out-403.json", "rbac-token-expired-401.json"])
def test_token_errors_are_auth_errors_naming_the_kind(tmp_path, name):
    settings = make_settings(tmp_path)
    status = MANIFEST[name]["status"]
    api = _api_answering(settings, {"/rbac-api/v2/auth/token/authenticate": (status, "application/json", sample(name))})
    with pytest.raises(AuthError) as refused:
        api.authenticate(settings.rbac_token())
    assert json.loads(sample(name))["kind"] in str(refused.value)
    assert refused.value.status == status


# -- status API ----------------------------------------------------------------------------------------


def test_status_ports_are_the_documented_ones():
    assert sorted(STATUS_PORTS) == [4433, 8081, 8140, 8143]  # Code Manager reports on 8140, not 8170


def test_services_status_200():
    rows = parse_services_status("m", 4433, 200, sample("status-services-4433-200.json"))
    assert {r.service for r in rows} == {"activity-service", "classifier-service", "rbac-service", "status-service"}
    assert all(r.running and r.errors == [] for r in rows)
    rbac = next(r for r in rows if r.service == "rbac-service")
    assert rbac.status is not None and rbac.status["replication"] == {"mode": "none", "status": "none"}


def test_services_status_503_still_carries_the_map():
    rows = parse_services_status("m", 8081, 503, sample("status-services-503-puppetdb-down.json"))
    pdb = next(r for r in rows if r.service == "puppetdb-status")
    assert pdb.state == "error" and not pdb.running
    assert pdb.status is not None and pdb.status["read_db_up?"] is False


@pytest.mark.parametrize("body", [
    "<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>",
    '"a string"', "[1, 2]", "", "{}", "null",
])
def test_services_status_odd_bodies_become_one_unknown_row(body):
    rows = parse_services_status("m", 8140, 503, body)
    assert len(rows) == 1 and rows[0].state == "unknown"
    assert rows[0].errors and body[:40] in rows[0].errors[0]["message"]


def test_services_status_a_service_whose_status_is_a_string():
    # PDB-4836: a failing status callback makes ``status`` a string
    text = json.dumps({"puppetdb-status": {"state": "unknown", "status": "Status check timed out", "active_alerts": []}})
    (row,) = parse_services_status("m", 8081, 503, text)
    assert row.state == "unknown" and row.status is None


def test_warning_alerts_do_not_fail_health_but_errors_do():
    text = json.dumps({"pe-master": {"state": "running", "status": {}, "active_alerts": [
        {"severity": "warning", "message": "JRuby pool is 90% full"}]},
        "puppetdb-status": {"state": "running", "status": {}, "active_alerts": [
            {"severity": "error", "message": "write DB down"}]}})
    rows = {r.service: r for r in parse_services_status("m", 8140, 200, text)}
    assert rows["pe-master"].errors == [] and rows["pe-master"].alerts
    assert [a["message"] for a in rows["puppetdb-status"].errors] == ["write DB down"]


def test_html_503_from_a_load_balancer_is_an_unknown_row_not_a_crash(tmp_path):
    from pe_ha import context
    from tasks.status_api import host_status

    settings = make_settings(tmp_path)
    html = "<html><head><title>503</title></head><body>backend down</body></html>"
    api = _api_answering(settings, {"/status/v1/services": (503, "text/html", html)})
    with context.using(settings=settings, api=api) as ctx:
        rows = host_status.fn(ctx, settings.master.name, (8140,))
    assert rows[0]["state"] == "unknown" and "backend down" in rows[0]["alerts"] and rows[0]["failing_alerts"] == 1


# -- puppet infrastructure status --format json ---------------------------------------------------------


def test_infrastructure_status_capture():
    from tasks.infrastructure import not_operational, summarize

    entries = json.loads(sample("infra-status-json-replica-unreachable.json"))
    assert isinstance(entries, list)
    down = not_operational(entries)
    assert [line for line in down if ": unreachable" in line] and len(down) == 10
    # running, but with database replication inactive: PE says so only in an error alert
    inactive = [line for line in down if ": running" in line]
    assert len(inactive) == 4 and all("Database replication for" in line and "is inactive" in line for line in inactive)
    assert summarize(entries) == f"7 of {len(entries)} services are fully operational"


def test_compilers_are_the_puppet_servers_beside_the_masters():
    from tasks.infrastructure import compilers

    entries = json.loads(sample("infra-status-json-replica-unreachable.json"))
    primary, replica = "pe-primary.example.com", "pe-replica.example.com"
    assert compilers(entries, (primary, replica)) == []  # the capture has no compiler
    assert compilers(entries, (primary,)) == [replica]  # its Puppet Server row is typed "master", as a compiler's is


# -- classifier -------------------------------------------------------------------------------------------


def test_classifier_groups_capture(tmp_path):
    settings = make_settings(tmp_path)
    api = _api_answering(settings, {"/classifier-api/v1/groups": (200, "application/json",
                                                                   sample("classifier-groups-200.json"))})
    groups = api.groups(settings.rbac_token())
    assert all({"id", "name", "parent", "classes"} <= set(g) for g in groups)
    assert any("rule" not in g for g in groups)  # PE Infrastructure has no rule: code must use .get("rule")


# -- orchestrator: POST /command/deploy, GET /jobs/<id>, GET /jobs/<id>/nodes ------------------------------

def test_a_started_job_is_named_by_its_number():
    from pe_ha.pe_api import parse_job_started

    assert parse_job_started(json.loads(sample("orchestrator-deploy-202.json"))) == "1234"
    with pytest.raises(ValueError):
        parse_job_started(json.loads(sample("orchestrator-deploy-404-unknown-environment.json")))


def test_a_jobs_state_is_read_from_its_documented_field():
    from pe_ha.pe_api import JOB_FINAL_STATES, parse_job_state

    assert parse_job_state(json.loads(sample("orchestrator-job-200.json"))) == "finished" and "finished" in JOB_FINAL_STATES


def test_a_jobs_nodes_name_each_nodes_state_and_why_it_failed():
    from pe_ha.pe_api import JobNode, parse_job_nodes

    nodes = parse_job_nodes(json.loads(sample("orchestrator-job-nodes-200.json")))
    assert nodes == [
        JobNode("node1.example.com", "finished", "Finished puppet run on node1.example.com - Success!"),
        JobNode("node2.example.com", "failed",
                "Error running puppet on node2.example.com: Could not retrieve catalog from remote server")]
    assert parse_job_nodes({"items": [{"name": "n", "state": "failed"}]}) == [JobNode("n", "failed", "")]
    with pytest.raises(ValueError):
        parse_job_nodes(json.loads(sample("orchestrator-job-404-unknown-job.json")))
