"""`pe-ha`: start and follow pe-ha's procedures through the Prefect server, thin over Prefect's client.

    pe-ha run PROCEDURE [--param k=v ...] [--watch]   start its deployment (and follow state and logs)
    pe-ha run PROCEDURE --at TIME [--window DURATION] ... schedule it into a change window the forecast must fit
    pe-ha plan PROCEDURE [--param k=v ...]            the dry run: print the plan of every step
    pe-ha run PROCEDURE --token-file FILE ...         ... recording who started it (their RBAC login)
    pe-ha approve RUN (--token-file FILE | --operator NAME) [--reject] [--comment TEXT]
    pe-ha status                                      the last verify-health result and the runs in progress
    pe-ha setup [--no-alerts] [--webhook-url URL]     the idempotent set-up, `prefect deploy --all`, post-deploy

Each installation has its own deployments, <procedure>/<installation>: the installation is pe-ha's
PEHA_INSTALLATION setting (environment, .env or inventory file), or --installation NAME.
The exit code follows the run's final state: 0 Completed, 1 Failed or Crashed, 3 Cancelled (also when an
approval was rejected), 4 still paused or running when not watched to the end, 2 a refused command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXIT = {"COMPLETED": 0, "FAILED": 1, "CRASHED": 1, "CANCELLED": 3}
TERMINAL = set(EXIT)


def procedures() -> dict[str, str]:
    """Procedure (the flow's name) -> entrypoint, from prefect.yaml (the same file `prefect deploy` reads)."""
    import yaml

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["entrypoint"].rpartition(":")[2].replace("_", "-"): d["entrypoint"] for d in spec["deployments"]}


def default_installation() -> str:
    """The installation a command addresses without --installation: the settings'."""
    import os

    from pe_ha.errors import PeHaError
    from pe_ha.settings import get_settings

    try:
        return get_settings().installation
    except PeHaError:  # a console without the inventory: the variable alone
        return os.environ.get("PEHA_INSTALLATION", "default")


def parameters_help() -> str:
    """Each procedure and its parameters, from the flow signatures (the same schema as the UI's run forms)."""
    import importlib

    from prefect.utilities.callables import parameter_schema

    lines = ["procedures and their parameters (--param name=value):"]
    for name, entrypoint in procedures().items():
        module, _, attr = entrypoint.partition(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), attr)
        lines.append(f"  {name}: {(flow.description or '').splitlines()[0] if flow.description else ''}")
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        for param, spec in schema.get("properties", {}).items():
            default = f" (default {json.dumps(spec['default'])})" if "default" in spec else " (required)"
            lines.append(f"      {param}{default}: {' '.join(spec.get('description', '').split())}")
    return "\n".join(lines)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"pe-ha: --param takes name=value, not {pair!r}")
        try:
            out[key] = json.loads(value)  # true, 30, ["a", "b"]
        except ValueError:
            out[key] = value
    return out


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _deployment(client, procedure: str, installation: str):
    from prefect.exceptions import ObjectNotFound

    if procedure not in procedures():
        raise SystemExit(f"pe-ha: unknown procedure {procedure!r}; one of: {', '.join(procedures())}")
    name = f"{procedure}/{installation}"
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise SystemExit(f"pe-ha: no deployment {name} on the server: run `pe-ha setup` with this "
                         "installation's settings") from None


def read_token(path: str) -> Any:
    """An RBAC token from a file, or from a prompt for ``-``; never from the command line itself."""
    import getpass

    from pydantic import SecretStr

    if path == "-":
        text = getpass.getpass("RBAC token: ")
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SystemExit(f"pe-ha: cannot read the token file {path}: {exc.strerror}") from None
    if not text.strip():
        raise SystemExit(f"pe-ha: no token in {path}: log in with `puppet-access login` first")
    return SecretStr(text.strip())


def rbac_login(token: Any) -> str:
    """The PE login RBAC gives for ``token`` (asked here, before anything is sent to the run)."""
    from pe_ha.errors import PeHaError
    from pe_ha.pe_api import PEApi
    from pe_ha.settings import get_settings

    try:
        api = PEApi(get_settings())
        try:
            return api.login(token)
        finally:
            api.close()
    except PeHaError as exc:
        raise SystemExit(f"pe-ha: RBAC did not confirm the token: {exc}") from None


def start(procedure: str, params: dict[str, Any], *, installation: str, started_by: str | None = None,
          at: Any = None) -> str:
    """Create the run, to start now or ``at`` (a Scheduled run). With ``started_by``, the run is held until its
    starter's login is recorded beside it (as a run input, not a parameter), then released to the worker."""
    import datetime as dt
    import json as _json

    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.states import Scheduled

    from pe_ha.approval import STARTED_BY_INPUT

    with _client() as client:
        deployment = _deployment(client, procedure, installation)
        held = {"state": Scheduled(scheduled_time=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))} if started_by else (
            {"state": Scheduled(scheduled_time=at)} if at else {})
        try:
            run = client.create_flow_run_from_deployment(deployment.id, parameters=params, **held)
        except PrefectHTTPStatusError as exc:  # e.g. 409: a misspelt parameter, named by the server
            detail = exc.response.json().get("detail", exc.response.text) if exc.response.content else str(exc)
            raise SystemExit(f"pe-ha: the server refused the run: {detail}") from None
        if started_by:
            try:
                client.create_flow_run_input(run.id, STARTED_BY_INPUT, _json.dumps(started_by))
                client.set_flow_run_state(run.id, Scheduled(scheduled_time=at) if at else Scheduled(), force=True)
            except Exception as exc:  # a held run nobody releases would start a day later: remove it
                with contextlib.suppress(Exception):
                    client.delete_flow_run(run.id)
                raise SystemExit(f"pe-ha: could not record who started the run ({type(exc).__name__}: {exc}); "
                                 f"the held run {run.id} was deleted and nothing ran. Start it again.") from None
    print(("scheduled" if at else "started") + f" {run.name} (flow run {run.id})"
          + (f" for {at:%Y-%m-%d %H:%M:%S} UTC" if at else "") + (f" by PE user {started_by}" if started_by else ""))
    return str(run.id)


UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90m``, ``2h``, ``1h30m`` or ``45s``: a unit is required, so no figure is misread."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower().replace(" ", ""):
        raise SystemExit(f"pe-ha: {text!r} is not a duration: write it like 90m, 2h or 1h30m")
    return sum(float(n) * UNITS_S[u] for n, u in parts)


def parse_at(text: str, now: Any = None) -> Any:
    """When a scheduled run starts: ``+DURATION`` from now, or an ISO 8601 time (without an offset: this
    machine's local time); always in the future."""
    import datetime as dt

    now = now or dt.datetime.now(dt.UTC)
    if text.startswith("+"):
        return now + dt.timedelta(seconds=parse_duration(text[1:]))
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"pe-ha: --at {text!r} is not a time: write 2026-12-13T02:00 (local), "
                         "2026-12-13T02:00+00:00, or +10m") from None
    at = (at if at.tzinfo else at.astimezone()).astimezone(dt.UTC)
    if at <= now:
        raise SystemExit(f"pe-ha: --at {at:%Y-%m-%d %H:%M:%S} UTC is in the past")
    return at


def _dry_run(procedure: str, params: dict[str, Any], *, installation: str) -> tuple[str, str, dict[str, Any]]:
    """The procedure's dry run through its deployment: the run's id, final state and artifacts by key."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = start(procedure, {**params, "dry_run": True}, installation=installation)
    final = watch(run_id, follow_logs=False)
    with _client() as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return run_id, final, {a.key: a.data for a in found if a.key}


def forecast_of(procedure: str, params: dict[str, Any], *, installation: str) -> list[dict]:
    """The procedure's forecast from today's facts: its dry run through the deployment, as `pe-ha plan` runs it."""
    run_id, final, artifacts = _dry_run(procedure, params, installation=installation)
    if final != "COMPLETED":
        raise SystemExit(f"pe-ha: the plan of {procedure} ended {final}, so its forecast is unknown: nothing was "
                         f"scheduled (see flow run {run_id})")
    if f"{procedure}-forecast" not in artifacts:
        raise SystemExit(f"pe-ha: {procedure} makes no forecast, so no window can be checked for it: schedule it "
                         "with --at alone")
    data = artifacts[f"{procedure}-forecast"]
    return json.loads(data) if isinstance(data, str) else list(data or [])


def fits_window(procedure: str, rows: list[dict], window_s: float) -> str:
    """What the operator is told when the forecast fits; a refusal naming both figures when it does not."""
    from pe_ha.forecast import duration

    expected, low, high = (sum(float(r[k]) for r in rows) for k in ("expected_s", "low_s", "high_s"))
    figures = f"{duration(expected)} ({duration(low)} to {duration(high)})"
    if high > window_s:
        raise SystemExit(f"pe-ha: refused: the forecast of {procedure}, {figures}, does not fit the "
                         f"{duration(window_s)} window: the run could take up to {duration(high)}. Nothing was "
                         "scheduled; book a longer window.")
    return f"the forecast, {figures}, fits the {duration(window_s)} window"


def watch(run_id: str, *, follow_logs: bool = True, poll_s: float = 1.0) -> str:
    """Print the run's state changes and log lines until it ends; returns the final state type."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    seen_logs, last_state, hinted = 0, None, False
    with _client() as client:

        def print_new_logs() -> int:
            nonlocal seen_logs
            if not follow_logs:
                return 0
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                    sort=LogSort.TIMESTAMP_ASC, offset=seen_logs, limit=200)
            for entry in logs:
                print(f"{entry.timestamp:%H:%M:%S} {entry.message}")
            seen_logs += len(logs)
            return len(logs)

        while True:
            run = client.read_flow_run(run_id)
            state = run.state.type.value if run.state else "UNKNOWN"
            print_new_logs()
            if state in TERMINAL and follow_logs:
                # The run's last lines reach the API in a batch after its final state: drain them.
                quiet = 0
                while quiet < 3:
                    time.sleep(poll_s)
                    quiet = 0 if print_new_logs() else quiet + 1
            if state != last_state:
                print(f"-- {run.name}: {run.state.name if run.state else state}"
                      + (f": {run.state.message}" if run.state and run.state.message else ""))
                last_state = state
            if state == "PAUSED" and not hinted:
                print(f"-- waiting for approval: pe-ha approve {run_id} --token-file FILE (or --operator NAME) [--reject --comment TEXT]")
                hinted = True
            if state in TERMINAL:
                return state
            time.sleep(poll_s)


def plan(procedure: str, params: dict[str, Any], *, installation: str) -> int:
    _, final, artifacts = _dry_run(procedure, params, installation=installation)
    for key, data in artifacts.items():
        if key.endswith("-plan"):
            print(data)
    return EXIT.get(final, 4)


def approve(run_id: str, operator: str | None, *, reject: bool, comment: str, token_file: str | None) -> int:
    """Answer a paused run. With a token file, the token is sealed to the run's pause (see pe_ha.sealing):
    the run itself asks RBAC whose it is. The run's policy is checked here first, with the same rule."""
    from pe_ha.approval import SEALING_KEY_INPUT, Answer, ApprovalPolicy, answer_problem
    from pe_ha.sealing import seal

    with _client() as client:
        try:
            published = json.loads(client.read_flow_run_input(run_id, SEALING_KEY_INPUT))  # type: ignore[arg-type]
        except Exception:  # 404: not paused for approval, or paused by an older pe-ha
            published = {}
    answer: dict[str, Any] = {"approve": not reject, "comment": comment}
    login = None
    if token_file:
        if not published.get("public_key"):
            raise SystemExit(f"pe-ha: flow run {run_id} is not waiting for an approval (it published no approval "
                             "key): check it with `pe-ha status`")
        token = read_token(token_file)
        login = rbac_login(token)
        answer["sealed_token"] = seal(published["public_key"], token, context=run_id)
    answer["operator"] = operator or login
    policy = ApprovalPolicy(published.get("policy", "any"))
    problem = answer_problem(policy, Answer(not reject, answer["operator"], login, comment), run=run_id,
                             started_by=published.get("started_by"))
    if problem:
        print(f"REFUSED: {problem}")
        return 1
    with _client() as client:
        result = client.resume_flow_run(run_id, run_input=answer)
    status = result.status.value
    reason = getattr(result.details, "reason", "") or ""
    if status != "ACCEPT":
        # Prefect answers invalid input with HTTP 200 and REJECT: the run is still paused.
        print(f"REJECT: the server did not take the answer ({reason or status}); the run is still waiting")
        return 1
    who = f"PE user {login}" if login else answer["operator"]
    print(f"{'rejected' if reject else 'approved'} by {who}: flow run {run_id} resumes")
    return 0


def status(installation: str) -> int:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    this_installation = DeploymentFilter(name=DeploymentFilterName(any_=[installation]))
    with _client() as client:
        health = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["verify-health"])), deployment_filter=this_installation,
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=1)
        active = client.read_flow_runs(deployment_filter=this_installation, flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PAUSED, StateType.PENDING]))), limit=50)
    print(f"installation {installation}")
    if health:
        run = health[0]
        when = f"{run.start_time:%Y-%m-%d %H:%M:%S} UTC" if run.start_time else "?"
        print(f"last health check: {run.state.name if run.state else '?'} at {when} ({run.name})"
              + (f": {run.state.message}" if run.state and run.state.message else ""))
    else:
        print("last health check: none has finished yet")
    print(f"runs in progress: {len(active)}")
    for run in active:
        print(f"  {run.name}  {run.state.name if run.state else '?'}  flow run {run.id}")
    return 0 if health and health[0].state and health[0].state.type == StateType.COMPLETED else 1


def setup(extra: list[str], *, installation: str) -> int:
    """The README's set-up: idempotent objects, the deployments, then their parameter schemas and interval."""
    import os

    from pe_ha.errors import PeHaError
    from pe_ha.settings import get_settings

    try:
        settings = get_settings()
    except PeHaError as exc:
        raise SystemExit(f"pe-ha: the settings are not complete: {exc}") from None
    if installation != settings.installation:
        raise SystemExit(f"pe-ha: setup deploys the settings' installation ({settings.installation}), not "
                         f"{installation}: run it with that installation's settings")
    # `prefect deploy` templates these from its environment: give it the settings' values, not the shell's.
    # deployments.setup gets them too: a .env in this directory is not read from the checkout it runs in.
    env = {**os.environ, "PEHA_INSTALLATION": settings.installation,
           "PEHA_HEALTH_INTERVAL_S": str(settings.health_interval_s),
           "PEHA_PROJECT_DIR": os.environ.get("PEHA_PROJECT_DIR", str(ROOT))}
    if settings.alert_webhook_url:
        env["PEHA_ALERT_WEBHOOK_URL"] = settings.alert_webhook_url
    python = sys.executable
    prefect = str(Path(python).with_name("prefect"))
    for argv in ([python, "-m", "deployments.setup", *extra], [prefect, "--no-prompt", "deploy", "--all"],
                 [python, "-m", "deployments.setup", "--post-deploy"]):
        print("$ " + " ".join(argv[1:] if argv[0] == python else ["prefect", *argv[1:]]))
        if subprocess.run(argv, cwd=ROOT, env=env).returncode:
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    p = argparse.ArgumentParser(prog="pe-ha", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=parameters_help() if wants_help else None)
    p.add_argument("--installation", help="the PE installation (default: the PEHA_INSTALLATION setting)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (("run", "start a procedure's deployment"), ("plan", "dry run: print the plan")):
        c = sub.add_parser(name, help=what, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=parameters_help() if wants_help else None)
        c.add_argument("procedure")
        c.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
        if name == "run":
            c.add_argument("--watch", action="store_true", help="follow the run's state and logs until it ends")
            c.add_argument("--token-file", metavar="FILE",
                           help="your own RBAC token (- prompts): the run records your PE login as its starter")
            c.add_argument("--at", metavar="TIME",
                           help="schedule the run: 2026-12-13T02:00 (local time), with an offset, or +10m")
            c.add_argument("--window", metavar="DURATION",
                           help="the change window from its start (90m, 2h): refused now when the forecast does "
                                "not fit it, and checked again when the run starts")
    a = sub.add_parser("approve", help="answer a paused run's approval")
    a.add_argument("run")
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--token-file", metavar="FILE",
                     help="your own RBAC token (- prompts): sealed to the paused run, which confirms your PE login "
                          "with RBAC; required by the identified and two-person approval policies")
    who.add_argument("--operator", help="your name, as typed (the any policy only)")
    a.add_argument("--reject", action="store_true")
    a.add_argument("--comment", default="")
    sub.add_parser("status", help="the last verify-health result and the runs in progress")
    s = sub.add_parser("setup", help="set-up, `prefect deploy --all` and the post-deploy step")
    s.add_argument("--no-alerts", action="store_true")
    s.add_argument("--webhook-url")
    args = p.parse_args(argv)
    try:
        installation = args.installation or default_installation()
        if args.command == "run":
            params = parse_params(args.param)
            at = parse_at(args.at) if args.at else None
            window_s = parse_duration(args.window) if args.window else None
            started_by = rbac_login(read_token(args.token_file)) if args.token_file else None
            if window_s is not None:
                fits = fits_window(args.procedure, forecast_of(args.procedure, params, installation=installation),
                                   window_s)
                params["window_minutes"] = round(window_s / 60, 2)
                print(fits)
            run_id = start(args.procedure, params, installation=installation, started_by=started_by, at=at)
            return EXIT.get(watch(run_id), 4) if args.watch else 0
        if args.command == "plan":
            return plan(args.procedure, parse_params(args.param), installation=installation)
        if args.command == "approve":
            return approve(args.run, args.operator, reject=args.reject, comment=args.comment,
                           token_file=args.token_file)
        if args.command == "status":
            return status(installation)
        extra = (["--no-alerts"] if args.no_alerts else []) + (["--webhook-url", args.webhook_url] if args.webhook_url else [])
        return setup(extra, installation=installation)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
