"""Vision encoder backends behind one interface: pixels (B, 3, S, S) → {res2..res5}.

``create_encoder(name, tower)`` builds the asked backend, or the next one that works here, saying why in
one log line: tensorrt → onnxruntime → torch; compile → torch; onnxruntime → torch.
"""

from .backends import (
    BACKENDS,
    BackendUnavailable,
    CompiledEncoder,
    EncoderBackend,
    OnnxRuntimeEncoder,
    TorchEncoder,
    create_encoder,
)
from .onnx_export import export_onnx

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "CompiledEncoder",
    "EncoderBackend",
    "OnnxRuntimeEncoder",
    "TorchEncoder",
    "create_encoder",
    "export_onnx",
]
