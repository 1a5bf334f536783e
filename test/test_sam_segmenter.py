"""SAM in the model layer, on segment-anything's own modules: prompts, batching, checkpoints, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from osprey_model.checkpoint_io import CheckpointError
from osprey_model.encoders import create_encoder
from osprey_model.sam import SamImageEncoder, SamSegmenter, build_sam, get_sam_preset, load_sam
from osprey_model.sam.segmenter import Prompt, mask_boxes
from training.train_tiny_sam import random_prompt

HEIGHT, WIDTH = 480, 640


@pytest.fixture(scope="module")
def segmenter() -> SamSegmenter:
    torch.manual_seed(0)
    return SamSegmenter(build_sam(get_sam_preset("tiny")))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    picture = np.full((HEIGHT, WIDTH, 3), 230, np.uint8)
    picture[100:300, 150:350] = (200, 30, 30)
    picture[250:420, 380:600] = (30, 60, 200)
    return picture


def test_one_point_matches_segment_anythings_own_predictor(segmenter, image) -> None:
    reference = SamPredictor(segmenter.sam)
    reference.set_image(image)
    expected_masks, expected_scores, _ = reference.predict(
        point_coords=np.array([[250.0, 200.0]]), point_labels=np.array([1]), multimask_output=True
    )
    result = segmenter.segment(segmenter.encode(image), [Prompt(points=[[250, 200]], labels=[1])], multimask="all")
    assert result.masks.shape == (1, 3, HEIGHT, WIDTH)
    np.testing.assert_allclose(result.scores[0], expected_scores, atol=1e-5)
    assert (result.masks[0] != expected_masks).mean() < 1e-4  # the same masks (up to float ties at the edge)


def test_batch_of_mixed_prompts_and_best_of_three(segmenter, image) -> None:
    frame = segmenter.encode(image)
    assert frame.embedding.shape == (1, 256, 16, 16) and frame.image_hw == (HEIGHT, WIDTH)
    prompts = [
        Prompt(points=[[250, 200]], labels=[1]),
        Prompt(points=[[480, 330], [200, 150]], labels=[1, 0]),  # two points: the first prompt is padded
    ]
    every = segmenter.segment(frame, prompts, multimask="all")
    best = segmenter.segment(frame, prompts, multimask="best")
    assert best.masks.shape == (2, 1, HEIGHT, WIDTH) and best.scores.shape == (2, 1)
    chosen = every.scores.argmax(axis=1)
    for i in range(2):
        assert np.array_equal(best.masks[i, 0], every.masks[i, chosen[i]])
        assert best.scores[i, 0] == pytest.approx(every.scores[i].max())
    alone = segmenter.segment(frame, prompts[1:], multimask="all")  # padding changed nothing
    np.testing.assert_allclose(alone.scores[0], every.scores[1], atol=1e-5)

    boxes = segmenter.segment(frame, [Prompt(box=[150, 100, 350, 300]), Prompt(box=[380, 250, 600, 420])])
    assert boxes.masks.shape == (2, 1, HEIGHT, WIDTH) and boxes.boxes.shape == (2, 1, 4)
    single = segmenter.segment(frame, [Prompt(box=[150, 100, 350, 300])], multimask="single")
    assert single.masks.shape == (1, 1, HEIGHT, WIDTH)
    refined = segmenter.segment(
        frame, [Prompt(points=[[250, 200]], labels=[1], mask_input=single.low_res_logits[0, 0:1])]
    )
    assert refined.masks.shape == (1, 1, HEIGHT, WIDTH)


def test_mask_boxes_are_inclusive_and_flag_empty_masks() -> None:
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    assert mask_boxes(masks).tolist() == [[3, 2, 8, 4], [-1, -1, -1, -1]]


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "no prompt"),
        ([Prompt()], "prompt 0 is empty"),
        ([Prompt(points=[[700, 10]], labels=[1])], r"point \(700, 10\) lies outside the 640x480 image"),
        ([Prompt(points=[[10, -1]], labels=[1])], "lies outside"),
        ([Prompt(points=[[10, 10]], labels=[2])], "labels must be one 0"),
        ([Prompt(box=[50, 50, 50, 80])], "is empty or inverted"),
        ([Prompt(box=[90, 50, 40, 80])], "is empty or inverted"),
        ([Prompt(box=[650, 10, 700, 40])], "lies outside the 640x480 image"),
        ([Prompt(box=[1, 2, 3])], "a box is x0, y0, x1, y1"),
        ([Prompt(box=[1, 2, 30, 40]), Prompt(points=[[5, 5]])], "either every prompt has a box or none"),
        ([Prompt(points=[[5, 5]], mask_input=torch.zeros(1, 8, 8))], r"low-res logits \(1, 64, 64\)"),
    ],
    ids=[
        "no-prompt",
        "empty-prompt",
        "point-right",
        "point-negative",
        "bad-label",
        "empty-box",
        "inverted-box",
        "box-outside",
        "box-shape",
        "mixed-boxes",
        "mask-input-size",
    ],
)
def test_bad_prompts_are_refused_clearly(segmenter, image, prompts, message) -> None:
    frame = segmenter.encode(image)
    with pytest.raises(ValueError, match=message):
        segmenter.segment(frame, prompts)
    assert segmenter.segment(frame, [Prompt(points=[[5, 5]], labels=[1])]).masks.shape[0] == 1  # still usable


def test_a_released_layout_vit_b_loads_with_no_missing_keys(tmp_path: Path) -> None:
    """A random vit_b in the layout of sam_vit_b_01ec64.pth (a plain state dict), written here, never committed."""
    torch.manual_seed(0)
    original = build_sam(get_sam_preset("vit_b"))
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(original.state_dict(), path)
    loaded = load_sam("vit_b", path)
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(loaded.pixel_mean, original.pixel_mean)  # not in the file: rebuilt, not left empty
    del original, loaded

    with pytest.raises(CheckpointError, match="does not match this SAM preset"):
        load_sam("vit_l", path)
    (tmp_path / "pickled.pth").write_bytes(b"\x80\x04\x95not a state dict")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_sam("vit_b", tmp_path / "pickled.pth")
    with pytest.raises(FileNotFoundError, match=r"sam_vit_h_4b8939\.pth"):
        load_sam("vit_h", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown SAM preset 'vit_x'"):
        load_sam("vit_x", None)


def test_the_embedded_tiny_sam_segments_what_is_clicked_and_boxed(shipped_sam) -> None:
    """The shipped checkpoint loads with every key and puts a click's and a box's mask on the shape: on 8
    held-out scenes here 0.71 / 0.80 mIoU (the card's 200: 0.65 / 0.76)."""
    for kind, floor in (("point", 0.6), ("box", 0.7)):
        ious = []
        for seed in range(30_000, 30_008):
            image, masks = scene_with_masks(np.random.default_rng(seed))
            prompts = [random_prompt(np.random.default_rng(i), mask, kind) for i, mask in enumerate(masks)]
            result = shipped_sam.segment(image, prompts)
            ious += [mask_iou(truth, got) for truth, got in zip(masks, result.masks[:, 0], strict=True)]
        assert np.mean(ious) > floor, (kind, np.mean(ious))


def test_sam_encoder_backends_onnxruntime_matches_torch_and_tensorrt_falls_back(
    shipped_sam, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.WARNING)
    encoder = SamImageEncoder(shipped_sam.sam.image_encoder)
    backend = create_encoder("tensorrt" if not importable("tensorrt") else "onnxruntime", encoder, cache_dir=tmp_path)
    assert backend.name == "onnxruntime"
    if not importable("tensorrt"):
        assert [r.getMessage() for r in caplog.records] == [
            "sam-vit encoder backend tensorrt unavailable (tensorrt is not importable); falling back to onnxruntime "
            "on cpu"
        ]
    assert len(list(tmp_path.glob("sam-vit-*.onnx"))) == 1
    served = SamSegmenter(shipped_sam.sam, encoder=backend)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    a, b = shipped_sam.encode(image), served.encode(image)
    assert (a.embedding - b.embedding).abs().max().item() < 1e-4
    prompt = [Prompt(points=[[100, 100]], labels=[1])]
    assert (shipped_sam.segment(a, prompt).masks != served.segment(b, prompt).masks).mean() < 1e-3


def test_bf16_keeps_the_prompt_encoder_in_fp32_and_the_masks(tmp_path: Path) -> None:
    from osprey_model.embedded import default_sam_checkpoint

    fp32 = SamSegmenter.from_pretrained("tiny", default_sam_checkpoint())
    bf16 = SamSegmenter.from_pretrained("tiny", default_sam_checkpoint(), dtype=torch.bfloat16)
    assert bf16.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    assert bf16.sam.mask_decoder.iou_token.weight.dtype == torch.bfloat16
    image, masks = scene_with_masks(np.random.default_rng(30_001))
    prompts = [random_prompt(np.random.default_rng(i), mask, "point") for i, mask in enumerate(masks)]
    a, b = fp32.segment(image, prompts), bf16.segment(image, prompts)
    for m32, m16 in zip(a.masks[:, 0], b.masks[:, 0], strict=True):
        assert mask_iou(m32, m16) > 0.9


def test_a_mask_prompt_is_sams_low_res_input(shipped_sam) -> None:
    image, masks = scene_with_masks(np.random.default_rng(30_002))
    logits = shipped_sam.mask_prompt(masks[0])
    assert logits.shape == (1, 64, 64) and logits.max() > 0 > logits.min()
    click = np.argwhere(masks[0])[:1, ::-1]
    result = shipped_sam.segment(image, [Prompt(points=click, mask_input=logits)])
    assert result.masks.shape == (1, 1, *masks[0].shape)
    without = shipped_sam.segment(image, [Prompt(points=click)])
    assert not torch.equal(result.low_res_logits, without.low_res_logits)  # the mask reaches the decoder
    alone = shipped_sam.segment(image, [Prompt(mask_input=logits)])  # a mask with no click or box
    assert alone.masks.shape == (1, 1, *masks[0].shape)
    with pytest.raises(ValueError, match="prompt mask is empty"):
        shipped_sam.mask_prompt(np.zeros_like(masks[0]))
    with pytest.raises(ValueError, match="one \\(H, W\\) binary mask"):
        shipped_sam.mask_prompt(np.ones((2, 4, 4), bool))


def scene_with_masks(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    from training.train_tiny_sam import scene

    return scene(rng)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
