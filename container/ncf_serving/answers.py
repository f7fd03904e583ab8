"""Turn a validated invocation into its JSON answer: raw ids in, raw ids out.

Unknown ids (including negative or huge ones, which no data set holds) become a 422 naming the
exact field, e.g. ``instances.3.item_id``. Scores are the model's raw outputs: logits for the
implicit task (rank by them; ``sigmoid`` gives a probability) and predicted ratings for explicit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ncf_serving.ids import IdMap
from ncf_serving.invocations import BatchRequest, InvocationRequest, PairRequest, RequestError, TopKRequest
from ncf_serving.predictor import Predictor


def _index(ids: IdMap, raw_id: int | str, field: str, what: str) -> int:
    index = ids.lookup(raw_id)
    if index is None:
        raise RequestError(422, field, f"unknown {what} {raw_id!r} (not in the data this model was trained on)")
    return index


def kind_of(request: InvocationRequest) -> str:
    """The metrics/log label of a request form."""
    return {PairRequest: "pair", BatchRequest: "batch", TopKRequest: "topk"}[type(request)]


def answer(predictor: Predictor, request: InvocationRequest) -> dict[str, Any]:
    if isinstance(request, TopKRequest):
        user = _index(predictor.users, request.user_id, "user_id", "user")
        items, scores = predictor.top_k(user, request.top_k, request.exclude_seen)
        ranked = zip(predictor.items.to_public(items), scores.tolist(), strict=True)
        return {"user_id": request.user_id, "items": [{"item_id": i, "score": s} for i, s in ranked]}
    if isinstance(request, BatchRequest):
        users = np.fromiter(
            (
                _index(predictor.users, p.user_id, f"instances.{n}.user_id", "user")
                for n, p in enumerate(request.instances)
            ),
            dtype=np.int64,
            count=len(request.instances),
        )
        items = np.fromiter(
            (
                _index(predictor.items, p.item_id, f"instances.{n}.item_id", "item")
                for n, p in enumerate(request.instances)
            ),
            dtype=np.int64,
            count=len(request.instances),
        )
        return {"scores": predictor.score(users, items).tolist()}
    user = _index(predictor.users, request.user_id, "user_id", "user")
    item = _index(predictor.items, request.item_id, "item_id", "item")
    score = predictor.score(np.array([user]), np.array([item]))[0]
    return {"user_id": request.user_id, "item_id": request.item_id, "score": float(score)}
