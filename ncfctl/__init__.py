"""ncfctl: Neural Collaborative Filtering from interaction logs to a served, benchmarked endpoint."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ncfctl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"
