"""Configuration: ``configs/default.yaml`` validated by pydantic, with layered overrides.

Precedence, highest first: explicit overrides (CLI flags) > environment (``NCFCTL_SECTION__KEY``,
plus ``NCFCTL_WORKDIR``) > ``--config FILE`` > the packaged ``configs/default.yaml``. The YAML file
is the single source of every default value; the models below only give shape and validation, so
a bad value fails with the dotted key that holds it. Floats must be finite (``lr: .inf`` is refused).

YAML from a file or an environment variable is parsed by :class:`BoundedLoader`: a config file is at
most ``MAX_CONFIG_BYTES`` and may expand to at most ``MAX_YAML_NODES`` nodes through aliases, so an
alias bomb ("billion laughs") is one line at once instead of a hang.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError

from ncfctl.errors import NcfError

ENV_PREFIX = "NCFCTL_"
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # nodes after alias expansion; default.yaml has ~150


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SyntheticConfig(_Section):
    users: int = Field(gt=1)
    items: int = Field(gt=1)
    interactions: int = Field(gt=0)
    clusters: int = Field(gt=0)
    min_per_user: int = Field(ge=3)
    taste_strength: float = Field(ge=0)


class DataConfig(_Section):
    dataset: Literal["synthetic", "ml-1m", "ml-100k", "ml-20m", "ml-25m", "ml-latest-small", "csv", "parquet"]
    source: str | None
    min_rating: float | None
    explicit: bool
    split: Literal["leave-one-out", "ratio"]
    test_ratio: float = Field(gt=0, lt=1)
    ratio_order: Literal["random", "temporal"]
    eval_negatives: int = Field(gt=0)
    user_col: str
    item_col: str
    rating_col: str | None
    time_col: str | None
    synthetic: SyntheticConfig


class ModelConfig(_Section):
    type: Literal["gmf", "mlp", "neumf", "als", "bpr"]
    factors: int = Field(gt=0)
    layers: list[int] = Field(min_length=1)
    dropout: float = Field(ge=0, lt=1)


class TrainConfig(_Section):
    task: Literal["implicit", "explicit"]
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    negatives: int = Field(ge=1)
    patience: int = Field(ge=0)
    top_k: int = Field(gt=0)
    threads: int = Field(gt=0)
    nproc: int = Field(gt=0)
    device: Literal["auto", "cpu", "cuda"]
    optimizer: Literal["auto", "adam", "lazy-adam"]
    backend: Literal["local", "sagemaker"]


class AlsConfig(_Section):
    """``ncfctl train --model als``: implicit's AlternatingLeastSquares (Hu, Koren & Volinsky 2008)."""

    factors: int = Field(gt=0)
    iterations: int = Field(gt=0)
    regularization: list[NonNegativeFloat] = Field(min_length=1)
    alpha: float = Field(gt=0)


class BprConfig(_Section):
    """``ncfctl train --model bpr``: implicit's BayesianPersonalizedRanking (Rendle et al. 2009)."""

    factors: int = Field(gt=0)
    iterations: int = Field(gt=0)
    regularization: list[NonNegativeFloat] = Field(min_length=1)
    learning_rate: float = Field(gt=0)


class BaselinesConfig(_Section):
    """Matrix-factorisation baselines; each ``regularization`` value is fitted and chosen on validation."""

    als: AlsConfig
    bpr: BprConfig


class PruneConfig(_Section):
    method: Literal["magnitude", "structured"]
    rate: float = Field(gt=0, lt=1)
    scope: Literal["global", "layer"]
    include_embeddings: bool
    norm: Literal["l1", "l2"]
    allocation: Literal["mlp-first", "uniform"]
    schedule: Literal["oneshot", "gradual"]
    steps: int = Field(gt=0)


class FinetuneConfig(_Section):
    epochs: int = Field(gt=0)
    lr: float = Field(gt=0)
    fraction: float = Field(gt=0, le=1)
    backend: Literal["local", "sagemaker"]


class CompileConfig(_Section):
    target: str
    backend: Literal["auto", "local", "sagemaker"]
    framework: Literal["onnx", "pytorch"]
    batch_size: int | None = Field(default=None, gt=0)
    opset: int = Field(ge=7, le=12)
    parity_tolerance: float = Field(gt=0)
    target_platform: str | None
    framework_version: Literal["1.4", "1.5", "1.6", "1.7", "1.8", "1.12", "1.13", "2.0"]
    compiler_options: dict[str, Any] | None = None
    threads: int | None = Field(default=None, gt=0)
    max_runtime_seconds: int = Field(ge=60, le=86400)
    job_prefix: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,19}$")


class AnnConfig(_Section):
    """``serving.ann``: the FAISS IVF-Flat index ``neo compile`` builds when retrieval is ANN."""

    min_items: int = Field(gt=0)
    candidates: int = Field(gt=0)
    lists: int = Field(gt=0)
    nprobe: int = Field(gt=0)
    mlp_users: int = Field(gt=0)


class ServingConfig(_Section):
    host: str
    port: int = Field(ge=0, le=65535)
    max_batch: int = Field(gt=0)
    max_top_k: int = Field(gt=0)
    max_body_bytes: int = Field(gt=0)
    request_read_seconds: int = Field(ge=1, le=3600)
    workers: int | None = Field(default=None, gt=0, le=1024)
    retrieval: Literal["auto", "exact", "ann"]
    ann: AnnConfig


class ImageConfig(_Section):
    backend: Literal["auto", "docker", "buildah", "codebuild", "none"]
    tag: str
    push: bool
    python_image: str | None
    docker_timeout: float = Field(gt=0)
    build_timeout_minutes: int = Field(ge=5, le=2160)


class DeployConfig(_Section):
    backend: Literal["auto", "local", "sagemaker"]
    port: int = Field(ge=0, le=65535)
    start_timeout: float = Field(gt=0)
    stop_grace: float = Field(gt=0)
    invoke_timeout: float = Field(gt=0)
    min_instances: int | None = Field(default=None, ge=1)
    max_instances: int | None = Field(default=None, ge=1)
    target_invocations: float = Field(gt=0)
    serverless: bool
    memory_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144]
    max_concurrency: int = Field(ge=1, le=200)
    capture_percent: int | None = Field(default=None, ge=0, le=100)


class AwsConfig(_Section):
    # `framework_version: 2.5` (YAML) or NCFCTL_AWS__FRAMEWORK_VERSION=2.5 parse as numbers: take them as text
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    region: str
    profile: str | None
    endpoint_url: str | None
    bucket: str | None
    prefix: str
    role_arn: str | None
    training_instance_type: str
    training_instance_count: int = Field(gt=0)
    training_image_uri: str | None
    training_max_runtime_seconds: int = Field(gt=0)
    training_volume_gb: int = Field(gt=0)
    framework_version: str
    py_version: str | None
    spot: bool
    spot_max_wait_seconds: int | None = Field(default=None, gt=0)
    ecr_repository: str
    image_uri: str | None
    codebuild_project: str
    codebuild_role_arn: str | None
    codebuild_image: str
    codebuild_compute_type: str
    endpoint_name: str
    instance_type: str
    instance_count: int = Field(gt=0)
    model_package_group: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    pipeline_name: str = Field(pattern=r"^[A-Za-z0-9\-_]{1,256}$")
    pipeline_role_arn: str | None
    processing_instance_type: str
    transform_instance_type: str
    poll_seconds: float = Field(gt=0)


class BenchConfig(_Section):
    compare: str
    repeats: int = Field(gt=0)
    warmup: int = Field(ge=0)
    threads: int = Field(gt=0)
    series_seconds: float = Field(gt=0)
    recall_users: int = Field(gt=0)


class ArchiveConfig(_Section):
    """Bounds on ``.tar.gz`` archives ncfctl unpacks (SageMaker Neo and training-job outputs)."""

    max_bytes: int = Field(gt=0)
    max_members: int = Field(gt=0)


class PipelineConfig(_Section):
    """``ncfctl pipeline``: its own epochs and rate so the whole flow stays a few minutes long."""

    backend: Literal["local", "sagemaker"]
    train_epochs: int | None = Field(default=None, gt=0)
    finetune_epochs: int | None = Field(default=None, gt=0)
    finetune_fraction: float | None = Field(default=None, gt=0, le=1)
    prune_rate: float = Field(gt=0, lt=1)
    baseline: Literal["als", "bpr"] | None  # fitted beside the model so the benchmark compares them; None = off
    keep_serving: bool
    smoke_top_k: int = Field(gt=0)
    min_hit_rate: float = Field(ge=0, le=1)


class Config(_Section):
    workdir: Path
    seed: int = Field(ge=0, le=2**32 - 1)  # what numpy and torch seeding both accept
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    baselines: BaselinesConfig
    prune: PruneConfig
    finetune: FinetuneConfig
    compile: CompileConfig
    serving: ServingConfig
    image: ImageConfig
    deploy: DeployConfig
    aws: AwsConfig
    bench: BenchConfig
    archive: ArchiveConfig
    pipeline: PipelineConfig


def default_config_path() -> Path:
    """The packaged defaults: inside the wheel, or ``configs/`` of a source checkout."""
    packaged = resources.files("ncfctl").joinpath("configs/default.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses documents whose aliases expand past ``MAX_YAML_NODES`` nodes.

    The composed node graph shares aliased subtrees, so it stays small; its expanded size is
    counted with memoisation (linear in the graph) before anything is constructed, and a
    recursive alias is refused outright.
    """

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], active: set[int]) -> int:
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise yaml.YAMLError("a recursive alias (a node that contains itself)")
    active.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, sizes, active) for child in children)
    active.discard(key)
    if size > MAX_YAML_NODES:
        raise yaml.YAMLError(f"aliases expand it past {MAX_YAML_NODES:,} nodes (an alias bomb?)")
    sizes[key] = size
    return size


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error as "line L column C: problem" (its ``str`` spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return where + (getattr(exc, "problem", None) or str(exc).splitlines()[0])


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` bounded by :class:`BoundedLoader`; raises ``yaml.YAMLError``."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        if path.is_dir():
            raise NcfError(f"config file {path} is a directory")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise NcfError(f"config file {path} is larger than {MAX_CONFIG_BYTES:,} bytes: not a config file")
        loaded = parse_yaml(raw.decode("utf-8"))
    except FileNotFoundError:
        raise NcfError(f"config file not found: {path}") from None
    except OSError as exc:
        raise NcfError(f"config file {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise NcfError(f"config file {path} is not UTF-8 text (byte {exc.start}): not a YAML file") from None
    except yaml.YAMLError as exc:
        raise NcfError(f"config file {path} is not valid YAML: {yaml_problem(exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise NcfError(f"config file {path} must hold a mapping at the top level")
    return loaded


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``override``; nested mappings merge key by key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``NCFCTL_TRAIN__EPOCHS=5`` -> ``{"train": {"epochs": 5}}``; values parse as YAML scalars."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in {"NCFCTL_DEBUG", "NCFCTL_CONFIG"}:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        try:
            value = parse_yaml(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise NcfError(f"environment variable {name}={raw!r} is not a YAML value: {yaml_problem(exc)}") from None
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict) or isinstance(node.get(path[-1]), dict):
            raise NcfError(f"environment variable {name} conflicts with another that sets a section on its path")
        node[path[-1]] = value
    return out


def dotted_overrides(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.epochs": 5, "seed": None}`` -> nested dict, dropping ``None`` (flag not given)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def load_config(
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective configuration; ``overrides`` uses dotted keys (``"train.epochs"``)."""
    raw = _read_yaml(default_config_path())
    if config_file is not None:
        raw = deep_merge(raw, _read_yaml(Path(config_file)))
    raw = deep_merge(raw, env_overrides(environ))
    raw = deep_merge(raw, dotted_overrides(overrides or {}))
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        given = first.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        raise NcfError(f"config key '{key}': {first['msg']}{shown}") from None
