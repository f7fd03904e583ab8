"""Export an NCF model for compilers (ONNX opset <= 12, traced TorchScript) behind a Neo preflight."""

from ncfctl.export.neo_ops import manual_normalize
from ncfctl.export.preflight import ExportReport, export_checked, random_pairs

__all__ = ["ExportReport", "export_checked", "manual_normalize", "random_pairs"]
