"""gcf-trt: Gated Clip Fusion action recognition, compiled for TensorRT, OpenVINO and ONNX Runtime.

``import gcf_trt`` is light: it never imports torch, TensorRT or OpenVINO.  Camera apps use
:mod:`gcf_trt.runtime`; building engines uses :mod:`gcf_trt.compile` (needs torch).
"""
__version__ = "0.1.0"

from .errors import GcfError  # noqa: E402
from .spec import ModelSpec  # noqa: E402

__all__ = ["GcfError", "ModelSpec", "__version__"]
