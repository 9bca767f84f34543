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

import contextlib
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


SUBMIT_TRIES = 3


def _submit(page, stack, deployments, shots: Path, follow: bool = True) -> str:  # noqa: F811
    """Submit the form as a person does; the id of the flow run it created (and, with ``follow``, its page open).

    Prefect's server answers 503 ("Service Unavailable", retry) when SQLite is busy: a deferred transaction that
    read before another connection's write cannot write, whatever the lock timeout, and the scheduler, the worker's
    polls and the event writer write every few seconds. Prefect's Python client retries those answers; its UI
    shows an error toast and keeps the form, and the person submits again: so does this, up to ``SUBMIT_TRIES``
    times, and only after a 503. The run is then found over the API (exactly one new run of the deployment), and
    followed from the toast's "View run" (the button exists twice: the last is the toast's), or by its address when
    the toast came and went unseen on a loaded machine. A form that created no run fails the test with what the
    page showed: its toasts, the fields it marked, the API calls answered with an error.
    """
    before = _manual_runs(stack, deployments)
    refused: list[str] = []  # API calls answered with an error, and console errors: for a failure's message
    busy: list[str] = []  # the submit's own calls answered 503

    def note_refusal(response) -> None:
        if response.status >= 400:
            refused.append(f"{response.request.method} {response.url}: {response.status}")
        if response.status == 503 and re.search(r"/create_flow_run$|/schemas/validate$", response.url):
            busy.append(response.url)

    page.on("response", note_refusal)
    page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
    created: set[str] = set()
    for _ in range(SUBMIT_TRIES):
        seen = len(busy)
        page.get_by_role("button", name="Submit", exact=True).click()
        deadline = time.monotonic() + WAIT_MS / 1000
        while not (created := _manual_runs(stack, deployments) - before) and time.monotonic() < deadline:
            if len(busy) > seen:
                break
            page.wait_for_timeout(500)  # not time.sleep: the page's events arrive while playwright waits
        if created or len(busy) == seen:
            break
        page.wait_for_timeout(1000)  # the toast says to try again; a person reads it first
    if len(created) != 1:
        page.screenshot(path=shots / "submit-failed.png")
        marked = page.locator(".p-label__message--failed").or_(page.get_by_text(re.compile("went wrong", re.I)))
        shown = marked.all_inner_texts()  # the fields the form refused, the error toasts
        pytest.fail(f"Submit created {len(created)} runs; the page showed {shown}, errors from {refused}; "
                    f"screenshot {shots / 'submit-failed.png'}")  # fmt: skip
    (flow_run_id,) = created
    if follow:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            page.get_by_role("button", name="View run").last.click(timeout=5_000)
            page.wait_for_url(re.compile(rf"/runs/flow-run/{flow_run_id}$"))
        except PlaywrightTimeout:
            page.goto(f"{stack.config.prefect_ui_url}/runs/flow-run/{flow_run_id}")
    return flow_run_id


@contextlib.contextmanager
def _pool_paused(stack):  # noqa: F811
    """The work pool paused: a run the form creates stays scheduled (its parameters are read, it is not run)."""
    pool = f"work_pools/{stack.config.work_pool}"
    assert stack.api.patch(pool, json={"is_paused": True}).status_code == 204
    try:
        yield
    finally:
        stack.api.patch(pool, json={"is_paused": False})


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

    with _pool_paused(stack):
        page = context.new_page()
        _open_custom_run(stack, page)
        _property(page, "Task").locator(".p-select-button__control").click()
        page.keyboard.press("ArrowDown")  # opens the list (a click focuses the select only)
        page.get_by_role("option", name="image-classification", exact=True).click()
        page.keyboard.press("Escape")  # the list closed, nothing over the form
        page.screenshot(path=shots / "10-task-chosen.png")
        flow_run_id = _submit(page, stack, deployments, shots, follow=False)
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


def test_a_busy_servers_503_keeps_the_form_and_submitting_again_creates_one_run(stack, deployments, context, shots):  # noqa: F811
    """Prefect's server answers 503 when its SQLite is busy (``_submit``); the UI shows an error and keeps what was
    typed, and submitting again creates the run, once. The first create_flow_run call is answered 503 here."""
    answered: list[int] = []

    def busy_once(route) -> None:
        if not answered:
            answered.append(503)
            route.fulfill(
                status=503, content_type="application/json", json={"exception_message": "Service Unavailable"}
            )
        else:
            answered.append(0)
            route.continue_()

    with _pool_paused(stack):
        page = context.new_page()
        page.route(re.compile(r"/api/deployments/[0-9a-f-]{36}/create_flow_run$"), busy_once)
        _open_custom_run(stack, page)
        _type(page, "Registered Model Name", "typed-before-the-503")
        flow_run_id = _submit(page, stack, deployments, shots, follow=False)
        assert answered == [503, 0]  # one refused call, one that went through
        page.screenshot(path=shots / "11-submitted-after-a-503.png")
        sent = stack.api.get(f"flow_runs/{flow_run_id}").json()["parameters"]["params"]
        assert sent["registered_model_name"] == "typed-before-the-503"  # the form kept it through the 503
        assert stack.api.delete(f"flow_runs/{flow_run_id}").status_code == 204
