"""TensorRT side of the export: optimization profiles, a static compatibility check, INT8 calibration,
engine building and engine metadata.

Nothing here imports ``tensorrt`` at module level: the profiles, the compatibility check and the
metadata work on a machine without TensorRT; only building (``builder.build_engine``) and the
calibrator class need it, and import it inside the functions that use it.
"""
