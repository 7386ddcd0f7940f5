"""A real Puppet JVM (PuppetDB, Puppet Server) on a lab host, run like a service without systemd: the start/stop
script the simulator's service calls, and the pid file it keeps under the service's vardir."""

from __future__ import annotations

from lab.config import Host
from lab.core import node_run


def script(description: str, java_command: str, vardir: str) -> str:
    """``sh SCRIPT start|stop``: start is a no-op while the JVM lives; stop waits up to 30 s, then kills."""
    return f"""#!/bin/sh
# pe-ha lab: {description} (not PE's unit).
pid=$(cat {vardir}/pid 2>/dev/null)
case "$1" in
start) if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then exit 0; fi
       setsid sh -c '{java_command}' </dev/null >/dev/null 2>&1 & echo $! > {vardir}/pid ;;
stop)  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
         i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
         kill -9 "$pid" 2>/dev/null
       fi
       rm -f {vardir}/pid ;;
esac
"""


def pid(host: Host, vardir: str) -> int | None:
    try:
        return int(host.path(f"{vardir}/pid").read_text().strip())
    except (OSError, ValueError):
        return None


def alive(host: Host, vardir: str) -> bool:
    found = pid(host, vardir)
    return found is not None and node_run(host, "kill", "-0", str(found), check=False).returncode == 0
