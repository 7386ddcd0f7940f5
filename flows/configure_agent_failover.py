"""Manage agent communication in geo-diverse installations (enabled with ``--skip-agent-config``).

For each site: a child group of **PE Agent** with a rule on a trusted fact from a CSR attribute
(``pp_region`` or ``pp_datacenter``) that sets ``puppet_enterprise::profile::agent`` ``server_list``
and ``pcp_broker_list`` to that site's load balancer or compile master. Running it twice changes nothing.
"""


from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field, field_validator

from flows._common import Runbook, installation_lock, log
from pe_ha import runtime, validation
from pe_ha.commands import PCP_PORT, PUPPET_PORT
from pe_ha.errors import PeHaError
from tasks import classifier


class Site(BaseModel):
    """One location's failover servers."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,62}$", description="Site name, used in the group name.")
    fact: Literal["pp_region", "pp_datacenter"] = Field(default="pp_region",
                                                       description="Trusted fact (CSR attribute) that identifies the site.")
    value: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Value of that fact at this site.")
    server_list: list[str] = Field(min_length=1, description="Load balancers or compile masters, host[:8140], in order.")
    pcp_broker_list: list[str] = Field(min_length=1, description="PCP brokers, host[:8142], in order.")

    @field_validator("server_list", "pcp_broker_list")
    @classmethod
    def _urls(cls, v: list[str], info) -> list[str]:
        port = PUPPET_PORT if info.field_name == "server_list" else PCP_PORT
        try:
            return validation.server_urls(v, what=info.field_name, default_port=port)
        except PeHaError as exc:
            raise ValueError(exc.message) from None


@flow(name="configure-agent-failover", flow_run_name="configure-agent-failover")
@installation_lock("configure-agent-failover")
def configure_agent_failover(sites: list[Site], dry_run: bool = False) -> dict:
    """Create or update one PE Agent child group per site.

    Args:
        sites: One entry per site: its name, a PuppetDB fact rule, and the ordered server and PCP broker lists for its
            agents.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    book = Runbook("configure-agent-failover", ", ".join(site.name for site in sites))
    for site in sites:
        book.planned("classifier group", "master", f"PE Agent - {site.name}: {site.fact}={site.value} -> "
                                                   f"server_list={','.join(site.server_list)}")
    if dry_run:
        return {"dry_run": True, "plan": book.publish_plan()}
    with book.step("back up classifier hierarchy"):
        backup = classifier.backup_groups(str(runtime.settings().backup_dir))
    results = {}
    for site in sites:
        with book.step(f"site {site.name}"):
            out = classifier.ensure_site_group(site.name, site.fact, site.value, site.server_list, site.pcp_broker_list)
            results[site.name] = "changed" if out["changed"] else "unchanged"
    log().info("site groups: %s", results)
    book.publish_summary(outcome="configured", notes=[f"classifier backup: {backup}"] +
                         [f"{k}: {v}" for k, v in results.items()],
                         next_steps=["Run Puppet on the agents (or wait for their next run) to apply the new server_list."])
    return {"sites": results, "backup": backup}
