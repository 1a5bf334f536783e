"""TensorRT engine for an image encoder (Osprey's ConvNeXt trunk, SAM's ViT): built from the ONNX export
(fp16, static shape), cached on disk under a key of model hash, TensorRT version and GPU, and run on its
own CUDA stream.

TensorRT cannot be installed on the project's CPU machines, so this stays small and conventional; the
ONNX graph it is built from is tested against torch with ONNX Runtime.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .backends import BackendUnavailable

try:
    import tensorrt as trt
except ImportError as exc:  # the caller falls back to the next backend
    raise BackendUnavailable("tensorrt is not importable") from exc

logger = logging.getLogger(__name__)


def engine_path(cache_dir: Path, engine_name: str) -> Path:
    """``engine_name`` is the encoder's graph name and weights hash, e.g. ``convnext-0123abcd``."""
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    return cache_dir / f"{engine_name}-trt{trt.__version__}-{gpu}-fp16.engine"


def build_engine(onnx_path: Path, target: Path) -> bytes:
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable("TensorRT engine build failed")
    target.write_bytes(bytes(serialized))
    logger.info("built TensorRT engine %s", target)
    return bytes(serialized)


class TensorRTEncoder:
    name = "tensorrt"

    def __init__(self, onnx_path: Path, cache_dir: Path, engine_name: str, output_names: tuple[str, ...]) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT needs a CUDA GPU")
        path = engine_path(cache_dir, engine_name)
        blob = path.read_bytes() if path.is_file() else build_engine(onnx_path, path)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.outputs = {
            name: torch.empty(tuple(self.engine.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            for name in output_names
        }

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = pixel_values.to("cuda", torch.float32).contiguous()
        self.context.set_tensor_address("pixel_values", pixels.data_ptr())
        for name, out in self.outputs.items():
            self.context.set_tensor_address(name, out.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())
        self.context.execute_async_v3(self.stream.cuda_stream)
        torch.cuda.current_stream().wait_stream(self.stream)
        return {name: out.clone() for name, out in self.outputs.items()}
