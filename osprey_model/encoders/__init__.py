"""Image encoder backends behind one interface: pixels (B, 3, S, S) → named outputs ({res2..res5} for
Osprey's ConvNeXt, {image_embeddings} for SAM's ViT).

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
from .interface import ImageEncoderModule
from .onnx_export import encoder_fingerprint, export_onnx

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "CompiledEncoder",
    "EncoderBackend",
    "ImageEncoderModule",
    "OnnxRuntimeEncoder",
    "TorchEncoder",
    "create_encoder",
    "encoder_fingerprint",
    "export_onnx",
]
