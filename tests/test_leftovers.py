"""What still points at a former master: judged from classifier groups, agents' settings and PuppetDB."""

from __future__ import annotations

import json

import pytest

from pe_ha import leftovers
from tests.contract.test_samples import sample

OLD, NEW = "master.example.com", "replica.example.com"


def group(name, rule=None, classes=None, config_data=None):
    return {"name": name, "rule": rule, "classes": classes or {}, "config_data": config_data or {}}


@pytest.mark.parametrize(("text", "names_old"), [
    (OLD, True),
    (f"{OLD}:8140", True),
    (f"https://{OLD}:8143/orchestrator", True),
    (f"{NEW}:8140,{OLD}:8140", True),
    (f"{OLD}.backup.example.com", False),  # a longer name is another host
    (f"old-{OLD}", False),
    (f"x{OLD}", False),
    (f"{OLD}-2", False),
    (NEW, False),
])
def test_a_name_counts_only_as_a_whole_host_name(text, names_old):
    found = leftovers.in_classifier([group("G", classes={"c": {"p": text}})], OLD, NEW)
    assert bool(found) is names_old


def test_a_pin_is_found_with_the_unpin_command():
    pinned = group("PE Master", rule=["or", ["=", "name", NEW], ["=", "name", OLD]])
    [found] = leftovers.in_classifier([pinned], OLD, NEW)
    assert found.where == f"classifier group 'PE Master' (on {NEW})"
    assert found.what == f"{OLD} is pinned to it"
    assert "commands/unpin-from-all" in found.fix and f'{{"nodes": ["{OLD}"]}}' in found.fix


def test_a_dynamic_rule_naming_the_old_master_is_not_called_a_pin():
    dynamic = group("Monitoring", rule=["and", ["~", ["fact", "puppet_server"], OLD]])
    [found] = leftovers.in_classifier([dynamic], OLD, NEW)
    assert found.what == f"its rule names {OLD}" and "Rules" in found.fix


def test_parameters_and_data_name_their_place():
    g = group("PE Agent", classes={"puppet_enterprise::profile::agent": {
        "server_list": [f"{NEW}:8140", f"{OLD}:8140"], "pcp_broker_list": [f"{NEW}:8142"]}},
        config_data={"puppet_enterprise::profile::agent": {"primary_uris": {"a": f"https://{OLD}:8140"}}})
    found = leftovers.in_classifier([g], OLD, NEW)
    assert [f.what for f in found] == [
        f"class puppet_enterprise::profile::agent parameter server_list[1] is '{OLD}:8140'",
        f"data puppet_enterprise::profile::agent parameter primary_uris.a is 'https://{OLD}:8140'",
    ]
    assert "Classes" in found[0].fix and "Configuration data" in found[1].fix


def test_a_clean_classification_has_no_leftovers():
    g = group("PE Master", rule=["or", ["=", "name", NEW]], classes={"puppet_enterprise": {"puppet_master_host": NEW}})
    assert leftovers.in_classifier([g, group("All Nodes", rule=["and", ["~", "name", ".*"]])], OLD, NEW) == []


def test_every_place_pes_documented_ha_hierarchy_names_the_primary_is_found():
    """PE's documented GET /v1/groups body with HA enabled, read as if its primary had just been promoted away:
    every pin and parameter naming the primary is listed, and nothing else."""
    groups = json.loads(sample("classifier-groups-200.json"))
    old, new = "pe-primary.example.com", "pe-replica.example.com"
    found = leftovers.in_classifier(groups, old, new)
    mentions = sum(text.count(old) for text in json.dumps(groups).split('"'))
    assert len(found) == mentions == 14
    assert sum(f.what == f"{old} is pinned to it" for f in found) == 2  # PE Master and PE HA Master
    assert {f.what.split(" parameter ")[1].split(" is ")[0] for f in found if "parameter" in f.what} >= {
        "puppet_master_host", "certificate_authority_host", "server_list[0]", "pcp_broker_list[0]"}
    assert leftovers.in_classifier(groups, "no-such-master.invalid", new) == []


@pytest.mark.parametrize(("value", "first"), [
    (f"{OLD}:8140,{NEW}:8140", OLD),
    (f"{OLD},{NEW}", OLD),
    (f" {NEW}:8140 , {OLD}:8140", NEW),
    ("", ""),
])
def test_first_server(value, first):
    assert leftovers.first_server(value) == first


def test_agents_starting_with_the_old_master_and_unreadable_ones_are_listed():
    found = leftovers.in_agents({"a1": f"{OLD}:8140,{NEW}:8140", "a2": f"{NEW}:8140,{OLD}:8140", "a3": ""},
                                {"a4": "ssh: connection refused"}, OLD, NEW)
    assert [(f.where, f.what) for f in found] == [
        ("agent a1", f"server_list starts with {OLD} ({OLD}:8140,{NEW}:8140)"),
        ("agent a4", "its server_list could not be read (ssh: connection refused)"),
    ]
    assert f"puppet config set server_list {NEW}:8140 --section main" in found[0].fix


def test_puppetdb_node_and_its_fix():
    assert leftovers.in_puppetdb(False, OLD, NEW) == []
    [found] = leftovers.in_puppetdb(True, OLD, NEW)
    assert found.line() == (f"PuppetDB on {NEW}: {OLD} is still an active node. Fix: on {NEW}, as root: puppet node "
                            f"purge {OLD} (deactivates it in PuppetDB, and revokes and deletes its certificate, which "
                            "pe-ha does not read)")
