"""The model families ncfctl knows, in a module light enough for the CLI to import (no torch).

* ``NCF_TYPES``: GMF, MLP and NeuMF, trained by ncfctl's torch loop (``ncfctl.training.loop``);
  they can be pruned and fine-tuned.
* ``MF_TYPES``: the matrix-factorisation baselines ALS and BPR, fitted by the ``implicit`` library
  (``ncfctl.training.baselines``) and held as a GMF with its output layer fixed to ones
  (``ncfctl.models``); they are evaluated, compiled, served and benchmarked like the others.
"""

from __future__ import annotations

NCF_TYPES = ("gmf", "mlp", "neumf")
MF_TYPES = ("als", "bpr")
