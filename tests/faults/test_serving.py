"""A served champion under concurrent clients: ``mlflow models serve`` of ``models:/NAME@champion``, a real process.

The real MiniLM-L6 with a seeded, untrained 2-label head is logged and registered through
``modelcore.integrations.mlflow_models`` into a temporary SQLite store and made ``champion``; ``mlflow models serve``
serves it on loopback. 8 client threads then send 500 requests each (small batches of real Rotten Tomatoes
snippets of different lengths, in every JSON format, so each batch pads differently). Before the tokenizer stopped
switching padding on its shared backend per call, 0.2-0.4% of such requests got a 400 ("cannot make a rectangular
tensor"). Here every answer must be a 200 equal to the in-process pipeline's, the server's memory must not grow
with the load, and values that are not text must get a 400 naming the field.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import threading
import time

import numpy as np
import pytest

from tests.mlflow_serving import served

NAME = "served-sentiment"
CLIENTS = 8
REQUESTS_PER_CLIENT = 500
WARMUP_PER_CLIENT = 25
DISTINCT_REQUESTS = 96
LOAD_TIMEOUT_S = 420  # the whole 8 x 500 load; on 2 busy cores it takes about a third of that
RSS_GROWTH_LIMIT_MB = 48
FORMATS = ("dataframe_records", "dataframe_split", "inputs", "instances")


@pytest.fixture(scope="module")
def champion(tmp_path_factory, minilm_dir):
    """``models:/NAME@champion`` in a fresh SQLite store: the real MiniLM, seeded 2-label head; its checkpoint dir."""
    import torch
    from mlflow import MlflowClient

    from modelcore import AutoModelForSequenceClassification, AutoTokenizer
    from modelcore.integrations.mlflow_models import log_pyfunc, register_version

    root = tmp_path_factory.mktemp("serving")
    checkpoint = root / "checkpoint"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(checkpoint)

    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    log_pyfunc(run_id, checkpoint, tracking_uri=tracking_uri, input_example=["a film", ""])
    client.set_terminated(run_id)
    version = register_version(NAME, run_id, tracking_uri=tracking_uri)
    client.set_registered_model_alias(NAME, "champion", version.version)
    return tracking_uri, checkpoint, root


@pytest.fixture(scope="module")
def server(champion):
    """``mlflow models serve -m models:/NAME@champion`` on a free loopback port; yields (port, process)."""
    import psutil

    tracking_uri, _, root = champion
    # one torch thread per request: the scoring server's own threads (6 on 2 cores) already fill the cores, and
    # each taking 2 intra-op threads made a request 5x slower on a loaded machine
    with served(f"models:/{NAME}@champion", tracking_uri, root, threads=1) as (port, pid):
        yield port, psutil.Process(pid)


def _body(texts: list[str], form: str) -> bytes:
    if form == "dataframe_records":
        payload = {form: [{"text": t} for t in texts]}
    elif form == "dataframe_split":
        payload = {form: {"columns": ["text"], "data": [[t] for t in texts]}}
    else:
        payload = {form: texts}
    return json.dumps(payload).encode()


def _post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def _requests(rotten_tomatoes) -> list[tuple[list[str], str]]:
    """Distinct requests: 1 to 4 real snippets of different lengths each, in the four JSON formats."""
    rng = random.Random(0)
    pool = [row["text"] for row in rotten_tomatoes[:3000]]
    return [(rng.sample(pool, 1 + k % 4), FORMATS[(k // 4) % len(FORMATS)]) for k in range(DISTINCT_REQUESTS)]


def _load(port: int, requests: list, expected: list[np.ndarray], per_client: int) -> dict:
    """CLIENTS threads, each sending ``per_client`` requests on its own keep-alive connection."""
    bodies = [_body(texts, form) for texts, form in requests]
    failures: list[str] = []
    mismatches: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_TIMEOUT_S

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for n in range(per_client):
                if time.monotonic() > deadline:
                    with lock:
                        failures.append(f"client {index}: load deadline passed at request {n}")
                    return
                k = (n * CLIENTS + index * 7) % len(requests)
                try:
                    status, data = _post(connection, bodies[k])
                except (OSError, http.client.HTTPException) as error:
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    with lock:
                        failures.append(f"client {index} request {n}: {error!r}")
                    continue
                if not 200 <= status < 300:
                    with lock:
                        failures.append(f"client {index} request {n}: {status} {_error_text(data)}")
                    continue
                rows = json.loads(data)["predictions"]
                got = np.array([[row["prob_LABEL_0"], row["prob_LABEL_1"]] for row in rows])
                if got.shape != expected[k].shape or not np.allclose(got, expected[k], atol=1e-5, rtol=0):
                    with lock:
                        mismatches.append(f"request {k}: {got.tolist()} != {expected[k].tolist()}")
        finally:
            connection.close()

    begin = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic() + 70))
    return {
        "seconds": time.monotonic() - begin,
        "hung": sum(thread.is_alive() for thread in threads),
        "failures": failures,
        "mismatches": mismatches,
    }


def _error_text(data: bytes) -> str:
    """MLflow's error message and the last line of its stack trace (where the model's own error is)."""
    try:
        error = json.loads(data)
    except ValueError:
        return repr(data[:300])
    trace = (error.get("stack_trace") or "").strip().splitlines()
    return f"{error.get('message', '')[:200]} | {trace[-1][:300] if trace else ''}"


def _rss_mb(process) -> float:
    """Resident memory of the server's process tree (mlflow CLI, uvicorn and its workers), in MB."""
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total / 2**20


def test_8_clients_x_500_requests_all_answered_200_as_in_process_with_flat_memory(server, champion, rotten_tomatoes):
    from modelcore.pipelines import pipeline

    port, process = server
    _, checkpoint, _ = champion
    requests = _requests(rotten_tomatoes)
    pipe = pipeline("text-classification", model=str(checkpoint))
    expected = [pipe.predict_proba(texts) for texts, _ in requests]  # the pyfunc's batching: 64, no max_length

    warmup = _load(port, requests, expected, WARMUP_PER_CLIENT)
    assert warmup["failures"] == [] and warmup["mismatches"] == [] and warmup["hung"] == 0, warmup
    rss_warm = _rss_mb(process)
    load = _load(port, requests, expected, REQUESTS_PER_CLIENT)
    rss_after = _rss_mb(process)
    total = CLIENTS * REQUESTS_PER_CLIENT
    print(
        f"\n[serving] {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests: {load['seconds']:.1f} s "
        f"({total / load['seconds']:.0f} requests/s), {len(load['failures'])} non-2xx or failed, "
        f"{len(load['mismatches'])} mismatched; server RSS {rss_warm:.0f} MB after warm-up "
        f"({CLIENTS} x {WARMUP_PER_CLIENT}), {rss_after:.0f} MB after the load ({rss_after - rss_warm:+.1f} MB)"
    )
    assert load["hung"] == 0
    assert load["failures"] == [], f"{len(load['failures'])} of {total} requests failed: {load['failures'][:5]}"
    assert load["mismatches"] == [], load["mismatches"][:5]
    assert rss_after - rss_warm < RSS_GROWTH_LIMIT_MB


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": [1, 2, 3]}, "'text' of row 0 must be a string, got int"),
        ({"inputs": None}, "'text' must be a list of strings"),
        ({"dataframe_records": [{"text": "fine"}, {"text": None}]}, "'text' of row 1 must be a string, got null"),
        (
            {"dataframe_split": {"columns": ["text"], "data": [["fine"], [3.5]]}},
            "'text' of row 1 must be a string, got float",
        ),
        ({"dataframe_records": [{"review": "fine"}]}, "no 'text' column"),
        ([1, 2, 3], "input fields"),  # no format key: MLflow's own parser refuses it
    ],
)
def test_values_that_are_not_text_get_400_naming_the_field(server, payload, message):
    port, _ = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        status, data = _post(connection, json.dumps(payload).encode())
        assert status == 400, data
        assert message in json.loads(data)["message"]
        status, _ = _post(connection, _body(["still serving"], "inputs"))
        assert status == 200
    finally:
        connection.close()
