"""The papers' evaluation protocols: their metrics on hand-made cases, and each protocol end to end on the
shipped tiny model over the shapes world written in the benchmark's own format."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from osprey_model import OspreyPredictor
from osprey_model.conversation import SYSTEM, image_question_prompt
from osprey_model.embedded import default_checkpoint
from osprey_model.text_embedding import minilm_embedder
from training import evaluate
from training.evaluation import ferret_bench, pope, shapes_tables
from training.evaluation.class_matching import ClassMatcher, ClassName, read_class_file
from training.evaluation.common import Generation, ResultWriter
from training.evaluation.mask_vs_box import evaluate as evaluate_mask_vs_box
from training.evaluation.open_vocab import _Accumulator
from training.evaluation.panoptic_data import find_panoptic_set, id_to_rgb, rgb_to_id
from training.evaluation.referring_classification import clean_answer, clean_label
from training.evaluation.shapes_datasets import write_ferret_bench, write_panoptic
from training.metrics import semantic_iou
from training.shapes_world import generate

BOX_CHECKPOINT = Path(__file__).resolve().parents[1] / "osprey_model" / "checkpoints" / "tiny-shapes-box"


@pytest.fixture(scope="module")
def predictor() -> OspreyPredictor:
    return OspreyPredictor.from_pretrained(default_checkpoint())


@pytest.fixture(scope="module")
def embed():
    return minilm_embedder()


def test_pope_metrics_by_hand() -> None:
    predicted = [True, True, False, False, True]
    labels = [True, False, False, True, True]  # TP 2, FP 1, TN 1, FN 1
    s = pope.pope_scores(predicted, labels)
    assert (s.accuracy, s.precision, s.recall, s.yes_ratio) == pytest.approx((3 / 5, 2 / 3, 2 / 3, 3 / 5))
    assert s.f1 == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        pope.pope_scores([], [])


@pytest.mark.parametrize(
    ("answer", "yes"),
    [("yes, there is.", True), ("no", False), ("there is not a dog.", False), ("a red star. no doubt", True),
     ("no, there is none", False), ("nothing", True)],
)  # fmt: skip
def test_pope_reads_answers_as_the_released_parser(answer: str, yes: bool) -> None:
    assert pope.says_yes(answer) is yes


def test_pope_skips_a_broken_line(tmp_path: Path, caplog) -> None:
    path = tmp_path / "coco_pope_random.json"
    path.write_text('{"image": "a.png", "text": "Is there a dog?", "label": "yes"}\n{broken\n')
    assert len(pope.read_questions(path)) == 1
    assert "skipped" in caplog.text


def test_image_question_prompt_is_the_released_pope_form() -> None:
    assert image_question_prompt("Is there a dog in the image?") == (
        f"{SYSTEM} USER: <image>\nIs there a dog in the image? ASSISTANT:"
    )


def test_semantic_iou_splits_words_as_released() -> None:
    assert semantic_iou("bow (weapon)", "bow weapon") == pytest.approx(1 / 3)
    assert semantic_iou("t-shirt", "t shirt") == 0.0


def test_released_cleaning() -> None:
    assert clean_label("dog:leg") == "dog leg" and clean_label("traffic_light") == "traffic light"
    assert clean_answer("Category: red star.") == " red star "
    assert clean_answer("a cup, mostly") == "a cup  mostly"


def test_answers_map_to_classes_through_synonyms(embed) -> None:
    classes = [ClassName(1, ("diamond", "rhombus"), True), ClassName(2, ("circle", "disc"), True),
               ClassName(3, ("wall", "background"), False)]  # fmt: skip
    matcher = ClassMatcher(classes, embed)
    p = matcher.probabilities(["a blue rhombus", "red disc", "the wall"])
    assert p.argmax(axis=1).tolist() == [0, 1, 2]
    assert np.allclose(p.sum(axis=1), 1)


def test_class_file_in_the_released_format(tmp_path: Path) -> None:
    path = tmp_path / "ade20k_150_with_prompt_eng.txt"
    path.write_text("0:invalid_class_id\n1:wall\n2:building,edifice\n")
    assert read_class_file(path) == [("wall",), ("building", "edifice")]


def test_panoptic_ids_round_trip() -> None:
    ids = np.array([[0, 1, 255], [256, 65535, 16777215]])
    assert (rgb_to_id(id_to_rgb(ids)) == ids).all()


def test_open_vocab_scores_are_perfect_for_perfect_names_and_count_misses(tmp_path: Path) -> None:
    """Every segment named right: PQ, AP, mIoU 1. One thing named as another: each drops."""
    write_panoptic(tmp_path / "ade", 3, seed=1, layout="ade20k")
    dataset = find_panoptic_set(tmp_path / "ade")
    index = {c.id: k for k, c in enumerate(dataset.classes)}

    def run(out: Path, wrong: int) -> tuple[dict, float, float]:
        results = _Accumulator(dataset, out)
        mistakes = wrong
        for item in dataset:
            # softmax-like rows, as the matcher gives: every (segment, class) pair is a candidate detection
            probabilities = np.full((len(item.segments), len(dataset.classes)), 0.1 / (len(dataset.classes) - 1))
            for row, segment in enumerate(item.segments):
                k = index[segment["category_id"]]
                if mistakes and dataset.classes[k].isthing:
                    probabilities[row, k] = 0.0  # its true class ranks below every other candidate
                    k, mistakes = (k + 1) % (len(dataset.classes) - 1), mistakes - 1
                probabilities[row, k] = 0.9
            results.add(item, item.segments, probabilities)
        categories = [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in dataset.classes]
        pq = results.pq(out, dataset.png_dir, categories)
        return pq, results.ap([c for c in categories if c["isthing"]]), results.miou()

    pq, ap, miou = run(tmp_path / "perfect", wrong=0)
    assert pq["All"]["pq"] == pytest.approx(1.0) and ap == pytest.approx(1.0) and miou == pytest.approx(1.0)
    pq, ap, miou = run(tmp_path / "one-wrong", wrong=1)
    assert pq["All"]["pq"] < 1 and ap < 1 and miou < 1


def grid_segments(
    count: int, columns: int, cell_hw: tuple[int, int], frame_hw: tuple[int, int], classes: int
) -> tuple[np.ndarray, list[dict]]:
    """A panoptic id map of ``count`` rectangles in rows of ``columns``, classes 1..``classes`` in turn."""
    ids = np.zeros(frame_hw, np.int64)
    segments = []
    height, width = cell_hw
    for k in range(count):
        row, col = divmod(k, columns)
        ids[row * height : (row + 1) * height, col * width : (col + 1) * width] = k + 1
        segments.append({"id": k + 1, "category_id": 1 + k % classes, "iscrowd": 0})
    return ids, segments


def run_open_vocab(root: Path, out: Path, predictor: OspreyPredictor, max_new_tokens: int) -> dict:
    return evaluate.run(
        ["--protocol", "open-vocab-seg", "--model", str(default_checkpoint()), "--data", str(root),
         "--out", str(out), "--max-new-tokens", str(max_new_tokens)],
        predictor=predictor,
    )  # fmt: skip


def test_at_most_300_regions_of_one_image_are_asked(tmp_path: Path, predictor: OspreyPredictor) -> None:
    """An image with 320 ground-truth segments: 300 answers, the rest counted as unasked in mIoU."""
    root = tmp_path / "ade"
    (root / "images" / "validation").mkdir(parents=True)
    (root / "ade20k_panoptic_val").mkdir()
    ids, segments = grid_segments(320, columns=40, cell_hw=(20, 8), frame_hw=(160, 320), classes=2)
    Image.fromarray(id_to_rgb(ids)).save(root / "ade20k_panoptic_val" / "many.png")
    Image.fromarray(np.full((160, 320, 3), 200, np.uint8)).save(root / "images" / "validation" / "many.jpg")
    categories = [{"id": 1, "name": "square", "isthing": 1}, {"id": 2, "name": "wall", "isthing": 0}]
    (root / "ade20k_panoptic_val.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "many.jpg", "height": 160, "width": 320}],
        "annotations": [{"image_id": 1, "file_name": "many.png", "segments_info": segments}],
        "categories": categories,
    }))  # fmt: skip
    out = tmp_path / "out"
    scores = run_open_vocab(root, out, predictor, max_new_tokens=2)
    assert scores["regions"] == 300
    assert len((out / "answers.jsonl").read_text().splitlines()) == 300
    # the 20 unasked segments' pixels count against their classes: mIoU below the asked regions' accuracy
    assert scores["miou"] <= scores["region_accuracy"] * 300 / 320 + 1e-9


def test_a_cityscapes_size_frame_is_asked_in_passes(tmp_path: Path, predictor: OspreyPredictor) -> None:
    """A 2048 x 1024 frame with 70 segments: two passes of at most 64 regions, every segment answered once."""
    write_panoptic(tmp_path / "city", 1, seed=8, layout="cityscapes")
    root = tmp_path / "city"
    json_path = root / "gtFine" / "cityscapes_panoptic_val.json"
    data = json.loads(json_path.read_text())
    image_id = data["images"][0]["id"]
    ids, segments = grid_segments(70, columns=10, cell_hw=(140, 200), frame_hw=(1024, 2048), classes=7)
    Image.fromarray(id_to_rgb(ids)).save(
        root / "gtFine" / "cityscapes_panoptic_val" / data["annotations"][0]["file_name"]
    )
    rgb = np.full((1024, 2048, 3), 228, np.uint8)
    Image.fromarray(rgb).save(root / "leftImg8bit" / "val" / "shapesville" / f"{image_id}_leftImg8bit.png")
    data["images"][0].update(height=1024, width=2048)
    data["annotations"][0]["segments_info"] = segments
    json_path.write_text(json.dumps(data))
    calls = []
    describe = predictor.describe
    try:
        predictor.describe = lambda frame, masks, **kw: calls.append(len(masks)) or describe(frame, masks, **kw)  # type: ignore[method-assign]
        scores = run_open_vocab(root, tmp_path / "out", predictor, max_new_tokens=2)
    finally:
        del predictor.describe
    assert calls == [64, 6] and scores["regions"] == 70


def test_miou_counts_a_class_predicted_but_never_present(tmp_path: Path) -> None:
    """detectron2's mean: a class that is only predicted lowers mIoU; a segment the PNG lacks is not asked;
    an image that cannot be read is skipped, not fatal."""
    write_panoptic(tmp_path / "ade", 2, seed=5, layout="ade20k")
    dataset = find_panoptic_set(tmp_path / "ade")
    results = _Accumulator(dataset, tmp_path / "out")
    index = {c.id: k for k, c in enumerate(dataset.classes)}
    present = {segment["category_id"] for item in dataset for segment in item.segments}
    absent = next(k for k, c in enumerate(dataset.classes) if c.id not in present)
    for number, item in enumerate(dataset):
        probabilities = np.zeros((len(item.segments), len(dataset.classes)))
        for row, segment in enumerate(item.segments):
            probabilities[row, absent if number == 0 and row == 0 else index[segment["category_id"]]] = 1.0
        results.add(item, item.segments, probabilities)
    tp = np.diag(results.confusion[:, :-1]).astype(float)
    union = results.confusion.sum(axis=1) + results.confusion[:, :-1].sum(axis=0) - tp
    truth = results.confusion.sum(axis=1) > 0
    assert results.miou() == pytest.approx(np.sum(tp[truth] / union[truth]) / (truth.sum() + 1))


def test_bad_panoptic_records_are_skipped(tmp_path: Path, predictor: OspreyPredictor, caplog) -> None:
    write_panoptic(tmp_path / "city", 3, seed=6, layout="cityscapes")
    json_path = tmp_path / "city" / "gtFine" / "cityscapes_panoptic_val.json"
    data = json.loads(json_path.read_text())
    assert data["images"][0]["file_name"].endswith("_gtFine_leftImg8bit.png")  # as cityscapesScripts names it
    data["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 1, "iscrowd": 0})  # not in the PNG
    json_path.write_text(json.dumps(data))
    missing = tmp_path / "city" / "leftImg8bit" / "val" / "shapesville" / f"{data['images'][1]['id']}_leftImg8bit.png"
    missing.unlink()
    scores = run_open_vocab(tmp_path / "city", tmp_path / "out", predictor, max_new_tokens=4)
    assert scores["images"] == 2 and scores["skipped_images"] == 1
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert scores["regions"] == len(answers) and 4242 not in {a["segment_id"] for a in answers}
    assert "skipping image" in caplog.text


class _Judge(BaseHTTPRequestHandler):
    replies: ClassVar[list[str]] = ["7 5\nboth fine", "no scores here"]
    requests: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.requests.append({"body": body, "auth": self.headers.get("Authorization")})
        reply = _Judge.replies[(len(_Judge.requests) - 1) % len(_Judge.replies)]
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_ferret_bench_with_an_openai_compatible_judge(tmp_path: Path, predictor: OspreyPredictor, caplog) -> None:
    """Both files number their questions from 0, as Ferret's do: references are matched by category too."""
    references = ferret_bench.read_references(write_ferret_bench(tmp_path / "ferret", 4, seed=3))
    assert ("refer_desc", "0") in references and ("refer_reason", "0") in references
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = ferret_bench.Judge(f"http://127.0.0.1:{server.server_port}/v1", "judge-model", api_key="secret")
        writer = ResultWriter(tmp_path / "out")
        scores = ferret_bench.evaluate_ferret_bench(
            predictor, tmp_path / "ferret", tmp_path / "ferret" / "images", writer, Generation(16), judge, references
        )
        writer.close()
    finally:
        server.shutdown()
    assert scores.questions == 4 and scores.judged == 2  # every second reply has no scores: logged, not counted
    assert "no two scores" in caplog.text
    assert all(v == pytest.approx(100 * 5 / 7) for v in scores.by_category.values())
    first = _Judge.requests[0]
    assert first["auth"] == "Bearer secret" and first["body"]["model"] == "judge-model"
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    for request, answer in zip(_Judge.requests[-4:], answers, strict=True):
        content = request["body"]["messages"][1]["content"]
        reference = references[(answer["category"], str(answer["question_id"]))]
        assert f"[Assistant 1]\n{reference}\n" in content and f"[Assistant 2]\n{answer['answer']}\n" in content
    with pytest.raises(ValueError, match="references"):
        ferret_bench.evaluate_ferret_bench(predictor, tmp_path / "ferret", tmp_path, writer, Generation(4), judge)


def test_a_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        evaluate.run(["--protocol", "pope", "--model", "m", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="Cityscapes or ADE20K"):
        find_panoptic_set(tmp_path)


def test_every_protocol_end_to_end_on_the_shipped_model(tmp_path: Path) -> None:
    """The command that regenerates training/evaluation/results, at 3 images per dataset: every run writes
    its table, its scores and one answer line per item, and the scores follow from the answers."""
    out = tmp_path / "results"
    shapes_tables.main(["--out", str(out), "--work", str(tmp_path / "work"), "--images", "3"])
    names = set(shapes_tables.runs(tmp_path / "work"))
    assert {p.name for p in out.iterdir() if p.is_dir()} == names
    readme = (out / "README.md").read_text()
    for name in names:
        table = (out / name / "table.md").read_text()
        assert table.startswith("| ") and table.strip() in readme
        scores = json.loads((out / name / "scores.json").read_text())["scores"]
        answers = [json.loads(line) for line in (out / name / "answers.jsonl").read_text().splitlines()]
        if name == "pope":
            for split, s in scores.items():
                rows = [a for a in answers if a["split"] == split]
                assert s["questions"] == len(rows) == 18  # 3 present + 3 absent objects × 3 images
                assert s["accuracy"] == pytest.approx(np.mean([a["correct"] for a in rows]))
        elif name.startswith("open-vocab"):
            assert scores["regions"] == len(answers) > 0
            assert scores["region_accuracy"] == pytest.approx(np.mean([a["correct"] for a in answers]))
            assert 0 <= scores["pq"] <= 1 and 0 <= scores["ap"] <= 1 and 0 <= scores["miou"] <= 1
        elif name.startswith("referring-classification"):
            assert scores["objects"] == len(answers) > 0
            assert scores["semantic_iou"] == pytest.approx(np.mean([a["semantic_iou"] for a in answers]))
            assert -1 <= scores["semantic_similarity"] <= 1
        elif name == "region-captioning-refcocog":
            assert scores["regions"] == len(answers) > 0
            assert scores["meteor"] > 0 and scores["cider"] > 0
        elif name == "ferret-bench":
            assert scores["questions"] == len(answers) == 3 and scores["judged"] == 0
            assert all(a["answer"] for a in answers)


def test_the_box_trained_twin_loads_and_masks_still_win(tmp_path: Path, embed) -> None:
    """The shipped box baseline shares the mask model's tower by a relative path; on held-out heavy overlap,
    each model asked with its own prompt kind, masks name colours better (the card's +8.5 points)."""
    config = json.loads((BOX_CHECKPOINT / "config.json").read_text())
    assert config["mm_vision_tower"] == "../tiny-shapes/open_clip_model.safetensors"
    assert not (BOX_CHECKPOINT / "open_clip_model.safetensors").exists()
    assert "trained with" in (BOX_CHECKPOINT / "README.md").read_text()
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        files = generate(Path(work), 40, seed=77_000, overlap=0.85)
        images = Path(work) / "images"
        mask_model = evaluate_mask_vs_box(
            OspreyPredictor.from_pretrained(default_checkpoint()), files["short_form"], images, embed
        )
        box_model = evaluate_mask_vs_box(
            OspreyPredictor.from_pretrained(BOX_CHECKPOINT), files["short_form"], images, embed
        )
    print(f"colour: mask-trained with masks {mask_model['mask'].colour_accuracy:.3f}, "
          f"box-trained with boxes {box_model['box'].colour_accuracy:.3f}")  # fmt: skip
    assert mask_model["mask"].colour_accuracy > box_model["box"].colour_accuracy
    assert box_model["box"].colour_accuracy > mask_model["box"].colour_accuracy  # training on boxes helps boxes
