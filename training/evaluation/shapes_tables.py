"""Regenerate ``training/evaluation/results/``: every protocol on the shapes world's datasets, one command.

    python -m training.evaluation.shapes_tables --model osprey_model/checkpoints/tiny-shapes

Writes the datasets (``shapes_datasets``) into ``--work``, runs each protocol through the same entry point
a user runs (``training.evaluate``), with one model loaded once, and puts each run's ``table.md``,
``scores.json`` and ``answers.jsonl`` under ``--out/<run>/`` (the runs' other outputs, such as the panoptic
prediction PNGs, stay in ``--work``) and every table in ``--out/README.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from osprey_model import OspreyPredictor

from .. import evaluate, shapes_world
from .shapes_datasets import write_all

RESULTS = Path(__file__).parent / "results"


def runs(data: Path) -> dict[str, list[str]]:
    """Run name → the protocol's arguments (beside --model and --out)."""
    return {
        "open-vocab-ade20k": ["--protocol", "open-vocab-seg", "--data", str(data / "ade20k")],
        "open-vocab-cityscapes": ["--protocol", "open-vocab-seg", "--data", str(data / "cityscapes")],
        "referring-classification-lvis": [
            "--protocol", "referring-classification", "--data", str(data / "lvis" / "shapes_lvis_val_category.json"),
            "--image-root", str(data / "lvis" / "images"),
        ],
        "referring-classification-paco": [
            "--protocol", "referring-classification", "--data", str(data / "paco" / "shapes_paco_val_category.json"),
            "--image-root", str(data / "paco" / "images"),
        ],
        "region-captioning-refcocog": [
            "--protocol", "region-captioning",
            "--data", str(data / "refcocog" / "finetune_refcocog_val_with_mask.json"),
            "--image-root", str(data / "refcocog" / "images"),
        ],
        "pope": ["--protocol", "pope", "--data", str(data / "pope"), "--image-root", str(data / "pope" / "images")],
        "ferret-bench": [
            "--protocol", "ferret-bench", "--data", str(data / "ferret_bench"),
            "--image-root", str(data / "ferret_bench" / "images"),
        ],
        "shapes-mask-vs-box": [
            "--protocol", "shapes-mask-vs-box", "--data", str(data / "held_out" / "osprey_shapes_short_form.json"),
            "--image-root", str(data / "held_out" / "images"),
        ],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("osprey_model/checkpoints/tiny-shapes"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path(".cache/eval-shapes"))
    parser.add_argument("--images", type=int, default=50, help="images per dataset")
    parser.add_argument("--only", nargs="+", help="run only these (names as in the results folder)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    marker = args.work / ".shapes-tables-work"
    if args.work.exists() and any(args.work.iterdir()) and not marker.is_file():
        raise SystemExit(f"--work {args.work} holds files this command did not write: give an empty or new folder")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    marker.touch()  # a later run may clear this folder
    write_all(args.work, args.images)
    shapes_world.generate(args.work / "held_out", args.images, seed=10_000, overlap=0.85)  # the card's scenes
    predictor = OspreyPredictor.from_pretrained(args.model)
    tables, seconds = {}, {}
    for name, protocol_args in runs(args.work).items():
        if args.only and name not in args.only:
            continue
        start = time.monotonic()
        run_dir = args.work / "runs" / name
        evaluate.run([*protocol_args, "--model", str(args.model), "--out", str(run_dir)], predictor=predictor)
        seconds[name] = time.monotonic() - start
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for kept in ("table.md", "scores.json", "answers.jsonl", "item_scores.jsonl"):  # not the panoptic PNGs
            if (run_dir / kept).is_file():
                shutil.copy(run_dir / kept, out / kept)
        tables[name] = (out / "table.md").read_text()
    command = "python -m training.evaluation.shapes_tables " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in runs(args.work):  # with --only, the other runs' tables stay as they were
        if name not in tables and (args.out / name / "table.md").is_file():
            tables[name] = (args.out / name / "table.md").read_text()
    sections = "\n".join(
        f"## {name}" + (f" ({seconds[name]:.0f} s)" if name in seconds else "") + f"\n\n{table}"
        for name, table in tables.items()
    )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    (args.out / "README.md").write_text(f"""# Every evaluation protocol on the shapes world

Model `{args.model}`, {args.images} images per dataset. `training/evaluation/shapes_datasets.py` writes
them in each benchmark's own format and the protocols read them with the loaders they use for real data.
Greedy answers. Regenerate with:

```bash
{command.strip()}
```

{(time.monotonic() - started) / 60:.1f} minutes on {machine}. Each folder holds the run's `answers.jsonl`
(every question, answer and per-item score), `scores.json` and `table.md`. The paper's rows are Osprey-7B
on the real data: they show the layout, not a comparison.

What the tiny model was taught decides what it can score here:
- it was never asked about a whole image, so on POPE it describes a shape instead of answering yes or no,
  which the released parser reads as "yes" (accuracy 50 %, yes-ratio 100 %);
- "What is in <region>?" is a phrasing it never saw; it answers with a colour and a shape anyway, and
  the panoptic masks are perfect, so PQ, AP and mIoU measure only whether the shape's name is right;
- asked for a category it gives the shape alone, so on the PACO-format file, whose names are
  "shape:colour", S-IoU is at most one half.

The box-prompt baseline trained as the paper did is compared in its own card,
`osprey_model/checkpoints/tiny-shapes-box/README.md`.

{sections}
""")
    print(f"tables in {args.out}")


if __name__ == "__main__":
    main()
