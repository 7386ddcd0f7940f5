#!/usr/bin/python3
"""pe-ha lab: a SIMULATOR of Puppet Enterprise's CLI tools and HTTPS services. It is not PE.

Runs on each lab host with Debian's /usr/bin/python3 (stdlib only), from /opt/puppetlabs/sim/, where the lab
copies this folder. Entry points (by argv[1]):
  puppet infrastructure|resource|agent|job|config ...   the simulated PE CLI
  puppet-access login|show                               simulated RBAC token tool
  pe-sim service <name>                                  a simulated PE service daemon (HTTPS)
  pe-sim <admin command>                                 lab-internal helpers (called by the lab or peers)

One module per PE service: rbac, classifier, status, puppetdb, orchestrator, infrastructure (the `puppet
infrastructure` subcommands), agent; services runs the daemons and routes HTTPS requests; cli dispatches;
base holds what they share. Behaviour follows PE's documentation; docs/simulator.md gives each one's source.
"""

import sys

from cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
