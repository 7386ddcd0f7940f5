"""The shell line that runs a command in a root session on a PE node, and where its output lines go.

The executor (``pe_ha.executor``) sends this line over SSH; the marks let it tell the remote process group
and the command's stderr apart on one stream.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Iterable

from pe_ha.masking import mask

_PID_MARK = "\x1dPEHA-PGID "
_ERR_MARK = "\x1e"
_KILL_GRACE_S = 5


def default_line_sink(host: str, stream: str, line: str) -> None:
    """Log one remote output line to the Prefect run logger when there is a run, else to ``pe_ha.remote``."""
    logger: logging.Logger | logging.LoggerAdapter
    try:
        from prefect.logging import get_run_logger

        logger = get_run_logger()
    except Exception:  # outside a flow or task run
        logger = logging.getLogger("pe_ha.remote")
    text = mask(line)
    if stream == "stderr":
        logger.warning("[%s] %s", host, text)
    else:
        logger.info("[%s] %s", host, text)


def _quiet_sink(host: str, stream: str, line: str) -> None:
    """Used for machine-readable output (JSON status): only stderr reaches the log."""
    if stream == "stderr":
        default_line_sink(host, stream, line)


def root_session(argv: Iterable[str], *, login_user: str, lang: str, path: str, timeout_s: float) -> str:
    """The shell line that runs ``argv`` in a root session on the host, bounded by ``timeout``.

    The login shell prints its PID (which ``exec timeout`` keeps, and which leads timeout's own
    process group) so the caller can kill the group; stderr lines are tagged so they can be told
    apart from stdout on the pty.
    """
    limit = max(1, math.ceil(timeout_s))
    # stderr goes through sed, which tags each line. bash must let sed finish before it exits, or the
    # last stderr lines are lost (seen under load). `$!` is empty after `cmd 2> >(...)` in bash 5.2, so
    # the tagger is opened with `exec` to learn its PID. The wait is bounded (2 s) because a daemon
    # started by the command may keep the pipe open; the command itself never sees fd 3.
    inner = ("exec 3> >(exec sed -u 's/^/\\x1e/'); tagger=$!; \"$@\" 2>&3 3>&-; rc=$?; exec 3>&-; "
             "for _ in {1..200}; do kill -0 $tagger 2>/dev/null || break; sleep 0.01; done; exit $rc")
    env = ["env", "-i", "HOME=/root", "USER=root", "LOGNAME=root", f"LANG={lang}", f"PATH={path}"]
    wrapped = [*env, "timeout", "-k", str(_KILL_GRACE_S), str(limit), "/bin/bash", "-c", inner, "pe-ha", *argv]
    if login_user != "root":
        wrapped = ["sudo", "-n", "--", *wrapped]
    return f"printf '\\035PEHA-PGID %s\\n' $$; cd / && exec {shlex.join(wrapped)}"
