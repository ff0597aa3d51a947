"""TensorRT side of the export: optimization profiles, a static compatibility check, FP16/INT8 graphs
(INT8 as explicit QDQ, ``fastsam2.calibration.qdq``), engine building and engine metadata.

Nothing here imports ``tensorrt`` at module level: the profiles, the compatibility check and the
metadata work on a machine without TensorRT; only building (``builder.build_engine``) needs it, and
imports it inside the functions that use it.
"""
