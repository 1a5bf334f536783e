"""The encoder backends. Each turns normalised pixels into an image encoder's named outputs (Osprey's
ConvNeXt stages, SAM's image embedding)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Protocol

import torch

from .interface import ImageEncoderModule
from .onnx_export import encoder_fingerprint, export_onnx

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "osprey_ros" / "encoders"


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (library missing, no GPU, ...)."""


class EncoderBackend(Protocol):
    name: str

    def __call__(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]: ...


class TorchEncoder:
    name = "torch"

    def __init__(self, tower: ImageEncoderModule) -> None:
        self.tower = tower

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        param = next(self.tower.parameters())
        return self.tower(pixel_values.to(param.device, param.dtype))


class CompiledEncoder(TorchEncoder):
    """torch.compile of the encoder in channels_last (GPU; compiling on CPU works but takes minutes)."""

    name = "compile"

    def __init__(self, tower: ImageEncoderModule, require_gpu: bool = True) -> None:
        if require_gpu and not next(tower.parameters()).is_cuda:
            raise BackendUnavailable("torch.compile backend is for GPUs and the model is on the CPU")
        super().__init__(tower.to(memory_format=torch.channels_last))
        self._compiled = torch.compile(self.tower, mode="max-autotune-no-cudagraphs")

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        param = next(self.tower.parameters())
        pixels = pixel_values.to(param.device, param.dtype).contiguous(memory_format=torch.channels_last)
        return self._compiled(pixels)


class OnnxRuntimeEncoder:
    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        device: torch.device,
        output_names: tuple[str, ...],
        *,
        allow_cpu_for_gpu_model: bool = False,
    ) -> None:
        """On a GPU model without ONNX Runtime's CUDA provider (the PyPI CPU wheel) this refuses, unless
        ``allow_cpu_for_gpu_model``: a ConvNeXt-L or a SAM ViT-H on the CPU behind a GPU model is seconds per
        frame."""
        providers = onnxruntime_providers(device, allow_cpu_for_gpu_model)
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(onnx_path), providers=providers)
        self.device = device
        self.output_names = output_names

    def __call__(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(list(self.output_names), {"pixel_values": pixel_values.float().cpu().numpy()})
        return {
            name: torch.from_numpy(out).to(self.device) for name, out in zip(self.output_names, outputs, strict=True)
        }


def onnx_providers_available() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable("onnxruntime is not installed") from exc
    return list(ort.get_available_providers())


def onnxruntime_providers(device: torch.device, allow_cpu_for_gpu_model: bool) -> list[str]:
    available = onnx_providers_available()
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if allow_cpu_for_gpu_model:
        logger.warning("onnxruntime has no CUDA provider here: the encoder runs on the CPU behind a %s model", device)
        return ["CPUExecutionProvider"]
    raise BackendUnavailable(
        f"onnxruntime has no CUDA provider (providers: {', '.join(available)}) for a {device} model"
    )


def onnx_file(tower: ImageEncoderModule, cache_dir: Path) -> Path:
    """The encoder exported once per weights; from an fp32 CPU copy, so the served one stays where it is."""
    path = cache_dir / f"{tower.graph_name}-{encoder_fingerprint(tower)}.onnx"
    if not path.is_file():
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(copy.deepcopy(tower).to("cpu", torch.float32), tmp)
        tmp.rename(path)
    return path


def create_tensorrt(tower: ImageEncoderModule, cache_dir: Path) -> EncoderBackend:
    from .tensorrt_engine import TensorRTEncoder  # imports tensorrt; BackendUnavailable when it is missing

    engine_name = f"{tower.graph_name}-{encoder_fingerprint(tower)}"
    return TensorRTEncoder(onnx_file(tower, cache_dir), cache_dir, engine_name, tower.output_names)


BACKENDS = ("torch", "compile", "onnxruntime", "tensorrt")


def tower_device(tower: ImageEncoderModule) -> torch.device:
    return next(tower.parameters()).device


def fallback_for(name: str, device_type: str) -> str:
    """The next backend to try. A GPU model falls back to GPU backends only: ONNX Runtime's PyPI wheel is
    CPU-only, and torch.compile's autotuning takes minutes, so tensorrt → torch there."""
    if name == "tensorrt":
        return "torch" if device_type == "cuda" else "onnxruntime"
    return "torch"


def create_encoder(
    name: str, tower: ImageEncoderModule, cache_dir: Path | None = None, log: logging.Logger | None = None
) -> EncoderBackend:
    """The named backend, or the first fallback that works; one log line per backend given up.

    Exports and engines are cached in ``cache_dir`` (default ~/.cache/osprey_ros/encoders).
    """
    log = log or logger
    if name not in BACKENDS:
        raise ValueError(f"encoder backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    cache_dir.mkdir(parents=True, exist_ok=True)
    device = tower_device(tower)
    asked = name
    while True:
        try:
            if name == "torch":
                return TorchEncoder(tower)
            if name == "compile":
                return CompiledEncoder(tower)
            if name == "onnxruntime":
                # Asked for by name, it may run on the CPU behind a GPU model; reached by fallback, never.
                return OnnxRuntimeEncoder(
                    onnx_file(tower, cache_dir), device, tower.output_names, allow_cpu_for_gpu_model=name == asked
                )
            return create_tensorrt(tower, cache_dir)
        except BackendUnavailable as exc:
            fallback = fallback_for(name, device.type)
            log.warning(
                "%s encoder backend %s unavailable (%s); falling back to %s on %s",
                tower.graph_name,
                name,
                exc,
                fallback,
                device,
            )
            name = fallback
