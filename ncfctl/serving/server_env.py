"""The ``serving`` config as the server's environment (``NCF_*``, read by ``ncf_serving.settings``).

A container is configured by environment variables, not flags, so the same values reach a local
server process and a SageMaker model (``PrimaryContainer.Environment``) the same way.
"""

from __future__ import annotations

from ncfctl.config import ServingConfig


def server_environment(serving: ServingConfig) -> dict[str, str]:
    return {
        "NCF_MAX_BATCH": str(serving.max_batch),
        "NCF_MAX_TOP_K": str(serving.max_top_k),
        "NCF_MAX_BODY_BYTES": str(serving.max_body_bytes),
        "NCF_REQUEST_READ_SECONDS": str(serving.request_read_seconds),
    }
