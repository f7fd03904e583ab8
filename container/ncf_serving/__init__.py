"""ncf_serving: the SageMaker-style inference server for ncfctl serving bundles.

Deliberately independent of ``ncfctl`` and of torch (torch is imported only for the
``torchscript`` runtime) so the container image carries numpy, FastAPI/uvicorn and one runtime.
The bundle format lives in :mod:`ncf_serving.bundle`; the ncfctl side writes it with
``ncfctl.serving.bundle.write_serving_bundle``.
"""

__version__ = "0.1.0"
