"""``ncfctl invoke``: send scoring / top-K requests to the newest running deployment.

Local deployments are called over HTTP (``POST {url}/invocations``); SageMaker endpoints through
``sagemaker-runtime InvokeEndpoint``, the same API a production client uses. Either way a request
the server rejects becomes one line carrying the server's own message (for SageMaker the
container's original message out of the ``ModelError``), never a traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx

from ncfctl.aws.clients import client, error_message
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.serving.deploy import find_deployment
from ncfctl.workspace import Artifact, Workspace

CONTENT_TYPE = "application/json"
HEADERS = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}


@dataclass
class Reply:
    request: dict[str, Any]
    response: Any
    latency_ms: float


def read_requests(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line (UTF-8); a bad line is named by its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise NcfError(f"`file` {path}: {exc.strerror}", settings=("file",)) from None
    except UnicodeDecodeError as exc:
        raise NcfError(
            f"`file` {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})", settings=("file",)
        ) from None
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NcfError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise NcfError(f"{path} line {number}: JSON nested too deeply") from None
        except ValueError as exc:  # e.g. an integer past Python's 4300-digit conversion limit
            raise NcfError(f"{path} line {number}: {str(exc).splitlines()[0]}") from None
        if not isinstance(request, dict):
            raise NcfError(f"{path} line {number}: expected a JSON object, got {type(request).__name__}")
        requests.append(request)
    if not requests:
        raise NcfError(f"{path} holds no requests (one JSON object per line)")
    return requests


def build_requests(
    user: str | None,
    item: str | None = None,
    top_k: int | None = None,
    file: Path | None = None,
    exclude_seen: bool = True,
) -> list[dict[str, Any]]:
    """The request bodies for the arguments given: one pair, one top-K query, or a JSONL file.

    Ids go out exactly as typed, as JSON strings (``007``, ``1_0``, `` 1`` and fullwidth digits
    included): the server looks them up in the data's raw-id table as text, so sending ``int("007")``
    would name another user.
    """
    if file is not None:
        if user is not None or item is not None or top_k is not None:
            raise NcfError(
                "`file` cannot be combined with `user`/`item`/`top_k`", settings=("file", "user", "item", "top_k")
            )
        return read_requests(file)
    if user is None:
        raise NcfError(
            "give `user` with `item` or `top_k`, or `file` requests.jsonl", settings=("user", "item", "top_k", "file")
        )
    if (item is None) == (top_k is None):
        raise NcfError("give exactly one of `item` (score a pair) and `top_k` (recommend)", settings=("item", "top_k"))
    if item is not None:
        return [{"user_id": user, "item_id": item}]
    request: dict[str, Any] = {"user_id": user, "top_k": top_k}
    if not exclude_seen:
        request["exclude_seen"] = False
    return [request]


def error_text(body: bytes | str) -> str:
    """The server's error message from a JSON error body (or the raw text), on one line."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return " ".join(text.split())[:300] or "empty response"
    if isinstance(doc, dict):
        message = doc.get("error") or doc.get("message") or doc.get("detail") or doc
        field = doc.get("field")
        text = f"{field}: {message}" if field and field not in str(message) else str(message)
    return " ".join(str(text).split())[:300]


def _local(url: str, requests: Iterable[dict[str, Any]], timeout: float) -> list[Reply]:
    replies = []
    with httpx.Client(base_url=url, timeout=timeout) as http:
        for request in requests:
            start = time.perf_counter()
            try:
                response = http.post("/invocations", content=json.dumps(request), headers=HEADERS)
            except httpx.HTTPError as exc:
                raise NcfError(
                    f"{url}/invocations: {exc}", hint="is it running? check the deployment's status"
                ) from None
            latency = (time.perf_counter() - start) * 1000
            if response.status_code >= 400:
                raise NcfError(f"{url}/invocations answered {response.status_code}: {error_text(response.content)}")
            replies.append(Reply(request, response.json(), latency))
    return replies


def _sagemaker(config: Config, endpoint: str, requests: Iterable[dict[str, Any]]) -> list[Reply]:
    runtime = client(config.aws, "sagemaker-runtime")
    replies = []
    for request in requests:
        start = time.perf_counter()
        try:
            response = runtime.invoke_endpoint(
                EndpointName=endpoint, ContentType=CONTENT_TYPE, Accept=CONTENT_TYPE, Body=json.dumps(request)
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ModelError":
                status = exc.response.get("OriginalStatusCode", "?")
                original = exc.response.get("OriginalMessage") or exc.response["Error"].get("Message", "")
                message = error_text(original)
                raise NcfError(f"endpoint {endpoint}: the container answered {status}: {message}") from None
            raise NcfError(f"endpoint {endpoint}: {error_message(exc)}") from None
        body = response["Body"].read()
        latency = (time.perf_counter() - start) * 1000
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError:
            parsed = body.decode("utf-8", "replace")
        replies.append(Reply(request, parsed, latency))
    return replies


def invoke(
    config: Config, workspace: Workspace, requests: list[dict[str, Any]], deployment: str | None = None
) -> tuple[Artifact, list[Reply]]:
    """Send ``requests`` in order to the deployment (default: the newest running one)."""
    target = find_deployment(workspace, deployment)
    info = target.manifest.info
    if info.status != "running":
        raise NcfError(f"deployment {target.id} is {info.status}, not running", hint="check the deployment's status")
    if info.backend == "local":
        return target, _local(info.url, requests, config.deploy.invoke_timeout)
    return target, _sagemaker(config, info.endpoint_name, requests)
