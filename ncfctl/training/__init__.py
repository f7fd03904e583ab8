"""Training: ``fit`` (the loop every trainer shares) and its settings/result types.

The service (``ncfctl.training.service.train_model``), the DDP launcher and the SageMaker entry
point live in submodules and are imported explicitly, so ``import ncfctl.training`` stays light.
"""

from ncfctl.training.loop import FitResult, FitSettings, fit

__all__ = ["FitResult", "FitSettings", "fit"]
