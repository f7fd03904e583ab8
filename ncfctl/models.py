"""GMF, MLP and NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017) in one module.

One class, :class:`NCF`, covers the three variants so that pruning, export and serving handle a
single layout:

* GMF: ``h^T (p_u * q_i)`` with ``factors``-dim user/item embeddings;
* MLP: ``[u_mlp ; i_mlp]`` -> ``Linear + ReLU`` tower -> output;
* NeuMF: ``[p_u * q_i ; mlp_tower(u, i)]`` -> one output layer;
* ALS / BPR (:data:`MF_TYPES`): plain matrix factorisation ``p_u . q_i`` fitted by the ``implicit``
  library (:mod:`ncfctl.training.baselines`), held as a GMF whose output layer is fixed to
  ``h = 1, b = 0`` (``h . (p_u * q_i) + b == p_u . q_i``), so export, the serving fast path and the
  benchmark treat it like any other ``NCF`` with no second code path.

``forward`` returns raw scores: logits for the implicit task (train with BCE-with-logits; the
ranking is the same as after a sigmoid) and predicted ratings for the explicit task. Widths are
explicit in :class:`NCFSpec` (user and item MLP embeddings may differ) so a structurally pruned
model is just an ``NCF`` with smaller numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from ncfctl import fileio
from ncfctl.errors import NcfError
from ncfctl.model_types import MF_TYPES

MODEL_FILE = "model.pt"


class NCFSpec(BaseModel):
    """Everything needed to rebuild an :class:`NCF` before loading its ``state_dict``."""

    model_config = ConfigDict(extra="forbid")

    model_type: Literal["gmf", "mlp", "neumf", "als", "bpr"] = "neumf"
    task: Literal["implicit", "explicit"] = "implicit"
    num_users: int = Field(gt=0)
    num_items: int = Field(gt=0)
    factors: int = Field(default=32, ge=0)  # GMF embedding size (0 only for pure MLP)
    mlp_user_dim: int = Field(default=64, ge=0)
    mlp_item_dim: int = Field(default=64, ge=0)
    hidden: list[int] = Field(default_factory=lambda: [64, 32])  # tower widths after the input
    dropout: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_parts(self) -> NCFSpec:
        if self.has_gmf and self.factors <= 0:
            raise ValueError("GMF/NeuMF need factors > 0")
        if self.has_mlp and (self.mlp_user_dim <= 0 or self.mlp_item_dim <= 0 or not self.hidden):
            raise ValueError("MLP/NeuMF need positive MLP embedding sizes and at least one hidden layer")
        if self.is_mf and self.task != "implicit":
            raise ValueError(f"{self.model_type} ranks implicit feedback: it has no explicit (rating) task")
        if any(w <= 0 for w in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")
        return self

    @property
    def has_gmf(self) -> bool:
        return self.model_type in ("gmf", "neumf", *MF_TYPES)

    @property
    def is_mf(self) -> bool:
        """A matrix-factorisation baseline: the GMF part only, output layer fixed to ones."""
        return self.model_type in MF_TYPES

    @property
    def has_mlp(self) -> bool:
        return self.model_type in ("mlp", "neumf")

    @classmethod
    def from_layers(
        cls,
        *,
        model_type: str,
        num_users: int,
        num_items: int,
        factors: int,
        layers: list[int],
        dropout: float = 0.0,
        task: str = "implicit",
    ) -> NCFSpec:
        """The NCF paper's convention: ``layers[0]`` is the MLP input, so each embedding is half."""
        if len(layers) < 2 or layers[0] % 2:
            raise NcfError(
                f"model.layers {','.join(map(str, layers))}: need at least two widths and an even first width "
                "(the MLP embedding size is half of it)",
                settings=("model.layers",),
            )
        half = layers[0] // 2
        return cls(
            model_type=model_type,
            task=task,
            num_users=num_users,
            num_items=num_items,
            factors=factors,
            mlp_user_dim=half,
            mlp_item_dim=half,
            hidden=list(layers[1:]),
            dropout=dropout,
        )


class NCF(nn.Module):
    """GMF / MLP / NeuMF scoring ``(user, item)`` pairs given as int64 index tensors."""

    def __init__(self, spec: NCFSpec):
        super().__init__()
        self.spec = spec
        if spec.has_gmf:
            self.gmf_user = nn.Embedding(spec.num_users, spec.factors)
            self.gmf_item = nn.Embedding(spec.num_items, spec.factors)
        if spec.has_mlp:
            self.mlp_user = nn.Embedding(spec.num_users, spec.mlp_user_dim)
            self.mlp_item = nn.Embedding(spec.num_items, spec.mlp_item_dim)
            widths = [spec.mlp_user_dim + spec.mlp_item_dim, *spec.hidden]
            layers: list[nn.Module] = []
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
                if spec.dropout > 0:
                    layers.append(nn.Dropout(spec.dropout))
                layers += [nn.Linear(w_in, w_out), nn.ReLU()]
            self.mlp = nn.Sequential(*layers)
        out_in = (spec.factors if spec.has_gmf else 0) + (spec.hidden[-1] if spec.has_mlp else 0)
        self.predict = nn.Linear(out_in, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: N(0, 0.01) embeddings, Xavier tower, Kaiming output."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.01)
            elif isinstance(module, nn.Linear) and module is not self.predict:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.kaiming_uniform_(self.predict.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.predict.bias)
        if self.spec.is_mf:
            nn.init.ones_(self.predict.weight)  # score = p_u . q_i exactly
        if self.spec.task == "explicit":
            nn.init.constant_(self.predict.bias, 3.5)  # start near the usual mean rating

    def linear_layers(self) -> list[nn.Linear]:
        """The MLP tower's Linear layers in order (empty for GMF)."""
        return [m for m in self.mlp if isinstance(m, nn.Linear)] if self.spec.has_mlp else []

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.spec.has_gmf:
            parts.append(self.gmf_user(user) * self.gmf_item(item))
        if self.spec.has_mlp:
            parts.append(self.mlp(torch.cat([self.mlp_user(user), self.mlp_item(item)], dim=-1)))
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return self.predict(features).squeeze(-1)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total parameters and non-zeros (what pruning changes)."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p).item()) for p in model.parameters())
    return {"parameters": total, "nonzeros": nonzero}


def save_model(path: str | os.PathLike, model: NCF, extra: dict[str, Any] | None = None) -> None:
    """Atomically save spec + ``state_dict`` (+ plain extras) loadable with ``weights_only=True``."""
    payload = {"spec": model.spec.model_dump(), "state_dict": model.state_dict(), **(extra or {})}
    with fileio.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_payload(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NcfError(f"model file not found: {path}") from None
    except Exception as exc:  # torch raises several types for a corrupt/unsafe file
        raise NcfError(f"cannot load model file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
        raise NcfError(f"model file {path} is not an ncfctl model (no spec/state_dict)")
    return payload


def load_model(path: str | os.PathLike) -> NCF:
    """Rebuild the model from a file written by :func:`save_model`, in eval mode.

    A spec that does not validate, or weights that do not fit it (a missing key, a wrong shape),
    is one line naming the file: such a file was not written by :func:`save_model`.
    """
    payload = load_payload(path)
    try:
        model = NCF(NCFSpec.model_validate(payload["spec"]))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "spec"
        raise NcfError(f"model file {path}: spec field '{field}': {first['msg']}") from None
    except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a table too large to allocate
        raise NcfError(f"model file {path}: cannot build its spec: {str(exc).splitlines()[0]}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise NcfError(f"model file {path}: weights do not fit its spec: {' '.join(str(exc).split())}") from None
    return model.eval()
