"""ncfctl's side of serving: writing the bundle the container (``ncf_serving``) reads, and shipping it.

``write_serving_bundle``/``fastpath_arrays`` load lazily: they need torch, while build-image, deploy
and invoke (also in this package) must start fast and never import torch.
"""

__all__ = ["fastpath_arrays", "write_serving_bundle"]


def __getattr__(name: str):
    if name in __all__:
        from ncfctl.serving import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'ncfctl.serving' has no attribute {name!r}")
