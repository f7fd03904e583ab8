"""NeuMF initialised from trained GMF and MLP models, as in the NCF paper (section 3.4.1).

The paper's best NeuMF results start from pre-trained GMF and MLP: their embeddings and tower
are copied, and the output layer concatenates the two output weight vectors scaled by
``alpha`` and ``1 - alpha`` (``alpha = 0.5``), so the initial NeuMF predicts the average of the
two models' logits.
"""

from __future__ import annotations

import torch

from ncfctl.errors import NcfError
from ncfctl.models import NCF, NCFSpec


def _require(condition: bool, message: str, *settings: str) -> None:
    if not condition:
        raise NcfError(message, settings=settings)


@torch.no_grad()
def neumf_from_pretrained(spec: NCFSpec, gmf: NCF, mlp: NCF, alpha: float = 0.5) -> NCF:
    """A NeuMF of ``spec`` whose weights come from ``gmf`` and ``mlp`` (shapes must agree)."""
    _require(spec.model_type == "neumf", f"pre-training initialises a NeuMF, not a {spec.model_type}")
    _require(gmf.spec.model_type == "gmf", f"`pretrain_gmf` is a {gmf.spec.model_type} model, not gmf", "pretrain_gmf")
    _require(mlp.spec.model_type == "mlp", f"`pretrain_mlp` is a {mlp.spec.model_type} model, not mlp", "pretrain_mlp")
    for name, source in (("gmf", gmf.spec), ("mlp", mlp.spec)):
        _require(
            (source.num_users, source.num_items, source.task) == (spec.num_users, spec.num_items, spec.task),
            f"`pretrain_{name}` was trained on {source.num_users} users x {source.num_items} items ({source.task}); "
            f"this run has {spec.num_users} x {spec.num_items} ({spec.task}): use the same dataset",
            f"pretrain_{name}",
        )
    _require(
        gmf.spec.factors == spec.factors,
        f"`pretrain_gmf` has factors={gmf.spec.factors}, model.factors is {spec.factors}",
        "pretrain_gmf",
        "model.factors",
    )
    shape = (mlp.spec.mlp_user_dim, mlp.spec.mlp_item_dim, mlp.spec.hidden)
    _require(
        shape == (spec.mlp_user_dim, spec.mlp_item_dim, spec.hidden),
        f"`pretrain_mlp` has layers {[shape[0] + shape[1], *shape[2]]}, "
        f"model.layers is {[spec.mlp_user_dim + spec.mlp_item_dim, *spec.hidden]}",
        "pretrain_mlp",
        "model.layers",
    )
    model = NCF(spec)
    model.gmf_user.weight.copy_(gmf.gmf_user.weight)
    model.gmf_item.weight.copy_(gmf.gmf_item.weight)
    model.mlp_user.weight.copy_(mlp.mlp_user.weight)
    model.mlp_item.weight.copy_(mlp.mlp_item.weight)
    model.mlp.load_state_dict(mlp.mlp.state_dict())
    model.predict.weight.copy_(torch.cat([alpha * gmf.predict.weight, (1 - alpha) * mlp.predict.weight], dim=1))
    model.predict.bias.copy_(alpha * gmf.predict.bias + (1 - alpha) * mlp.predict.bias)
    return model
