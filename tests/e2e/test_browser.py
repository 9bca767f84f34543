"""The people's screens in a real browser: Prefect's retraining form and run page, MLflow's run and model pages.

Debian's Chromium (``/usr/bin/chromium``; ``make test`` installs it with apt-get when it is missing) is driven by
the ``playwright`` package, headless, with every request that is not to 127.0.0.1 aborted. The servers and the
deployments are started as in ``test_servers.py`` (``infra/servers.py`` on free ports, ``prefect deploy`` of
``deployments/prefect.yaml``). A person's path: open the manual deployment, Custom run, fill a small run in the
form, submit, follow it to Completed, open its summary artifact and follow its link to the MLflow run page (the
dataset, the loss chart with more than one point, the confusion matrix), then the model page (the new version,
its alias, its description). A second person types a learning rate of -1 and sees it refused; a third unticks
"Validate parameters" and sees the run fail at once naming the field.

Each step's screenshot is kept under ``$MODELCORE_E2E_SCREENSHOTS`` (default ``.test-artifacts/browser/``).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.e2e.test_servers import _logs, _wait_for, deployments, stack  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
LOOPBACK_ONLY = re.compile(r"^(?!https?://127\.0\.0\.1[:/])")  # every other request is aborted
NAME = "browser-sentiment"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("MODELCORE_E2E_SCREENSHOTS", REPO / ".test-artifacts" / "browser"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    """A fresh browser profile (MLflow keeps its UI mode per browser) that reaches loopback only."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    aborted: list[str] = []
    context.route(LOOPBACK_ONLY, lambda route: (aborted.append(route.request.url), route.abort()))
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


def _property(scope, label: str):
    """A field of Prefect's parameter form by its label (the form's ``<label for>`` ids match no input)."""
    label_text = (
        "./div[contains(@class,'p-label__header')]//span[contains(@class,'schema-form-property__label')]"
        f"[normalize-space(.)='{label}' or normalize-space(.)='{label} (Optional)']"
    )
    return scope.locator(
        f"xpath=.//div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')][{label_text}]"
    ).first


def _type(scope, label: str, value: object) -> None:
    body = _property(scope, label).locator(".p-label__body").first
    box = body.locator("textarea, input").first
    if not box.is_visible():  # an optional field left empty (the task's default): pick its type to get the input
        body.get_by_role("button").first.click()
        box = body.locator("textarea, input").first
    box.fill(str(value))
    box.press("Tab")  # number inputs take their value on blur
    if box.input_value() != str(value):  # a number input that re-rendered under the fill: type it key by key
        box.click()
        box.press("Control+a")
        box.press_sequentially(str(value), delay=30)
        box.press("Tab")
    assert box.input_value() == str(value), label


def _open_custom_run(stack, page) -> None:  # noqa: F811 (the stack fixture's name)
    page.goto(f"{stack.config.prefect_ui_url}/deployments")
    page.get_by_role("link", name="manual", exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    _property(page, "Base Model").wait_for()


def _fill_small_run(page, checkpoint: Path, csv_path: Path) -> None:
    """The small run a person types: the tiny model, the real CSV, 100 steps."""
    _type(page, "Base Model", checkpoint)
    _type(page, "Dataset", csv_path)
    _type(page, "Registered Model Name", NAME)
    _type(page, "Text Column", "review")
    _type(page, "Label Column", "sentiment")
    _type(page, "Max Length", 32)
    training = _property(page, "Training")
    _type(training, "Max Steps", 100)
    _type(training, "Learning Rate", 0.005)
    _type(training, "Per Device Train Batch Size", 16)
    _type(training, "Save Steps", 50)


def _manual_runs(stack, deployments) -> set[str]:  # noqa: F811 (the fixtures' names)
    body = {"flow_runs": {"deployment_id": {"any_": [deployments["manual"]["id"]]}}}
    return {run["id"] for run in stack.api.post("flow_runs/filter", json=body).json()}


def _submit(page, stack, deployments, shots: Path) -> str:  # noqa: F811
    """Submit the form and open the new run's page; the flow run's id.

    A person follows the toast's "View run" (the button exists twice: the last is the toast's). The toast lives
    a few seconds: on a loaded machine it can come and go between two looks, so when it is not seen the run the
    form created is found over the API and opened by its address. When the form created no run, the failure
    says what the page showed: its toasts, the fields it marked, the API calls it got an error from.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = _manual_runs(stack, deployments)
    refused: list[str] = []

    def note_refusal(response) -> None:
        if response.status >= 400:
            refused.append(f"{response.request.method} {response.url}: {response.status}")

    page.on("response", note_refusal)
    page.get_by_role("button", name="Submit", exact=True).click()
    view = page.get_by_role("button", name="View run").last
    try:
        view.click(timeout=WAIT_MS / 2)
        page.wait_for_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}$"))
        return page.url.rsplit("/", 1)[-1]
    except PlaywrightTimeout:
        created = _manual_runs(stack, deployments) - before
    if len(created) != 1:
        page.screenshot(path=shots / "submit-failed.png", full_page=True)
        shown = page.locator(".p-toast, .p-label__message--failed").all_inner_texts()  # toasts, refused fields
        pytest.fail(f"Submit created {len(created)} runs and showed no toast; the page showed {shown}, "
                    f"errors from {refused}; screenshot {shots / 'submit-failed.png'}")  # fmt: skip
    (flow_run_id,) = created
    page.goto(f"{stack.config.prefect_ui_url}/runs/flow-run/{flow_run_id}")
    return flow_run_id


def _mlflow_page(context, url: str):
    page = context.new_page()
    page.goto(url)
    return page


def test_a_run_typed_into_the_form_completes_and_its_pages_show_it(
    stack,  # noqa: F811
    deployments,  # noqa: F811
    context,
    shots,
    tiny_checkpoint,
    real_csv,
):
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    page = context.new_page()
    _open_custom_run(stack, page)
    _fill_small_run(page, tiny_checkpoint, real_csv)
    page.screenshot(path=shots / "1-form.png")
    flow_run_id = _submit(page, stack, deployments, shots)

    run = _wait_for(stack, flow_run_id, timeout=600)  # the API, not the page: the page is closed while training
    assert run["state_type"] == "COMPLETED", _logs(stack, run)
    page.reload()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("retrain-summary", exact=True).click()
    expect(page.get_by_text(re.compile(f"{NAME}.*version 1"))).to_be_visible()
    expect(page.get_by_text("promoted to champion")).to_be_visible()
    page.screenshot(path=shots / "2-run-summary-artifact.png", full_page=True)

    client = MlflowClient(tracking_uri=stack.config.mlflow_url)
    version = client.get_model_version_by_alias(NAME, "champion")
    fingerprint = client.get_run(version.run_id).data.tags["data_fingerprint"]
    link = page.get_by_role("link", name=version.run_id).get_attribute("href")
    assert link.startswith(stack.config.mlflow_url) and "workflowType=machine_learning" in link
    page.close()  # the run page polls: Chromium spends a core on it

    ml = _mlflow_page(context, link)  # the summary's link to the MLflow run, in model-training mode
    expect(ml.get_by_text(re.compile(rf"reviews\.csv \({fingerprint}\)"))).to_be_visible()  # the run's dataset
    expect(ml.get_by_role("link", name=NAME).first).to_be_visible()  # its registered model
    ml.screenshot(path=shots / "3-mlflow-run.png")
    ml.get_by_text("Model metrics", exact=True).click()
    ml.get_by_placeholder("Search metric charts").fill("train/loss")
    chart = ml.locator(".js-plotly-plot").first
    expect(chart.locator("path.point").nth(1)).to_be_attached()  # a curve: more than one point
    assert chart.locator("path.point").count() >= 2
    ml.screenshot(path=shots / "4-mlflow-loss-chart.png")
    ml.get_by_text("Artifacts", exact=True).click()
    ml.get_by_text("evaluation", exact=True).first.click()
    ml.get_by_text("confusion_matrix.png", exact=True).click()
    expect(ml.locator("img[src^='data:image/png']").first).to_be_visible()
    ml.screenshot(path=shots / "5-mlflow-confusion-matrix.png")

    ml.goto(f"{stack.config.mlflow_url}/#/models/{NAME}?workflowType=machine_learning")
    expect(ml.get_by_role("link", name="Version 1")).to_be_visible()
    expect(ml.get_by_text("@ champion", exact=False).first).to_be_visible()
    expect(ml.get_by_text(re.compile(r"trained by the retrain flow")).first).to_be_visible()  # the model's description
    ml.screenshot(path=shots / "6-mlflow-model.png")
    ml.goto(f"{stack.config.mlflow_url}/#/models/{NAME}/versions/1?workflowType=machine_learning")
    expect(ml.get_by_text(re.compile(rf"Data: .*fingerprint {fingerprint}")).first).to_be_visible()
    ml.screenshot(path=shots / "7-mlflow-version.png")


def test_a_value_the_flow_would_refuse_is_refused_by_the_form(stack, deployments, context, shots):  # noqa: F811
    from playwright.sync_api import expect

    body = {"flow_runs": {"deployment_id": {"any_": [deployments["manual"]["id"]]}}}
    before = len(stack.api.post("flow_runs/filter", json=body).json())
    page = context.new_page()
    _open_custom_run(stack, page)
    rate = _property(_property(page, "Training"), "Learning Rate")
    _type(_property(page, "Training"), "Learning Rate", -1)
    page.get_by_role("button", name="Submit", exact=True).click()
    # the form checks the schema itself: the field is marked and Submit sends nothing (its description beside the
    # input gives the bounds, "> 0, <= 1"); the server would refuse it too, naming params.training.learning_rate
    expect(rate.get_by_text("-1 is not valid")).to_be_visible()
    rate.scroll_into_view_if_needed()
    page.screenshot(path=shots / "8-refused-value.png")
    assert "(> 0, <= 1)" in rate.inner_text()
    assert len(stack.api.post("flow_runs/filter", json=body).json()) == before  # nothing was created


def test_unvalidated_bad_values_fail_the_run_at_once_naming_the_field(stack, deployments, context, shots):  # noqa: F811
    page = context.new_page()
    _open_custom_run(stack, page)
    _type(_property(page, "Training"), "Learning Rate", -1)
    page.get_by_role("checkbox", name="Validate parameters").uncheck()  # the server takes the run (uncheck checks)
    flow_run_id = _submit(page, stack, deployments, shots)
    run = _wait_for(stack, flow_run_id, timeout=300)
    assert run["state_type"] == "FAILED"
    assert "bad parameters: training.learning_rate: Input should be greater than 0" in run["state"]["message"]
    assert run["total_run_time"] < 5  # refused before any data is read or model loaded
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"}
    for _ in range(30):  # the run's last lines reach the API a moment after its state
        records = stack.api.post("logs/filter", json=body).json()
        if any(record["message"].startswith("Finished in state") for record in records):
            break
        time.sleep(1.0)
    errors = [record["message"] for record in records if record["level"] >= 40]
    assert errors == ["bad parameters: training.learning_rate: Input should be greater than 0"]  # no traceback
    page.reload()
    from playwright.sync_api import expect

    expect(page.get_by_text(re.compile("bad parameters: training.learning_rate")).first).to_be_visible()
    page.screenshot(path=shots / "9-unvalidated-run-failed.png")


def test_choosing_a_task_is_all_the_form_needs(stack, deployments, context, shots):  # noqa: F811
    """Every task-dependent field is empty in the form (its description names each task's default), so picking
    image-classification and submitting gives a run of that task's model, data and training settings."""
    from flows.params import TASK_DEFAULTS, RetrainParams

    pool = f"work_pools/{stack.config.work_pool}"
    assert stack.api.patch(pool, json={"is_paused": True}).status_code == 204  # the run is created, not run
    try:
        page = context.new_page()
        refused: list[str] = []  # API calls the server answered with an error, and console errors: for a failure
        page.on(
            "response",
            lambda response: (
                refused.append(f"{response.request.method} {response.url}: {response.status}")
                if response.status >= 400
                else None
            ),
        )
        page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
        _open_custom_run(stack, page)
        _property(page, "Task").locator(".p-select-button__control").click()
        page.keyboard.press("ArrowDown")  # opens the list (a click focuses the select only)
        page.get_by_role("option", name="image-classification", exact=True).click()
        page.keyboard.press("Escape")  # the list closed, nothing over the form
        page.screenshot(path=shots / "10-task-chosen.png")
        body = {
            "flow_runs": {"deployment_id": {"any_": [deployments["manual"]["id"]]}},
            "sort": "EXPECTED_START_TIME_DESC",
        }
        before = {run["id"] for run in stack.api.post("flow_runs/filter", json=body).json()}
        page.get_by_role("button", name="Submit", exact=True).click()
        deadline = time.monotonic() + 60  # the run created by the form, read from the API (not the toast)
        while not (new := [r for r in stack.api.post("flow_runs/filter", json=body).json() if r["id"] not in before]):
            if time.monotonic() > deadline:
                page.screenshot(path=shots / "10-task-submit-failed.png", full_page=True)
                pytest.fail(f"the form created no flow run within 60 s; errors seen by the page: {refused or 'none'}")
            time.sleep(0.5)
        flow_run_id = new[0]["id"]
        sent = stack.api.get(f"flow_runs/{flow_run_id}").json()["parameters"]["params"]
        params = RetrainParams.model_validate(sent)
        assert (params.task, params.base_model, params.dataset) == (
            "image-classification",
            "vit_mnist_patch4_28",
            "mnist-5k",
        )
        image, text = (
            TASK_DEFAULTS["image-classification"]["training"],
            TASK_DEFAULTS["text-classification"]["training"],
        )
        assert image["learning_rate"] != text["learning_rate"] and image["augment"] != text["augment"]
        assert params.training.learning_rate == image["learning_rate"] and params.training.augment is True
        assert params.export_formats == ["safetensors"]
        assert stack.api.delete(f"flow_runs/{flow_run_id}").status_code == 204
    finally:
        stack.api.patch(pool, json={"is_paused": False})
