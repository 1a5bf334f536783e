"""LISA: LLaVA v1 (CLIP ViT-L/14 → Linear → LLaMA) whose ``[SEG]`` hidden state prompts SAM's mask decoder.

Our module names (``language_model``, ``mm_projector``, ``text_hidden_fcs``, ``visual_model``,
``vision_tower``) map onto the released state-dict names in one place, ``own_name`` / ``released_name``.
The CLIP tower is not in a LISA checkpoint (the release drops every ``vision_tower`` key and loads CLIP
from its own folder); SAM ViT-H is, under ``model.visual_model.``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM

from .. import checkpoint_io
from ..modeling_osprey import IMAGE_TOKEN_INDEX
from ..precision import keep_rotary_in_float32
from ..sam import build_sam, get_sam_preset
from ..sam.modeling import serve_sam
from .config import LisaConfig

logger = logging.getLogger(__name__)

_IGNORED_RELEASED_SUFFIXES = (".rotary_emb.inv_freq",)  # transformers 4.31 saved rotary caches
_IGNORED_RELEASED_PREFIXES = ("model.vision_tower.",)  # the release drops them; CLIP comes from its folder
_PREFIXES = (  # released → ours, first match wins
    ("model.mm_projector.", "mm_projector."),
    ("model.text_hidden_fcs.", "text_hidden_fcs."),
    ("model.visual_model.", "visual_model."),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)


def own_name(released: str) -> str | None:
    """Our parameter name for a released LISA key; None for keys the released code ignores."""
    if released.startswith(_IGNORED_RELEASED_PREFIXES) or released.endswith(_IGNORED_RELEASED_SUFFIXES):
        return None
    for theirs, ours in _PREFIXES:
        if released.startswith(theirs):
            return ours + released[len(theirs) :]
    raise checkpoint_io.CheckpointError(f"unexpected key in LISA checkpoint: {released}")


def released_name(own: str) -> str | None:
    """The released key of one of our parameters; None for the CLIP tower (not part of a LISA checkpoint)."""
    if own.startswith("vision_tower."):
        return None
    for theirs, ours in _PREFIXES:
        if own.startswith(ours):
            return theirs + own[len(ours) :]
    raise ValueError(f"no released name for {own}")


class LisaForCausalLM(nn.Module):
    def __init__(
        self,
        config: LisaConfig,
        clip_config: CLIPVisionConfig | None = None,
        *,
        llm_device: str | torch.device | None = None,
    ) -> None:
        """``clip_config``: the CLIP vision tower's (from its folder); None builds no tower (checkpoint work)."""
        super().__init__()
        self.config = config
        with torch.device(llm_device) if llm_device is not None else contextlib.nullcontext():
            self.language_model = LlamaForCausalLM(config.llama_config())
        keep_rotary_in_float32(self.language_model, self.language_model.config)
        self.mm_projector = nn.Linear(config.mm_hidden_size, config.hidden_size)
        hidden = config.hidden_size
        self.text_hidden_fcs = nn.ModuleList(  # released names: text_hidden_fcs.0.0 and .0.2
            [
                nn.Sequential(
                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, config.out_dim), nn.Dropout(0.0)
                )
            ]
        )
        self.visual_model: Sam = build_sam(get_sam_preset(config.sam_preset))
        self.vision_tower: CLIPVisionModel | None = None
        if clip_config is not None:
            if clip_config.hidden_size != config.mm_hidden_size:
                raise ValueError(
                    f"the CLIP tower is {clip_config.hidden_size} wide, config.json's mm_hidden_size is "
                    f"{config.mm_hidden_size}: not the tower this checkpoint was trained with"
                )
            self.vision_tower = CLIPVisionModel(clip_config).requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.mm_projector.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mm_projector.weight.dtype

    @property
    def image_token_count(self) -> int:
        """Patch tokens per image (256 for ViT-L/14 at 224 px): the <image> placeholder becomes this many."""
        if self.vision_tower is None:
            raise RuntimeError("no CLIP vision tower loaded")
        vision = self.vision_tower.config
        return (vision.image_size // vision.patch_size) ** 2

    # ---- vision side ----------------------------------------------------------------------------------
    @torch.no_grad()
    def clip_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP-preprocessed pixels (B, 3, 224, 224) → patch features (B, 256, 1024) of the frozen tower.

        LLaVA v1's choice: the second-to-last layer's hidden states (before the post-layernorm), CLS dropped.
        """
        if self.vision_tower is None:
            raise RuntimeError("no CLIP vision tower loaded")
        tower_dtype = self.vision_tower.dtype
        out = self.vision_tower(pixel_values.to(self.device, tower_dtype), output_hidden_states=True)
        return out.hidden_states[self.config.mm_vision_select_layer][:, 1:]

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP-preprocessed pixels → projected image tokens (B, 256, hidden); gradients reach the projector
        only (the tower is frozen)."""
        return self.mm_projector(self.clip_features(pixel_values).to(self.dtype))

    def splice(self, input_ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Embed one prompt (L,) and put the image tokens (P, hidden) where ``IMAGE_TOKEN_INDEX`` stands."""
        positions = (input_ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
        if len(positions) != 1:
            raise ValueError(f"the prompt needs exactly one <image>, it has {len(positions)}")
        p = int(positions[0])
        embeds = self.language_model.get_input_embeddings()(input_ids.clamp(min=0).to(self.device))
        return torch.cat([embeds[:p], image_tokens.to(embeds.dtype), embeds[p + 1 :]])

    def seg_prompts(self, seg_hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (N, hidden) of the positions before each ``[SEG]`` → SAM prompt embeddings (N, 256)."""
        return self.text_hidden_fcs[0](seg_hidden.to(self.dtype))

    # ---- checkpoints ----------------------------------------------------------------------------------
    def released_state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, tensor in self.state_dict().items():
            key = released_name(name)
            if key is not None:
                out[key] = tensor
        return out

    def save_pretrained(self, model_dir: str | Path, *, safe_serialization: bool = True, **kwargs) -> None:
        """config.json and the weights under the released names (safetensors by default); no CLIP tower."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(model_dir / "config.json")
        checkpoint_io.save_sharded(
            self.released_state_dict(), model_dir, safe_serialization=safe_serialization, **kwargs
        )

    def load_released_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Every key used or documented as ignored; none missing (SAM's pixel mean/std are not stored)."""
        self.load_released_shards([state])

    def load_released_shards(self, shards: Iterable[dict[str, torch.Tensor]]) -> None:
        """Load shard after shard into the parameters in place (their dtype and device), so memory holds the
        served model and one shard, not a second copy of the model; check every key at the end."""
        expected = {k for k in self.state_dict() if not k.startswith("vision_tower.")}
        loaded: dict[str, str] = {}  # ours → the file's name, for messages
        unexpected: list[str] = []
        ignored = 0
        for state in shards:
            own: dict[str, torch.Tensor] = {}
            for key, tensor in state.items():
                name = own_name(key)
                if name is None:
                    ignored += 1
                elif name not in expected:
                    unexpected.append(key)
                else:
                    own[name], loaded[name] = tensor, key
            try:
                self.load_state_dict(own, strict=False)
            except RuntimeError as exc:  # shape mismatches: another preset's file
                first = str(exc).splitlines()[1:2] or [str(exc)]
                raise checkpoint_io.CheckpointError(f"checkpoint does not match the model: {first[0].strip()}") from exc
            del own, state
        missing = sorted(released_name(k) or k for k in expected - loaded.keys())
        if missing or unexpected:
            raise checkpoint_io.CheckpointError(
                "checkpoint does not match the LISA model: "
                f"missing {checkpoint_io.describe_keys(missing) or 'none'}; "
                f"unexpected {checkpoint_io.describe_keys(unexpected) or 'none'}"
            )
        logger.info("loaded %d LISA weights; ignored %d (rotary caches, CLIP copies)", len(loaded), ignored)

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        clip_dir: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> LisaForCausalLM:
        """A released-layout folder (e.g. xinlai/LISA-7B-v1) and the CLIP tower's own folder (e.g.
        openai/clip-vit-large-patch14); nothing is downloaded. The model is made directly on ``device`` in
        ``dtype`` and filled one shard at a time (7B in bf16: ~14 GB plus the largest shard, ~10 GB)."""
        model_dir = Path(model_dir)
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path} not found: point --model at a LISA checkpoint folder (config.json and "
                "pytorch_model-*.bin, e.g. xinlai/LISA-7B-v1)"
            )
        config = LisaConfig.from_json_file(config_path)
        clip_dir = resolve_clip_dir(model_dir, config, clip_dir)
        files = checkpoint_io.checkpoint_files(model_dir)  # a missing shard is said before anything is built
        with torch.device("meta"):
            model = cls(config)
        model = model.to(dtype).to_empty(device=device)
        keep_rotary_in_float32(model.language_model, model.language_model.config)
        model.visual_model = serve_sam(
            model.visual_model, get_sam_preset(config.sam_preset), device=device, dtype=dtype
        )
        model.load_released_shards(checkpoint_io.read_shard(path) for path in files)
        tower = CLIPVisionModel.from_pretrained(str(clip_dir), local_files_only=True, dtype=dtype)
        if tower.config.hidden_size != config.mm_hidden_size:
            raise ValueError(
                f"the CLIP tower in {clip_dir} is {tower.config.hidden_size} wide, config.json's mm_hidden_size is "
                f"{config.mm_hidden_size}: not the tower this checkpoint was trained with"
            )
        model.vision_tower = tower.to(device).requires_grad_(False).eval()
        return model.eval()


def resolve_clip_dir(model_dir: Path, config: LisaConfig, clip_dir: str | Path | None) -> Path:
    """The explicit folder, else config's ``mm_vision_tower`` if it is a folder (absolute, or in / beside the
    model folder), as the release loads CLIP by its own name."""
    if clip_dir is not None:
        candidates = [Path(clip_dir)]
    else:
        named = Path(config.mm_vision_tower)
        candidates = [named, model_dir / named, model_dir / named.name, model_dir.parent / named.name]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"CLIP vision tower not found (looked in {', '.join(str(c) for c in candidates)}): download "
        f"{config.mm_vision_tower} (config.json and weights) and pass its folder as --clip (clip_dir)"
    )
