"""Which artifacts a benchmark compares: the original model and everything derived from it.

``--compare all`` anchors on the newest trained GMF/MLP/NeuMF (the "original"; an ALS/BPR model when
there is no other) and collects its family by following manifest ``parent`` links: pruned and
fine-tuned models descending from it, compiled bundles (local ONNX Runtime and downloaded Neo
output) of any of those, and a deployment serving one of those bundles that answers ``/ping``.
It adds the matrix-factorisation baselines trained on the same dataset (role ``baseline``): the
newest ALS and the newest BPR model, each with the newest bundle compiled from it, so the table
says whether the network pays for itself. Old runs on other datasets or older originals are
never mixed in. ``--compare`` may instead list artifact ids/folders and role names
(``original,pruned,finetuned,compiled,deployment,baseline``) separated by commas.

Rules a comparison must keep: every variant is scored on the same test split, so all of them
must descend from the same dataset artifact (otherwise the request is refused, naming both
datasets); a role with no artifact is skipped with a note rather than failing the whole run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
from ncf_serving.layout import SERVING_JSON

from ncfctl.errors import NcfError
from ncfctl.model_types import MF_TYPES
from ncfctl.workspace import Artifact, Workspace

ROLES = ("original", "pruned", "finetuned", "compiled", "deployment", "baseline")
ROLE_ALIASES = {
    "trained": "original",
    "model": "original",
    "neo": "compiled",
    "deployed": "deployment",
    "baselines": "baseline",
}
STAGE_ROLE = {"trained": "original", "pruned": "pruned", "finetuned": "finetuned"}
LINEAGE_INFO_KEYS = ("compiled", "image", "source_model", "model")  # fallbacks when a manifest has no parent
RUNTIME_LABELS = {"onnxruntime": "ort", "dlr": "dlr", "torchscript": "ts"}  # short row labels
PING_TIMEOUT_S = 2.0  # SageMaker's own /ping budget


@dataclass
class Variant:
    """One row of the comparison and how to run it."""

    name: str  # row label, unique within a comparison
    role: str  # one of ROLES
    artifact: Artifact
    dataset_id: str
    model_id: str  # the model artifact whose weights this variant serves
    model_dir: Path  # its folder (model.pt)
    runtime: str  # "torch" for model artifacts, serving.json's runtime for bundles, "http" for deployments
    bundle: Path | None = None  # serving bundle folder (compiled artifacts and what a deployment serves)
    url: str | None = None  # base URL of a running deployment

    @property
    def id(self) -> str:
        return self.artifact.id


@dataclass
class Selection:
    variants: list[Variant]
    baseline: Variant
    notes: list[str]


class _Index:
    """Every artifact of the workspace by id, read once, with parent-chain helpers."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.by_id = {a.id: a for a in workspace.list()}

    def parent(self, artifact: Artifact) -> Artifact | None:
        """The manifest's ``parent``; else the upstream id a stage records in ``info`` or ``serving.json``."""
        info = artifact.manifest.info
        candidates = [artifact.manifest.parent, *(getattr(info, key, None) for key in LINEAGE_INFO_KEYS)]
        if artifact.kind == "compiled":
            candidates.append(_read_serving(artifact).get("source_model"))
        return next((self.by_id[c] for c in candidates if isinstance(c, str) and c in self.by_id), None)

    def chain(self, artifact: Artifact) -> list[Artifact]:
        """``artifact`` and its ancestors, nearest first (cycles cut)."""
        out: list[Artifact] = []
        node: Artifact | None = artifact
        while node is not None and node not in out:
            out.append(node)
            node = self.parent(node)
        return out

    def nearest(self, artifact: Artifact, kind: str) -> Artifact | None:
        return next((a for a in self.chain(artifact) if a.kind == kind), None)

    def dataset_id(self, artifact: Artifact) -> str | None:
        model = self.nearest(artifact, "model")
        if model is not None and model.manifest.info.dataset:
            return model.manifest.info.dataset
        dataset = self.nearest(artifact, "dataset")
        return dataset.id if dataset is not None else None


def _read_serving(artifact: Artifact) -> dict:
    try:
        return json.loads((artifact.path / SERVING_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def deployment_url(artifact: Artifact) -> str | None:
    """The base URL of a local deployment that answers ``GET /ping`` with 200 now, else None."""
    url = artifact.manifest.info.url
    if not url:
        return None
    try:
        ok = httpx.get(f"{str(url).rstrip('/')}/ping", timeout=PING_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return None
    return str(url).rstrip("/") if ok else None


def _role(artifact: Artifact) -> str | None:
    if artifact.kind == "model":
        return STAGE_ROLE.get(str(artifact.manifest.info.stage))
    return {"compiled": "compiled", "deployment": "deployment"}.get(artifact.kind)


def _mf_type(model: Artifact) -> str | None:
    """``als`` / ``bpr`` for a matrix-factorisation baseline model artifact, else None."""
    model_type = model.manifest.info.model_type
    return model_type if model_type in MF_TYPES else None


def _variant(index: _Index, artifact: Artifact) -> Variant:
    """Describe ``artifact`` as a variant; NcfError when it cannot be benchmarked."""
    role = _role(artifact)
    if role is None:
        stage = getattr(artifact.manifest.info, "stage", None)  # models have one
        raise NcfError(
            f"artifact {artifact.id} is a {artifact.kind} "
            f"(stage {stage!r}): only models, compiled bundles and deployments compare"
        )
    dataset_id = index.dataset_id(artifact)
    if dataset_id is None:
        raise NcfError(
            f"artifact {artifact.id}: cannot tell which dataset it was trained on (no dataset in its lineage)"
        )
    model = index.nearest(artifact, "model")
    if model is None:
        raise NcfError(f"artifact {artifact.id}: no model artifact in its lineage (manifest 'parent' links)")
    mf_type = _mf_type(model)
    if role in ("original", "pruned", "finetuned"):
        if mf_type:
            return Variant(mf_type, "baseline", artifact, dataset_id, model.id, model.path, "torch")
        return Variant(role, role, artifact, dataset_id, model.id, model.path, "torch")
    compiled = index.nearest(artifact, "compiled")
    if compiled is None:
        raise NcfError(f"deployment {artifact.id}: no compiled bundle in its lineage")
    runtime = str(_read_serving(compiled).get("runtime", "unknown"))
    if role == "compiled":
        label = f"compiled {RUNTIME_LABELS.get(runtime, runtime)}"
        if mf_type:
            label, role = f"{mf_type} {label}", "baseline"
        return Variant(label, role, artifact, dataset_id, model.id, model.path, runtime, compiled.path)
    if artifact.manifest.info.backend == "sagemaker":
        raise NcfError(
            f"deployment {artifact.id} is a SageMaker endpoint: bench times local deployments only "
            "(an endpoint's latency is dominated by the network path to AWS)"
        )
    url = deployment_url(artifact)
    if url is None:
        raise NcfError(
            f"deployment {artifact.id} is not answering GET /ping (status {artifact.manifest.info.status!r})"
        )
    return Variant("deployed", role, artifact, dataset_id, model.id, model.path, "http", compiled.path, url)


def _family(index: _Index, original: Artifact) -> dict[str, list[Artifact]]:
    """Artifacts descending from ``original`` by role, oldest first (itself under "original"), and the
    baselines trained on its dataset under "baseline"."""
    found: dict[str, list[Artifact]] = {role: [] for role in ROLES}
    found["original"].append(original)
    for artifact in index.workspace.list():
        role = _role(artifact)
        if role is None or artifact.id == original.id:
            continue
        if _descends(index, artifact, original):
            found[role].append(artifact)
    found["baseline"] = _baselines(index, original)
    return found


def _descends(index: _Index, artifact: Artifact, ancestor: Artifact) -> bool:
    return any(a.id == ancestor.id for a in index.chain(artifact)[1:])


def _baselines(index: _Index, original: Artifact) -> list[Artifact]:
    """The newest ALS and BPR models trained on ``original``'s dataset, each with its newest compiled bundle."""
    dataset = index.dataset_id(original)
    artifacts = list(index.by_id.values())  # oldest first
    out: list[Artifact] = []
    for model_type in MF_TYPES:
        if model_type == _mf_type(original):
            continue  # the original itself; its bundles are in its family already
        models = [
            a
            for a in artifacts
            if a.kind == "model"
            and a.manifest.info.stage == "trained"
            and _mf_type(a) == model_type
            and a.manifest.info.dataset == dataset
        ]
        if not models:
            continue
        compiled = [a for a in artifacts if a.kind == "compiled" and _descends(index, a, models[-1])]
        out += [models[-1], *compiled[-1:]]
    return out


def _family_variants(index: _Index, family: dict[str, list[Artifact]], roles: list[str], notes: list[str]) -> list:
    out: list[Variant] = []
    for role in roles:
        candidates = family[role]
        if role == "deployment":  # only deployments that answer now; the newest one is what users hit
            live = [v for v in (_try_variant(index, a, notes) for a in reversed(candidates)) if v is not None]
            if live:
                out.append(live[0])
            else:
                notes.append("deployment: none running for this model family, skipped (run ncfctl deploy)")
            continue
        if not candidates and role == "baseline":
            notes.append("baseline: no ALS or BPR model on this dataset, skipped (run ncfctl train --model als)")
        elif not candidates:
            hint = {"pruned": "ncfctl prune", "finetuned": "ncfctl finetune", "compiled": "ncfctl neo compile"}
            notes.append(f"{role}: no artifact derived from the original, skipped (run {hint.get(role, role)})")
        out += [v for v in (_try_variant(index, a, notes) for a in candidates) if v is not None]
    return out


def _try_variant(index: _Index, artifact: Artifact, notes: list[str]) -> Variant | None:
    try:
        return _variant(index, artifact)
    except NcfError as exc:
        notes.append(f"{artifact.id}: skipped, {exc}")
        return None


def _unique_names(variants: list[Variant]) -> None:
    """Suffix the artifact id's tail to labels that repeat (two pruned models, two compiles)."""
    counts: dict[str, int] = {}
    for v in variants:
        counts[v.name] = counts.get(v.name, 0) + 1
    for v in variants:
        if counts[v.name] > 1:
            v.name = f"{v.name} {v.id.rsplit('-', 1)[-1]}"


def _check_same_dataset(variants: list[Variant]) -> None:
    first = variants[0]
    for v in variants[1:]:
        if v.dataset_id != first.dataset_id:
            raise NcfError(
                f"cannot compare {first.id} (dataset {first.dataset_id}) with {v.id} (dataset {v.dataset_id}): "
                "metrics are only comparable on the same test split",
                hint="compare artifacts trained on one dataset",
            )


def _model_created(index: _Index, variant: Variant):
    model = index.by_id.get(variant.model_id) if variant.role == "baseline" else None
    return (model or variant.artifact).manifest.created


def _newest_original(workspace: Workspace) -> Artifact | None:
    """The newest trained GMF/MLP/NeuMF; the newest trained model of any type when there is none."""
    trained = [a for a in workspace.list("model") if a.manifest.info.stage == "trained"]
    networks = [a for a in trained if _mf_type(a) is None]
    return (networks or trained or [None])[-1]


def select_variants(workspace: Workspace, compare: str) -> Selection:
    """Resolve ``bench.compare`` (``all`` or a comma list of ids/folders/roles) into variants.

    The baseline for speed-ups and quality deltas is the original (trained) model when selected,
    else the first variant.
    """
    index = _Index(workspace)
    tokens = [t.strip() for t in compare.split(",") if t.strip()]
    if not tokens:
        raise NcfError(
            "bench.compare is empty: give 'all' or a comma list of artifact ids and roles", settings=("bench.compare",)
        )
    explicit = [t for t in tokens if ROLE_ALIASES.get(t.lower(), t.lower()) not in (*ROLES, "all")]
    roles = [ROLE_ALIASES.get(t.lower(), t.lower()) for t in tokens if t not in explicit]
    if "all" in roles:
        roles = list(ROLES)
    notes: list[str] = []
    variants = [_variant(index, workspace.get(t)) for t in explicit]
    if roles:
        anchor = next((v.artifact for v in variants if v.role == "original"), None)
        anchor = anchor or _newest_original(workspace)
        if anchor is None:
            raise NcfError(f"no trained model in {workspace.root} to compare", hint="train a model first")
        family = _family(index, anchor)
        chosen = {v.id for v in variants}
        variants += [v for v in _family_variants(index, family, roles, notes) if v.id not in chosen]
    if not variants:
        raise NcfError(
            f"nothing to compare for bench.compare {compare!r}",
            hint="; ".join(notes) or None,
            settings=("bench.compare",),
        )
    _check_same_dataset(variants)
    order = {role: i for i, role in enumerate(ROLES)}
    # a baseline's bundle right after its model: als, als compiled ort, bpr, ...
    variants.sort(key=lambda v: (order[v.role], _model_created(index, v), v.artifact.manifest.created))
    _unique_names(variants)
    baseline = next((v for v in variants if v.role == "original"), variants[0])
    return Selection(variants=variants, baseline=baseline, notes=notes)
