"""The real server in a subprocess on a loopback port, spoken to over HTTP: every request form and bad input."""

from __future__ import annotations

import json
import signal
import time

import httpx
import numpy as np
import pytest
import torch
from conftest import ServingProcess, export_onnx, separated_ncf, tiny_interaction_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ncfctl.models import NCFSpec
from ncfctl.serving.bundle import write_serving_bundle

torch.set_num_threads(1)
MAX_BATCH = 64
MAX_TOP_K = 25
USER_BASE, ITEM_BASE = 100, 1000  # raw ids in the data: users "100".."159", items "1000".."1039"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server, model, data): a NeuMF bundle with numeric raw ids, served for the whole module."""
    data = tiny_interaction_data()
    data.user_ids = np.array([str(USER_BASE + u) for u in range(data.num_users)])
    data.item_ids = np.array([str(ITEM_BASE + i) for i in range(data.num_items)])
    spec = NCFSpec(num_users=60, num_items=40, factors=8, mlp_user_dim=8, mlp_item_dim=8, hidden=[16, 8])
    model = separated_ncf(spec)
    folder = tmp_path_factory.mktemp("bundle")
    export_onnx(model, folder / "model.onnx")
    models = [{"batch_size": None, "path": "model.onnx"}]
    write_serving_bundle(folder, model, data, runtime="onnxruntime", models=models, source_model="m1", target="local")
    env = {"NCF_MAX_BATCH": str(MAX_BATCH), "NCF_MAX_TOP_K": str(MAX_TOP_K)}
    server = ServingProcess(folder, tmp_path_factory.mktemp("logs") / "server.log", env)
    server.wait_ready()
    yield server, model, data
    server.stop()


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served[0].url, timeout=10) as http:
        yield http


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    """``GET /metrics`` as {(sample name, sorted labels): value}."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def invoke(client: httpx.Client, document) -> httpx.Response:
    return client.post("/invocations", json=document)


def model_scores(model, users, items) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.as_tensor(users), torch.as_tensor(items)).numpy()


def test_ping_is_ready(client):
    assert client.get("/ping").json() == {"status": "ready"}


def test_single_pair(client, served):
    _, model, _ = served
    response = invoke(client, {"user_id": USER_BASE + 3, "item_id": str(ITEM_BASE + 7)})
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["user_id"] == USER_BASE + 3 and body["item_id"] == str(ITEM_BASE + 7)
    assert body["score"] == pytest.approx(float(model_scores(model, [3], [7])[0]), abs=1e-5)


def test_instances_keep_their_order(client, served):
    _, model, _ = served
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 60, MAX_BATCH), rng.integers(0, 40, MAX_BATCH)
    instances = [
        {"user_id": int(USER_BASE + u), "item_id": int(ITEM_BASE + i)} for u, i in zip(users, items, strict=True)
    ]
    response = invoke(client, {"instances": instances})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["scores"], model_scores(model, users, items), atol=1e-5)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_top_k_matches_the_model_ranking(client, served, exclude_seen):
    _, model, data = served
    indptr, seen = data.seen_items(include_val=True)
    for user in (0, 17, 59):
        request = {"user_id": USER_BASE + user, "top_k": 10}
        if not exclude_seen:
            request["exclude_seen"] = False
        body = invoke(client, request).json()
        scores = model_scores(model, np.full(40, user), np.arange(40))
        if exclude_seen:
            scores[seen[indptr[user] : indptr[user + 1]]] = -np.inf
        expected = np.lexsort((np.arange(40), -scores))[:10]
        assert [entry["item_id"] for entry in body["items"]] == [ITEM_BASE + int(i) for i in expected]
        np.testing.assert_allclose([entry["score"] for entry in body["items"]], scores[expected], atol=1e-5)


def test_top_k_larger_than_the_unseen_items_returns_what_is_left(client, served):
    _, _, data = served
    indptr, _ = data.seen_items(include_val=True)
    body = invoke(client, {"user_id": USER_BASE, "top_k": MAX_TOP_K}).json()
    assert len(body["items"]) == min(MAX_TOP_K, 40 - int(indptr[1] - indptr[0]))


BIG = {"instances": [{"user_id": USER_BASE, "item_id": ITEM_BASE}] * (MAX_BATCH + 1)}
BAD_REQUESTS = [
    # (description, body bytes or JSON document, status, field)
    ("malformed JSON", b'{"user_id": 1', 400, "body"),
    ("JSON array", [1, 2], 400, "body"),
    ("JSON string", "hello", 400, "body"),
    ("float user id", {"user_id": 101.0, "item_id": ITEM_BASE}, 422, "user_id"),
    ("bool item id", {"user_id": USER_BASE, "item_id": True}, 422, "item_id"),
    ("null user id", {"user_id": None, "item_id": ITEM_BASE}, 422, "user_id"),
    ("list user id", {"user_id": [USER_BASE], "item_id": ITEM_BASE}, 422, "user_id"),
    ("empty string id", {"user_id": "", "item_id": ITEM_BASE}, 422, "user_id"),
    ("over-long string id", {"user_id": "9" * 300, "item_id": ITEM_BASE}, 422, "user_id"),
    ("missing item", {"user_id": USER_BASE}, 422, "item_id"),
    ("unknown field", {"user_id": USER_BASE, "item_id": ITEM_BASE, "debug": 1}, 422, "debug"),
    ("unknown user", {"user_id": 99, "item_id": ITEM_BASE}, 422, "user_id"),
    ("unknown item", {"user_id": USER_BASE, "item_id": 5}, 422, "item_id"),
    ("negative user", {"user_id": -1, "item_id": ITEM_BASE}, 422, "user_id"),
    ("huge item", {"user_id": USER_BASE, "item_id": 10**30}, 422, "item_id"),
    ("index instead of raw id", {"user_id": 0, "top_k": 5}, 422, "user_id"),
    ("top_k zero", {"user_id": USER_BASE, "top_k": 0}, 422, "top_k"),
    ("top_k negative", {"user_id": USER_BASE, "top_k": -3}, 422, "top_k"),
    ("top_k above max", {"user_id": USER_BASE, "top_k": MAX_TOP_K + 1}, 422, "top_k"),
    ("top_k as string", {"user_id": USER_BASE, "top_k": "10"}, 422, "top_k"),
    ("top_k as float", {"user_id": USER_BASE, "top_k": 2.5}, 422, "top_k"),
    ("exclude_seen as string", {"user_id": USER_BASE, "top_k": 3, "exclude_seen": "no"}, 422, "exclude_seen"),
    ("instances not a list", {"instances": {"user_id": USER_BASE}}, 422, "instances"),
    ("empty instances", {"instances": []}, 422, "instances"),
    (
        "bad instance",
        {"instances": [{"user_id": USER_BASE, "item_id": ITEM_BASE}, {"user_id": "x"}]},
        422,
        "instances.1.item_id",
    ),
    ("unknown item in batch", {"instances": [{"user_id": USER_BASE, "item_id": 1}]}, 422, "instances.0.item_id"),
    ("batch above max", BIG, 413, "instances"),
]


@pytest.mark.parametrize(("what", "document", "status", "field"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_input_is_a_4xx_naming_the_field(client, what, document, status, field):
    content = document if isinstance(document, bytes) else json.dumps(document).encode()
    response = client.post("/invocations", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["field"] == field and response.json()["error"].startswith(f"{field}: ")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/invocations", content=b'{"user_id": 100, "item_id": 1000}', headers=headers)
    assert response.status_code == 415 and response.json()["field"] == "Content-Type"


def test_body_over_the_limit_is_413_with_or_without_content_length(client):
    oversized = b'{"pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    declared = client.post("/invocations", content=oversized, headers={"content-type": "application/json"})
    chunked = client.post(
        "/invocations",
        content=(oversized[i : i + 65536] for i in range(0, len(oversized), 65536)),
        headers={"content-type": "application/json"},
    )
    for response in (declared, chunked):
        assert response.status_code == 413 and response.json()["field"] == "body"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values | st.sampled_from([USER_BASE, str(USER_BASE + 5), -1, 2**63]),
        "item_id": json_values | st.sampled_from([ITEM_BASE, str(ITEM_BASE + 1)]),
        "top_k": json_values | st.integers(-5, 2000),
        "exclude_seen": json_values,
        "instances": st.lists(st.fixed_dictionaries({"user_id": json_values, "item_id": json_values}), max_size=3),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=json_values | request_like)
def test_fuzzed_json_never_breaks_the_server(client, document):
    response = client.post("/invocations", content=json.dumps(document), headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 413, 422), response.text
    assert isinstance(response.json(), dict)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=64))
def test_fuzzed_bytes_never_break_the_server(client, raw):
    response = client.post("/invocations", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 413, 422), response.text


def test_metrics_and_one_log_line_per_request(client, served):
    server = served[0]
    before = len([ln for ln in server.log().splitlines() if '"ncf_serving.access"' in ln])
    invoke(client, {"user_id": USER_BASE, "top_k": 3})
    invoke(client, {"user_id": USER_BASE, "top_k": 0})
    metrics = scrape(client)
    assert metrics["ncf_requests_total", (("kind", "topk"), ("path", "/invocations"), ("status", "200"))] >= 1
    assert metrics["ncf_requests_total", (("kind", "invalid"), ("path", "/invocations"), ("status", "422"))] >= 1
    assert metrics["ncf_request_seconds_bucket", (("kind", "topk"), ("le", "+Inf"), ("path", "/invocations"))] >= 1
    assert metrics["ncf_model_ready", ()] == 1
    time.sleep(0.2)
    lines = [json.loads(ln) for ln in server.log().splitlines() if '"ncf_serving.access"' in ln]
    assert len(lines) == before + 3  # two invocations + the /metrics request
    topk_ok, topk_bad = lines[before], lines[before + 1]
    assert topk_ok["status"] == 200 and topk_ok["kind"] == "topk" and topk_ok["latency_ms"] > 0
    assert topk_bad["status"] == 422 and "user_id" not in topk_bad  # no request content in logs


def test_server_survived_everything(client, served):
    assert served[0].proc.poll() is None
    assert client.get("/ping").status_code == 200
    assert invoke(client, {"user_id": USER_BASE, "item_id": ITEM_BASE}).status_code == 200
    assert "Traceback" not in served[0].log()


def test_ping_is_503_until_loaded_and_warmed_then_200(serving_process, served):
    """Port and model dir from the environment (SAGEMAKER_BIND_TO_PORT, NCF_MODEL_DIR), as in the image."""
    server = serving_process(served[0].model_dir, env={"NCF_WARMUP_ROUNDS": "3000"}, wait=False, flags=False)
    seen, early = [], []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and 200 not in seen:
        try:
            response = httpx.get(f"{server.url}/ping", timeout=2)
        except httpx.TransportError:
            time.sleep(0.01)
            continue
        seen.append(response.status_code)
        if response.status_code == 503:
            assert response.json() == {"status": "loading"}
            invocation = httpx.post(f"{server.url}/invocations", json={"user_id": USER_BASE, "item_id": ITEM_BASE})
            early.append(invocation.status_code)
    assert seen[0] == 503 and seen[-1] == 200 and set(seen) == {503, 200}
    assert 503 in early and set(early) <= {503, 200}  # never a 500 while loading


def test_a_broken_bundle_exits_1_with_the_reason(serving_process, tmp_path):
    server = serving_process(tmp_path, wait=False)
    assert server.proc.wait(60) == 1
    assert "model failed to load" in server.log() and "serving.json not found" in server.log()


def test_sigterm_shuts_down_cleanly_and_fast(serving_process, served):
    server = serving_process(served[0].model_dir)
    assert httpx.post(f"{server.url}/invocations", json={"user_id": USER_BASE, "top_k": 5}).status_code == 200
    with httpx.Client(base_url=server.url) as keep_alive:  # an idle keep-alive connection must not hold shutdown
        keep_alive.get("/ping")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(30)
    assert code == 0 and time.monotonic() - started < 15
    assert "server stopped" in server.log()


def test_jsonlines_answers_one_line_per_request(client, served):
    """``application/jsonlines`` (SageMaker Batch Transform, SplitType Line): answers in order, one per line."""
    requests = [
        {"user_id": USER_BASE + 1, "top_k": 3},
        {"user_id": USER_BASE + 2, "item_id": ITEM_BASE + 4},
        {"instances": [{"user_id": USER_BASE, "item_id": ITEM_BASE}]},
    ]
    body = "\n".join(json.dumps(r) for r in requests) + "\n\n"  # a trailing blank line is not a request
    response = client.post("/invocations", content=body, headers={"content-type": "application/jsonlines"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/jsonlines"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == [invoke(client, r).json() for r in requests]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"user_id": 100, "top_k": 2}\n{"user_id": 99999, "top_k": 2}\n', 422, "line 2.user_id"),
        (b'{"user_id": 100, "top_k": 2}\nnot json\n', 400, "line 2.body"),
        (b"\n\n", 400, "body"),
        (b'{"user_id": 100, "top_k": 1}\n' * (MAX_BATCH + 1), 413, "body"),
    ],
    ids=["unknown user on line 2", "bad JSON on line 2", "no lines", "too many lines"],
)
def test_jsonlines_errors_name_the_line(client, body, status, field):
    response = client.post("/invocations", content=body, headers={"content-type": "application/jsonlines"})
    assert response.status_code == status and response.json()["field"] == field
