"""Manage agent communication in geo-diverse installations (enabled with ``--skip-agent-config``).

For each site: a child group of **PE Agent** with a rule on a trusted fact from a CSR attribute
(``pp_region`` or ``pp_datacenter``) that sets ``puppet_enterprise::profile::agent`` ``server_list``
and ``pcp_broker_list`` to that site's load balancer or compile master. Running it twice changes nothing.
"""


from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field, field_validator

from flows._common import log
from flows._entry import with_run_context
from flows._lock import installation_lock
from flows._steps import Outcome, Procedure, Step
from pe_ha import validation
from pe_ha.commands import PCP_PORT, PUPPET_PORT
from pe_ha.context import RunContext
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
@with_run_context
@installation_lock("configure-agent-failover")
def configure_agent_failover(ctx: RunContext, sites: list[Site], dry_run: bool = False) -> dict:
    """Create or update one PE Agent child group per site.

    Args:
        sites: One entry per site: its name, a PuppetDB fact rule, and the ordered server and PCP broker lists for its
            agents.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    def backup() -> str:
        return classifier.backup_groups(ctx, str(ctx.settings.backup_dir))

    def site_step(site: Site) -> Step:
        def ensure() -> str:
            out = classifier.ensure_site_group(ctx, site.name, site.fact, site.value, site.server_list, site.pcp_broker_list)
            return "changed" if out["changed"] else "unchanged"

        return Step(f"site-{site.name}", f"site {site.name}", "worker", ensure,
                    note=f"classifier group PE Agent - {site.name}: {site.fact}={site.value} -> "
                         f"server_list={','.join(site.server_list)}, pcp_broker_list={','.join(site.pcp_broker_list)}")

    procedure = Procedure(ctx, "configure-agent-failover", ", ".join(site.name for site in sites), [
        Step("backup", "back up classifier hierarchy", "worker", backup,
             note="GET /classifier-api/v1/groups, written to the backup folder (mode 0600)"),
        *[site_step(site) for site in sites],
    ])
    if dry_run:
        return procedure.plan()
    def site_results(done: dict) -> dict[str, str]:
        return {site.name: done[f"site-{site.name}"] for site in sites}

    finished = procedure.run(lambda done: Outcome(
        "configured", notes=[f"classifier backup: {done['backup']}"] + [f"{k}: {v}" for k, v in site_results(done).items()],
        next_steps=["Run Puppet on the agents (or wait for their next run) to apply the new server_list."]))
    log().info("site groups: %s", site_results(finished.results))
    return {"sites": site_results(finished.results), "backup": finished.results["backup"]}
