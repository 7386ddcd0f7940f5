"""The Prefect UI in a real browser: Debian's headless Chromium, driven by Playwright.

No browser is downloaded: Playwright launches /usr/bin/chromium (Debian's ``chromium`` package, which
``make test`` installs). The flags keep Chromium off the network: the machine is closed, and Chromium
otherwise tries Google's hosts at every start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.lab, pytest.mark.ui]

CHROMIUM = Path("/usr/bin/chromium")
HEALTH_INTERVAL_S = 86400  # the stack fixture reads it: no scheduled runs writing to SQLite beside the clicks
SUMMARY_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ui-provision-summary.png"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-default-apps"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        shots = tmp_path_factory.mktemp("ui")
        page.screenshot(path=str(shots / "last.png"))
        browser.close()


def summary_in_the_ui(stack, page, run_id: str, tmp_path: Path) -> None:
    """The completed run's summary artifact, as the UI renders it; the README shows this screenshot."""
    from playwright.sync_api import expect

    found = stack._request("POST", "/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["provision-replica-summary"]}}}).json()
    assert len(found) == 1, found
    page.goto(f"{stack.ui}artifacts/artifact/{found[0]['id']}", wait_until="networkidle")
    expect(page.get_by_text("wait until replica services are operational").first).to_be_visible()
    expect(page.get_by_role("heading", name="provision-replica: provisioned")).to_be_visible()
    shot = SUMMARY_SCREENSHOT if os.environ.get("PEHA_UPDATE_SCREENSHOTS") else tmp_path / SUMMARY_SCREENSHOT.name
    page.screenshot(path=str(shot), full_page=True)


def test_verify_health_started_from_its_deployment_page_completes(stack, fresh_lab, page, tmp_path):
    from playwright.sync_api import expect

    # A healthy pair first: provision through the API, so verify-health has a replica to find running.
    provision = stack.create_run("provision-replica", "lab", {"sync_timeout_s": 120})
    assert stack.wait(provision["id"], 300)["state"]["type"] == "COMPLETED", stack.explain(provision["id"])
    summary_in_the_ui(stack, page, provision["id"], tmp_path)

    deployment = stack.deployment_id("verify-health", "lab")
    page.goto(f"{stack.ui}deployments/deployment/{deployment}", wait_until="networkidle")
    expect(page.get_by_text("flows/verify_health.py:verify_health")).to_be_visible()
    for _ in range(3):
        page.get_by_role("button", name="Run", exact=True).click()
        with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as created:
            page.get_by_text("Quick run").click()
        # SQLite answers a write that meets another with "database is locked" (503), which the UI shows as
        # "Failed to schedule flow run" without retrying; an operator clicks again. Anything else fails here.
        if created.value.status != 503:
            break
    assert created.value.status == 201, f"Quick run: HTTP {created.value.status} {created.value.text()[:300]}"
    expect(page.get_by_text("scheduled to start").first).to_be_visible()
    manual = []
    for _ in range(60):
        manual = [r for r in stack.runs_of("verify-health", "lab") if not r["auto_scheduled"]]
        if manual:
            break
        page.wait_for_timeout(500)
    assert len(manual) == 1, "one click, one run"
    run_id = manual[0]["id"]
    # Open the run from the deployment's run list, as an operator would (the toast's link sits under animations).
    page.get_by_role("link", name=manual[0]["name"]).first.click()
    expect(page).to_have_url(re.compile(rf"/runs/flow-run/{run_id}"))
    # The run page follows the run live: Scheduled/Pending/Running, then Completed.
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible(timeout=180_000)
    # The page may show "Completed" elsewhere first (another run's badge): the run's own state is the API's.
    run = stack.wait(run_id, 180)
    assert run["state"]["type"] == "COMPLETED" and run["deployment_id"] == deployment
    assert run["name"].startswith("verify-health/"), run["name"]  # renamed by the flow: what ran where


def test_enable_replica_run_form_offers_the_topology_choices(stack, page):
    deployment = stack.deployment_id("enable-replica", "lab")
    page.goto(f"{stack.ui}deployments/deployment/{deployment}/run", wait_until="networkidle")
    from playwright.sync_api import expect

    expect(page.get_by_text("topology (Optional)")).to_be_visible()
    # help text from the flow's docstring reaches the form
    expect(page.get_by_text(re.compile(r"^mono \(no compilers\) or mono-with-compile"))).to_be_visible()
    # topology is the form's first choice field (replica above it is a text field)
    field = page.locator("button.p-select-button__control").first
    expect(field).to_have_text("mono")
    field.click()
    page.keyboard.press("ArrowDown")
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    assert options.all_inner_texts() == ["mono", "mono-with-compile"]
