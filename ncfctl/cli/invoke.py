"""``ncfctl invoke``: score a pair, recommend top-K, or replay a JSONL file against the deployment."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import DeploymentRefOpt, JsonOpt


def reply_rows(index: int, request: dict[str, Any], response: Any, latency_ms: float) -> list[dict[str, Any]]:
    """Table rows for one reply: one per recommended item, per scored pair, or the raw document."""
    base = {"#": index, "user": request.get("user_id")}
    if isinstance(response, dict):
        items = response.get("items") or response.get("recommendations")
        if isinstance(items, list) and all(isinstance(i, dict) for i in items):
            return [
                {**base, "rank": rank, "item": i.get("item_id"), "score": i.get("score"), "ms": latency_ms}
                for rank, i in enumerate(items, start=1)
            ]
        scores = response.get("scores")
        instances = request.get("instances")
        if isinstance(scores, list) and isinstance(instances, list) and len(scores) == len(instances):
            return [
                {"#": index, "user": p.get("user_id"), "item": p.get("item_id"), "score": s, "ms": latency_ms}
                for p, s in zip(instances, scores, strict=True)
            ]
        if "score" in response:
            return [{**base, "item": request.get("item_id"), "score": response["score"], "ms": latency_ms}]
    return [{**base, "response": jsonlib.dumps(response), "ms": latency_ms}]


def invoke_command(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="User id (raw id from your data).")] = None,
    item: Annotated[str | None, typer.Option("--item", help="Item id to score for --user.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Recommend the top K items for --user.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="JSONL file: one request body per line, sent in order.")
    ] = None,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="Top-K: keep items the user already interacted with.")
    ] = False,
    deployment: DeploymentRefOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Send requests to the newest running deployment (local URL or SageMaker endpoint)."""
    c = command_context(ctx, json_output=json_output)
    from ncfctl.serving.invoke import build_requests, invoke  # heavy: only once the flags are valid

    requests = build_requests(user, item, top_k, file, exclude_seen=not include_seen)
    with c.out.status(f"invoking {len(requests)} request(s)"):
        target, replies = invoke(c.config, c.workspace, requests, deployment)
    info = target.manifest.info
    payload = {
        "deployment": target.id,
        "backend": info.backend,
        "target": info.url or info.endpoint_name,
        "results": [
            {"request": r.request, "response": r.response, "latency_ms": round(r.latency_ms, 3)} for r in replies
        ],
    }
    rows = [
        row
        for index, r in enumerate(replies, start=1)
        for row in reply_rows(index, r.request, r.response, round(r.latency_ms, 2))
    ]
    columns = [col for col in ("#", "user", "rank", "item", "score", "response", "ms") if any(col in r for r in rows)]
    title = f"{payload['backend']} deployment {target.id} ({payload['target']})"
    c.out.result(payload, lambda: c.out.table(rows, title=title, columns=columns))


def register(app: typer.Typer) -> None:
    """Add ``invoke`` to the app."""
    app.command("invoke")(invoke_command)
