"""One pruning step of the configured method: the piece shared by ``ncfctl prune`` and the SageMaker Pipeline.

Kept free of plotting and workspace imports: the pipeline's prune + fine-tune step runs it inside
AWS's PyTorch training container, which installs only the job's ``requirements.txt``.
"""

from __future__ import annotations

import copy

from ncfctl.config import PruneConfig
from ncfctl.masks import Masks, apply_masks
from ncfctl.models import NCF
from ncfctl.pruning.magnitude import magnitude_masks
from ncfctl.pruning.structured import plan_structured


def prune_once(model: NCF, masks: Masks | None, rate: float, settings: PruneConfig) -> tuple[NCF, Masks | None]:
    """``rate`` of what is left, by ``settings.method``: masks (magnitude) or a smaller dense model (structured)."""
    if settings.method == "structured":
        plan = plan_structured(
            model,
            rate,
            norm=settings.norm,
            include_embeddings=settings.include_embeddings,
            allocation=settings.allocation,
        )
        return plan.apply(model, masks)
    model = copy.deepcopy(model)
    masks = magnitude_masks(
        model, rate, scope=settings.scope, include_embeddings=settings.include_embeddings, masks=masks
    )
    apply_masks(model, masks)
    return model, masks
