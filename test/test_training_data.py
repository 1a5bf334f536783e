"""Training data: Osprey-724K records (RLE and polygons), region texts, captions, encoding, bad records."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osprey_model.conversation import SYSTEM
from osprey_model.modeling_osprey import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from osprey_model.tiny import llama2_tokenizer
from osprey_model.tokenization import add_region_tokens, tokenize_prompt
from training.data.dataset import RegionDataset, box_of, collate
from training.data.encoding import SampleError, encode_conversation, region_text
from training.data.records import encode_rle, load_caption_records, load_osprey_records, load_region_text_records

H, W = 40, 60


@pytest.fixture(scope="module")
def tokenizer():
    tok = llama2_tokenizer()
    add_region_tokens(tok)
    return tok


def _square(y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _polygon(y0, y1, x0, x1) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def learned_answers(tokenizer, labels: torch.Tensor) -> list[str]:
    """Each run of learned (not ignored) label positions, decoded on its own."""
    spans, current = [], []
    for label in labels.tolist():
        if label == IGNORE_INDEX:
            if current:
                spans.append(current)
            current = []
        else:
            current.append(label)
    return [tokenizer.decode(span) for span in [*spans, current] if span]


def _write_image(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(folder / name)


def _record(record_id: str, file_name: str, segmentations: list, conversations: list) -> dict:
    return {
        "id": record_id,
        "file_name": file_name,
        "height": H,
        "width": W,
        "annotation": [
            {"segmentation": s, "bbox": [0, 0, 1, 1], "category": f"c{i}"} for i, s in enumerate(segmentations)
        ],
        "conversations": conversations,
    }


def _turns(*pairs):
    return [turn for q, a in pairs for turn in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]


def test_loader_decodes_rle_and_polygons_and_builds_the_prompt(tmp_path: Path, tokenizer) -> None:
    _write_image(tmp_path / "img", "a.png")
    rle_mask, poly_mask = _square(5, 15, 10, 30), _square(20, 35, 30, 50)
    record = _record(
        "r1",
        "a.png",
        [encode_rle(rle_mask), _polygon(20, 35, 30, 50)],
        _turns(("<image>\nWhat is <region2>?", "A box."), ("And <region1>?", "Another box.")),
    )
    path = tmp_path / "osprey.json"
    path.write_text(json.dumps([record]))
    (loaded,) = load_osprey_records(path, tmp_path / "img")
    dataset = RegionDataset([loaded], tokenizer, image_size=64, image_token_count=16, max_length=2048)
    sample = dataset[0]
    assert sample.masks.shape == (2, H, W)
    assert torch.equal(sample.masks[0].bool(), torch.from_numpy(rle_mask))
    poly = sample.masks[1].bool().numpy()
    assert abs(int(poly.sum()) - int(poly_mask.sum())) <= 40 and (poly & poly_mask).sum() >= 0.9 * poly_mask.sum()

    ids, labels = sample.input_ids, sample.labels
    assert (ids == IMAGE_TOKEN_INDEX).sum() == 1
    assert (ids == tokenizer.convert_tokens_to_ids("<mask>")).sum() == 2
    expected = (
        f"{SYSTEM} USER: <image>\nThis provides an overview of the picture.\n"
        "Ther are 2 part regions in the picture: region1<mask><pos>,region2<mask><pos>. What is region2? "
        "ASSISTANT: A box.</s>USER: And region1? ASSISTANT: Another box.</s>"
    )
    assert ids.tolist() == tokenize_prompt(tokenizer, expected)
    assert learned_answers(tokenizer, labels) == ["A box.</s>", "Another box.</s>"]


def test_answer_spans_are_prefixes_of_the_full_tokenisation(tokenizer) -> None:
    turns = [("What is <mask><pos>?", "A cup."), ("Is it full?", "No, it is empty.")]
    ids, labels = encode_conversation(tokenizer, turns, image_token_count=4, max_length=4096)
    full = tokenize_prompt(tokenizer, "x")  # just to be sure the helper runs on this tokenizer
    assert full[0] == tokenizer.bos_token_id
    assert learned_answers(tokenizer, labels) == ["A cup.</s>", "No, it is empty.</s>"]
    assert (labels[labels != IGNORE_INDEX] == ids[labels != IGNORE_INDEX]).all()


def test_over_long_samples_are_truncated_but_never_lose_all_answers(tokenizer, caplog) -> None:
    turns = [("Describe <mask><pos>.", "word " * 30), ("More?", "word " * 30)]
    image = 10
    two = len(encode_conversation(tokenizer, turns, image_token_count=image, max_length=4096)[0]) - 1 + image
    one = len(encode_conversation(tokenizer, turns[:1], image_token_count=image, max_length=4096)[0]) - 1 + image
    caplog.set_level(logging.WARNING)
    ids, labels = encode_conversation(tokenizer, turns, image_token_count=image, max_length=two - 1, sample_id="long")
    assert len(ids) - 1 + image == one and "sample long: dropped its last round" in caplog.text
    ids, labels = encode_conversation(
        tokenizer, turns[:1], image_token_count=image, max_length=one - 10, sample_id="cut"
    )
    assert len(ids) - 1 + image == one - 10 and (labels != IGNORE_INDEX).sum() > 0 and "answer is cut" in caplog.text
    with pytest.raises(SampleError, match="no answer token fits"):
        encode_conversation(tokenizer, turns[:1], image_token_count=image, max_length=one - 35)


def test_bad_records_are_reported_with_their_id_and_skipped(tmp_path: Path, tokenizer, caplog) -> None:
    _write_image(tmp_path / "img", "ok.png")
    good = _record("good", "ok.png", [encode_rle(_square(1, 9, 1, 9))], _turns(("What is <region1>?", "A square.")))
    lines = [
        json.dumps(good),
        json.dumps(_record("no-image", "missing.png", [encode_rle(_square(1, 9, 1, 9))], _turns(("<region1>?", "x")))),
        json.dumps(_record("out-of-range", "ok.png", [encode_rle(_square(1, 9, 1, 9))], _turns(("<region3>?", "x")))),
        json.dumps(_record("empty-seg", "ok.png", [[]], _turns(("<region1>?", "x")))),
        json.dumps(_record("zero-mask", "ok.png", [encode_rle(np.zeros((H, W), bool))], _turns(("<region1>?", "x")))),
        '{"id": "broken", "file_name": ',
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    caplog.set_level(logging.WARNING)
    records = load_osprey_records(path, tmp_path / "img")
    assert "skipping record no-image: missing image" in caplog.text
    assert "skipping record empty-seg: region 1 has an empty segmentation" in caplog.text
    assert "skipping records.jsonl line 6: malformed JSON" in caplog.text
    assert [r.id for r in records] == ["good", "out-of-range", "zero-mask"]

    dataset = RegionDataset(records, tokenizer, image_size=64, image_token_count=16, max_length=512)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["ids"] == ["good"]
    assert "skipping record out-of-range: region index out of range: <region3>" in caplog.text
    assert "skipping record zero-mask: empty segmentation" in caplog.text


def test_region_text_and_caption_loaders(tmp_path: Path, tokenizer) -> None:
    _write_image(tmp_path / "img", "b.png")
    coco = {
        "images": [{"id": 7, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "plate"}],
        "annotations": [
            {"image_id": 7, "category_id": 2, "segmentation": _polygon(2, 10, 2, 10), "bbox": [2, 2, 8, 8]},
            {"image_id": 7, "category_id": 1, "segmentation": encode_rle(_square(20, 30, 20, 40)),
             "bbox": [20, 20, 20, 10],
             "sentence": "the cup on the right"},
        ],
    }  # fmt: skip
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    (record,) = load_region_text_records(tmp_path / "inst.json", tmp_path / "img")
    assert [a for _, a in record.turns] == ["plate", "the cup on the right"]
    turns, order = region_text(record.turns, 2)
    assert order == [0, 1] and all("<mask><pos>" in q for q, _ in turns)

    captions = [{"id": "c1", "image": "b.png", "conversations": _turns(("<image>\nDescribe it.", "A grey picture."))}]
    (tmp_path / "cap.json").write_text(json.dumps(captions))
    (cap,) = load_caption_records(tmp_path / "cap.json", tmp_path / "img")
    sample = RegionDataset([cap], tokenizer, 64, 16, 512)[0]
    assert sample.masks.shape[0] == 0 and (sample.input_ids == IMAGE_TOKEN_INDEX).sum() == 1
    assert learned_answers(tokenizer, sample.labels) == ["A grey picture.</s>"]


def test_box_prompt_is_the_filled_bounding_box() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2, 3] = mask[6, 8] = True
    box = box_of(mask)
    assert box.sum() == 5 * 6 and box[2:7, 3:9].all()


def test_shapes_world_is_deterministic(tmp_path: Path) -> None:
    from training import shapes_world

    a = shapes_world.generate(tmp_path / "a", 3, seed=5)
    b = shapes_world.generate(tmp_path / "b", 3, seed=5)
    for kind in a:
        assert a[kind].read_text() == b[kind].read_text()
    assert (tmp_path / "a/images/000002.png").read_bytes() == (tmp_path / "b/images/000002.png").read_bytes()
    record = json.loads(a["short_form"].read_text())[0]
    assert {"segmentation", "bbox", "category", "colour"} <= set(record["annotation"][0])
    categories = {r["category"] for rec in json.loads(a["conversation"].read_text()) for r in rec["annotation"]}
    assert categories <= {"circle", "square", "triangle", "star", "hexagon", "diamond"}
