"""The ``POST /invocations`` request forms, validated strictly, with errors that name the field.

Three forms, told apart by their keys::

    {"user_id": 42, "item_id": 56}                          -> one score
    {"instances": [{"user_id": 42, "item_id": 56}, ...]}    -> scores, in order
    {"user_id": 42, "top_k": 10, "exclude_seen": true}      -> best items (seen ones excluded by default)

Ids are the raw ids of the user's data: JSON integers or strings (never floats or booleans).
Strict pydantic models turn ``"top_k": "10"``, ``"top_k": 10.0`` or an unknown key into a 422
naming the field instead of a coercion or a crash.

``application/jsonlines`` (what SageMaker Batch Transform sends with ``SplitType: Line``) carries
one such request per line, answered one JSON document per line in the same order; at most
``max_batch`` lines per body, and an error names its line (``line 3.user_id: ...``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

MAX_ID_LENGTH = 256


class RequestError(Exception):
    """A client mistake: HTTP ``status`` with a one-line message naming ``field``."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": f"{self.field}: {self.message}", "field": self.field}


def _raw_id(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
        return value
    kind = "an empty or over-long string" if isinstance(value, str) else type(value).__name__
    raise PydanticCustomError("raw_id", "must be an integer or a string id from your data, got {kind}", {"kind": kind})


RawId = Annotated[Any, PlainValidator(_raw_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PairRequest(_Strict):
    user_id: RawId
    item_id: RawId


class BatchRequest(_Strict):
    instances: list[PairRequest] = Field(min_length=1)


class TopKRequest(_Strict):
    user_id: RawId
    top_k: int = Field(ge=1)
    exclude_seen: bool = True


InvocationRequest = PairRequest | BatchRequest | TopKRequest


JSON = "application/json"
JSON_LINES = "application/jsonlines"


def parse_jsonlines(body: bytes, max_batch: int, max_top_k: int) -> list[InvocationRequest]:
    """One request per non-empty line; an error's field names the line it is on (1-based)."""
    lines = [(n, line) for n, line in enumerate(body.splitlines(), start=1) if line.strip()]
    if not lines:
        raise RequestError(400, "body", "no JSON lines")
    if len(lines) > max_batch:
        raise RequestError(413, "body", f"{len(lines)} lines exceed the limit of {max_batch} per request")
    requests = []
    for number, line in lines:
        try:
            requests.append(parse_invocation(line, max_batch, max_top_k))
        except RequestError as exc:
            raise RequestError(exc.status, f"line {number}.{exc.field}", exc.message) from None
    return requests


def parse_invocation(body: bytes, max_batch: int, max_top_k: int) -> InvocationRequest:
    """Decode and validate a request body; raise :class:`RequestError` for anything malformed."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, "body", f"not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(document, dict):
        raise RequestError(400, "body", f"expected a JSON object, got {type(document).__name__}")
    if "instances" in document:
        model: type[InvocationRequest] = BatchRequest
        instances = document["instances"]
        if isinstance(instances, list) and len(instances) > max_batch:
            raise RequestError(413, "instances", f"{len(instances)} pairs exceed the limit of {max_batch} per request")
    elif "top_k" in document:
        model = TopKRequest
    else:
        model = PairRequest
    try:
        request = model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(422, field, first["msg"]) from None
    if isinstance(request, TopKRequest) and request.top_k > max_top_k:
        raise RequestError(422, "top_k", f"must be between 1 and {max_top_k}, got {request.top_k}")
    return request
