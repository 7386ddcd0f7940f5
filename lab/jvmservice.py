"""A real Puppet JVM (PuppetDB, Puppet Server) on a lab host, run like a service without systemd: the start/stop
script the simulator's service calls, and the pid file it keeps under the service's vardir."""

from __future__ import annotations

import time
from collections.abc import Callable

from lab.config import Host
from lab.core import node_run


def script(description: str, java_command: str, vardir: str) -> str:
    """``sh SCRIPT start|stop|status``: start is a no-op while the JVM lives; stop waits up to 30 s, then kills;
    status exits 0 while the JVM lives (the simulator's service asks it, so the pid file's path stays here)."""
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
status) [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null ;;
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


def start_and_wait(host: Host, service_script: str, vardir: str, *, ready: Callable[[], bool],
                   log_tail: Callable[[], str], what: str, error: type[Exception], timeout_s: float) -> float:
    """Start the JVM by its script and poll ``ready`` until it answers; fail as soon as the process dies, with the
    log's tail. Returns the seconds it took."""
    started = time.monotonic()
    node_run(host, "sh", service_script, "start")
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return time.monotonic() - started
        if not alive(host, vardir):
            raise error(f"{what} on {host.fqdn} exited while starting:\n{log_tail()[-3000:]}")
        time.sleep(0.5)
    raise error(f"{what} on {host.fqdn} not running after {timeout_s:g} s:\n{log_tail()[-3000:]}")
