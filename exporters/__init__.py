"""Built-in artifact exporters, one module per kind, registered with ``edgekd.export.EXPORTERS``."""

from edgekd.exporters import inc, onnx_fp32, onnx_int8, onnx_int8_qat

__all__ = ["inc", "onnx_fp32", "onnx_int8", "onnx_int8_qat"]
