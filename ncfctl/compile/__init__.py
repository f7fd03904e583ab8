"""Compile a model for a deployment target: ONNX Runtime locally or SageMaker Neo, behind one interface.

Entry points: :func:`ncfctl.compile.service.compile_model` and :func:`ncfctl.compile.service.neo_status`.
Submodules are imported where used (this package stays import-light: ``neo targets`` needs no torch).
"""
