"""The ``serving`` config as the server's environment (``NCF_*``, read by ``ncf_serving.settings``).

A container is configured by environment variables, not flags, so the same values reach a local
server process and a SageMaker model (``PrimaryContainer.Environment``) the same way. ``workers``
unset leaves the server its default, one worker per vCPU of the machine it runs on.
"""

from __future__ import annotations

from ncfctl.config import ServingConfig


def server_environment(serving: ServingConfig) -> dict[str, str]:
    environment = {
        "NCF_MAX_BATCH": str(serving.max_batch),
        "NCF_MAX_TOP_K": str(serving.max_top_k),
        "NCF_MAX_BODY_BYTES": str(serving.max_body_bytes),
        "NCF_REQUEST_READ_SECONDS": str(serving.request_read_seconds),
    }
    if serving.workers is not None:
        environment["NCF_WORKERS"] = str(serving.workers)
    return environment
