"""The Prefect UI in a real browser: Debian's headless Chromium, driven by Playwright.

No browser is downloaded: Playwright launches /usr/bin/chromium (Debian's ``chromium`` package, which
``make test`` installs). The flags keep Chromium off the network: the machine is closed, and Chromium
otherwise tries Google's hosts at every start.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.lab, pytest.mark.ui]

CHROMIUM = Path("/usr/bin/chromium")
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


def test_verify_health_started_from_its_deployment_page_completes(stack, fresh_lab, page):
    from playwright.sync_api import expect

    # A healthy pair first: provision through the API, so verify-health has a replica to find running.
    provision = stack.create_run("provision-replica", "provision-replica", {"sync_timeout_s": 120})
    assert stack.wait(provision["id"], 300)["state"]["type"] == "COMPLETED", stack.explain(provision["id"])

    deployment = stack.deployment_id("verify-health", "verify-health")
    page.goto(f"{stack.ui}deployments/deployment/{deployment}", wait_until="networkidle")
    expect(page.get_by_text("flows/verify_health.py:verify_health")).to_be_visible()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Quick run").click()
    expect(page.get_by_text("scheduled to start").first).to_be_visible()
    manual = []
    for _ in range(60):
        manual = [r for r in stack.runs_of("verify-health", "verify-health") if not r["auto_scheduled"]]
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
    deployment = stack.deployment_id("enable-replica", "enable-replica")
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
