"""The papers' evaluations, one command each, for any Osprey checkpoint.

    python -m training.evaluate --protocol NAME --model DIR [--clip FILE] --data PATH --out DIR [--limit N]

Protocols (``training/evaluation/``, each module says what it reads and how it scores):

- ``open-vocab-seg``: Cityscapes / ADE20K-150 panoptic with ground-truth masks → PQ, AP, mIoU;
  ``--data`` is the dataset folder (``--classes`` the released synonym file, optional);
- ``referring-classification``: ``lvis_val_1k_category.json`` / ``paco_val_1k_category.json`` → SS, S-IoU;
- ``region-captioning``: RefCOCOg ``finetune_refcocog_val_with_mask.json`` → METEOR, CIDEr;
- ``pope``: the folder of ``coco_pope_{random,popular,adversarial}.json`` → accuracy, precision, recall,
  F1, yes-ratio;
- ``ferret-bench``: the folder of ``box_refer_{caption,reason}.json`` → the answers, and scores when an
  OpenAI-compatible judge is named (``--judge-url``, ``--judge-model``, ``--references``);
- ``shapes-mask-vs-box``: the shapes world's held-out regions, asked with masks and with boxes.

``--image-root`` defaults to the data file's folder. Writes ``answers.jsonl``, ``scores.json`` and
``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from osprey_model import OspreyPredictor
from osprey_model.text_embedding import EmbedFn, minilm_embedder

from .evaluation import ferret_bench, mask_vs_box, open_vocab, pope, referring_classification, region_captioning
from .evaluation.class_matching import ClassMatcher
from .evaluation.common import Generation, ResultWriter, set_seed
from .evaluation.panoptic_data import find_panoptic_set

logger = logging.getLogger(__name__)

# Answer lengths: the released scripts allow 1,024 new tokens and stop at the end of the answer; these
# are ample for each protocol's answer and keep a runaway answer from costing minutes.
MAX_NEW_TOKENS = {
    "open-vocab-seg": 32,
    "referring-classification": 32,
    "region-captioning": 64,
    "pope": 16,
    "ferret-bench": 256,
    "shapes-mask-vs-box": 8,
}


@functools.cache
def _embedder(device: str) -> EmbedFn:
    """MiniLM, loaded once per process however many protocols run in it."""
    return minilm_embedder(device)


def _image_root(args: argparse.Namespace) -> Path:
    return args.image_root or (args.data if args.data.is_dir() else args.data.parent)


def run_open_vocab(
    args: argparse.Namespace, predictor: OspreyPredictor, writer: ResultWriter, generation: Generation
) -> tuple[dict, str]:
    dataset = find_panoptic_set(args.data, args.split, args.classes)
    matcher = ClassMatcher(dataset.classes, _embedder(args.embed_device))
    scores = open_vocab.evaluate_open_vocab(predictor, dataset, matcher, writer, generation, args.limit)
    return asdict(scores) | {"dataset": dataset.layout}, open_vocab.table(scores, dataset.layout, args.model_name)


def run_referring_classification(
    args: argparse.Namespace, predictor: OspreyPredictor, writer: ResultWriter, generation: Generation
) -> tuple[dict, str]:
    dataset = "paco" if "paco" in args.data.name.lower() else "lvis"
    scores = referring_classification.evaluate_referring_classification(
        predictor, args.data, _image_root(args), _embedder(args.embed_device), writer, generation, args.limit
    )
    return asdict(scores) | {"dataset": dataset}, referring_classification.table(scores, dataset, args.model_name)


def run_region_captioning(
    args: argparse.Namespace, predictor: OspreyPredictor, writer: ResultWriter, generation: Generation
) -> tuple[dict, str]:
    scores = region_captioning.evaluate_region_captioning(
        predictor, args.data, _image_root(args), writer, generation, args.limit
    )
    return asdict(scores), region_captioning.table(scores, args.model_name)


def run_pope(
    args: argparse.Namespace, predictor: OspreyPredictor, writer: ResultWriter, generation: Generation
) -> tuple[dict, str]:
    scores = {
        split: pope.evaluate_pope_split(
            predictor, pope.pope_file(args.data, split), _image_root(args), writer, generation, split, args.limit
        )
        for split in args.pope_splits
    }
    return {k: asdict(v) for k, v in scores.items()}, pope.table(scores, args.model_name)


def run_ferret_bench(
    args: argparse.Namespace, predictor: OspreyPredictor, writer: ResultWriter, generation: Generation
) -> tuple[dict, str]:
    judge = ferret_bench.judge_from_env(args.judge_url, args.judge_model, args.judge_key_env)
    references = ferret_bench.read_references(*args.references) if args.references else None
    scores = ferret_bench.evaluate_ferret_bench(
        predictor, args.data, _image_root(args), writer, generation, judge, references, args.limit
    )
    return asdict(scores), ferret_bench.table(scores, args.model_name)


def run_mask_vs_box(
    args: argparse.Namespace, predictor: OspreyPredictor, writer: ResultWriter, generation: Generation
) -> tuple[dict, str]:
    scores = mask_vs_box.evaluate(predictor, args.data, _image_root(args), _embedder(args.embed_device), args.limit)
    return {k: asdict(v) for k, v in scores.items()}, mask_vs_box.markdown_table(scores)


Runner = Callable[[argparse.Namespace, OspreyPredictor, ResultWriter, Generation], tuple[dict, str]]
PROTOCOLS: dict[str, Runner] = {
    "open-vocab-seg": run_open_vocab,
    "referring-classification": run_referring_classification,
    "region-captioning": run_region_captioning,
    "pope": run_pope,
    "ferret-bench": run_ferret_bench,
    "shapes-mask-vs-box": run_mask_vs_box,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    p.add_argument("--model", type=Path, required=True, help="an Osprey checkpoint folder")
    p.add_argument("--clip", type=Path, help="the CLIP vision weights, if not in (or named by) the model folder")
    p.add_argument("--data", type=Path, required=True, help="the protocol's annotation file or dataset folder")
    p.add_argument("--image-root", type=Path, help="images folder (default: beside --data)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=0, help="only the first N images (POPE: questions per split)")
    p.add_argument("--split", default="val", help="open-vocab-seg: the panoptic split")
    p.add_argument("--classes", type=Path, help="open-vocab-seg: the released *_with_prompt_eng.txt synonyms")
    p.add_argument("--pope-splits", nargs="+", default=list(pope.SPLITS), choices=pope.SPLITS)
    p.add_argument("--judge-url", help="ferret-bench: an OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    p.add_argument("--judge-model", default="gpt-4")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="the environment variable holding the key")
    p.add_argument(
        "--references", type=Path, nargs="+", help="ferret-bench: reference answers (question_id, category, text)"
    )
    p.add_argument("--max-new-tokens", type=int, help="default: a per-protocol answer length")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the released scripts sample at 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--embed-device", default="cpu", help="where MiniLM runs")
    p.add_argument("--model-name", help="the name in the table's first column (default: the folder's name)")
    return p


def _dtype(name: str, device: str) -> torch.dtype:
    """auto: bf16 on a GPU, as the released model runs; fp32 on CPU, where bf16 matmuls are slow."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def run(argv: list[str] | None = None, predictor: OspreyPredictor | None = None) -> dict:
    """Parse, evaluate, write; ``predictor`` reuses a loaded model (several protocols in one process)."""
    args = parser().parse_args(argv)
    args.model_name = args.model_name or args.model.resolve().name
    if not args.data.exists():
        raise SystemExit(f"--data {args.data} does not exist")
    set_seed(args.seed)
    if predictor is None:
        dtype = _dtype(args.dtype, args.device)
        predictor = OspreyPredictor.from_pretrained(args.model, args.clip, device=args.device, dtype=dtype)
    generation = Generation(args.max_new_tokens or MAX_NEW_TOKENS[args.protocol], args.temperature)
    writer = ResultWriter(args.out)
    try:
        scores, table = PROTOCOLS[args.protocol](args, predictor, writer, generation)
    except BaseException:
        writer.close()
        raise
    meta = {"protocol": args.protocol, "model": str(args.model), "data": str(args.data), "limit": args.limit}
    meta |= {"generation": asdict(generation), "seed": args.seed}
    writer.finish({"run": meta, "scores": scores}, table)
    print(table)
    return scores


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(argv)


if __name__ == "__main__":
    main()
