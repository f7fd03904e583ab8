"""ncfctl: Neural Collaborative Filtering from interaction logs to a served, benchmarked endpoint."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ncfctl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"

import os as _os

# ONNX Runtime (imported in-process by export, compile and bench) looks up Microsoft's telemetry host
# and writes a device id under ~/.cache unless this is set before it is imported; its
# ``disable_telemetry_events()`` does not stop that (measured with strace, ORT 1.32). The serving
# container does the same in ``ncf_serving.runtimes``.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"
