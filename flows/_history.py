"""This installation's own history of a procedure's steps: each run records, per step, the seconds it took and what
the forecast expected (a table artifact); the next plan reads the latest ones back through Prefect's API and
corrects its forecast by them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from prefect.artifacts import create_table_artifact

from flows._common import log
from pe_ha.context import RunContext

HISTORY_RUNS = 10  # the latest runs a forecast learns from


def timings_key(installation: str, procedure: str) -> str:
    return f"{procedure}-timings-{installation}"


def record(ctx: RunContext, procedure: str, rows: Sequence[dict]) -> None:
    """Keep this run's step timings ({step, seconds, expected_s}) for the next forecast."""
    if rows:
        create_table_artifact(key=timings_key(ctx.settings.installation, procedure), table=list(rows),
                              description=f"{procedure}: each step's seconds and its forecast")


def past_runs(installation: str, procedure: str, limit: int = HISTORY_RUNS) -> list[list[dict]]:
    """Each of the latest runs' step timings, newest first, as that run recorded them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[timings_key(installation, procedure)])),
            sort=ArtifactSort.CREATED_DESC, limit=limit)
    runs = []
    for artifact in found:
        try:
            rows = json.loads(str(artifact.data))
        except ValueError:
            continue
        if isinstance(rows, list):
            runs.append([row for row in rows if isinstance(row, dict)])
    return runs


def ratios(ctx: RunContext, procedure: str) -> dict[str, list[float]]:
    """Per step, actual over expected in the latest past runs; empty when there are none or they cannot be read."""
    try:
        runs = past_runs(ctx.settings.installation, procedure)
    except Exception as exc:  # a forecast without history is still a forecast; say why it has none
        log().warning("past timings of %s not read (%s): the forecast is the model's alone", procedure, exc)
        return {}
    out: dict[str, list[float]] = {}
    for rows in runs:
        for row in rows:
            if float(row.get("expected_s") or 0) > 0 and float(row.get("seconds") or 0) > 0:
                out.setdefault(str(row["step"]), []).append(float(row["seconds"]) / float(row["expected_s"]))
    return out
