"""The ``sagemaker`` SDK (v3, the ``aws`` extra) where it is the reference: image URIs and pipeline definitions.

The SDK is imported only here and only when a command needs it: it pulls ~136 packages, takes
seconds to import and its workflow modules build a boto3 session at import time, which fails
without a region. :func:`load` therefore sets ``AWS_DEFAULT_REGION`` from ``aws.region`` (when the
environment has none) before the first import, and turns a missing extra into one line.
Everything else ncfctl does on AWS is plain boto3.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from ncfctl.config import AwsConfig
from ncfctl.errors import MissingExtraError, NcfError

EXTRA_HINT = "pip install 'ncfctl[aws]' (the sagemaker SDK >= 3.20)"
# instance families whose training images are not the CPU/CUDA PyTorch container ncfctl's job code runs in
NEURON_FAMILIES = ("trn", "inf")


def load(aws: AwsConfig, module: str) -> ModuleType:
    """Import ``sagemaker.<module>`` with a region in place; one line when the extra is missing."""
    os.environ.setdefault("AWS_DEFAULT_REGION", aws.region)
    try:
        loaded = importlib.import_module(f"sagemaker.{module}")
    except ImportError as exc:
        raise MissingExtraError(f"the sagemaker SDK is not installed ({exc.name or exc})", hint=EXTRA_HINT) from None
    logging.getLogger("sagemaker").setLevel(logging.WARNING)  # its INFO notes are not ncfctl's output
    return loaded


def instance_family(instance_type: str) -> str:
    """``ml.g5.xlarge`` -> ``g5``."""
    parts = instance_type.split(".")
    if len(parts) != 3 or parts[0] != "ml":
        raise NcfError(f"instance type '{instance_type}' is not of the form ml.<family>.<size>")
    return parts[1]


def training_image_uri(aws: AwsConfig, instance_type: str | None = None) -> str:
    """``aws.training_image_uri``, else the AWS PyTorch training image from ``image_uris.retrieve``.

    The SDK's table knows each region's registry account and domain (ap-east-1, China, GovCloud
    differ), the published ``X.Y`` tags, and which Python versions each framework version has
    (``aws.py_version: null`` takes the only one). Trainium/Inferentia instances need a Neuron
    image the NCF job code does not run in, so they are refused here.
    """
    if aws.training_image_uri:
        return aws.training_image_uri
    instance_type = instance_type or aws.training_instance_type
    family = instance_family(instance_type)
    if family.startswith(NEURON_FAMILIES):
        raise NcfError(
            f"aws.training_instance_type '{instance_type}' is an AWS Trainium/Inferentia instance: ncfctl's "
            "training runs on CPU or NVIDIA CUDA instances (e.g. ml.c5.xlarge, ml.g5.xlarge)"
        )
    image_uris = load(aws, "core.image_uris")
    try:
        return image_uris.retrieve(
            "pytorch",
            region=aws.region,
            version=aws.framework_version,
            py_version=aws.py_version,
            instance_type=instance_type,
            image_scope="training",
        )
    except ValueError as exc:
        what = f"aws.framework_version {aws.framework_version}, aws.py_version {aws.py_version}, region {aws.region}"
        raise NcfError(f"no SageMaker PyTorch training image for {what}: {str(exc).splitlines()[0]}") from None
