"""Built-in artifact exporters, one module per kind, registered with ``edgekd.export.EXPORTERS``."""

from exporters import onnx_fp32, onnx_int8

__all__ = ["onnx_fp32", "onnx_int8"]
