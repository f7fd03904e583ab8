"""Pruning NCF models and fine-tuning them back: ``ncfctl prune`` and ``ncfctl finetune``.

Two methods, because they buy different things:

* magnitude (unstructured): zero the smallest weights and lock them with boolean masks. The
  model keeps its shapes, so a dense file is no smaller and dense inference no faster; only a
  sparse encoding saves bytes. Cheap in accuracy.
* structured: drop whole embedding dimensions and MLP neurons and rebuild a physically smaller
  dense ``NCF``: fewer bytes and fewer FLOPs on every runtime, at a larger accuracy cost.

Modules: :mod:`masks` (mask bookkeeping), :mod:`magnitude`, :mod:`structured`, :mod:`schedule`
(one-shot vs the cubic gradual schedule), :mod:`finetuning`, :mod:`report` (sizes, sparsity),
:mod:`plots`, :mod:`service` (what the CLI calls).
"""
