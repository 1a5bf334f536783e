"""Hundreds of regions per image: the replicated prefix cache (one copy of the ~1,100-token prefix's KV
per region) against the shared one (``decode="shared"``: the prefix's KV once, each region its suffix),
peak added memory and time per frame at 8, 64 and 300 regions, in one run, with the same answers.

    python bench/shared_prefix_bench.py                         # CPU, the "mid" preset, results in bench/results
    python bench/shared_prefix_bench.py --preset osprey-7b --device cuda --dtype bfloat16 --name shared-prefix-h200

"mid" is wide and deep enough to show it on a CPU (random weights): 1,024 image tokens (the released
count), an LLM 512 wide × 8 layers. The frame is encoded once beforehand: the figures are the language
model's (prefix prefill, region suffixes, 8 decoded tokens each).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import RESULTS, PeakMemory, add_model_arguments, build_predictor, frame, provenance, save_results

from osprey_model import config as osprey_config
from osprey_model.conversation import single_region_prompt


def mid_preset() -> osprey_config.OspreyConfig:
    tiny = osprey_config.get_preset("tiny")
    return dataclasses.replace(
        tiny,
        vision=dataclasses.replace(tiny.vision, image_size=512),  # res4 at stride 16: 32 × 32 = 1,024 tokens
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        max_length=2048,
    )


def prefix_tokens(predictor) -> int:
    """The shared prefix's length: prompt tokens before the first <mask>, the image placeholder expanded."""
    ids = predictor._checked_ids(single_region_prompt("short"), 1)
    mask_at = int((ids == predictor.model.region_token_ids[0]).nonzero()[0])
    return mask_at - 1 + predictor.image_token_count


def markdown(result: dict) -> str:
    lines = [
        f"# Shared-prefix decoding — {result['machine']}",
        "",
        f"{result['date']}; preset `{result['preset']}` (random weights), {result['device']} {result['dtype']}, "
        f"{result['prefix_tokens']}-token prefix, {result['max_new_tokens']} new tokens per region; peak memory "
        "the call adds (RSS on CPU, allocator peak on GPU); time per frame, the frame already encoded.",
        "",
        "| regions | replicated MB | shared MB | memory ratio | replicated s | shared s | speed-up | same answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        rep, sh = r["replicated"], r["shared"]
        if "error" in rep or "error" in sh:
            cells = [part.get("error") or f"{part['added_mb']:.0f}" for part in (rep, sh)]
            lines.append(f"| {r['regions']} | {cells[0]} | {cells[1]} | | | | | |")
            continue
        lines.append(
            f"| {r['regions']} | {rep['added_mb']:.0f} | {sh['added_mb']:.0f} | "
            f"{rep['added_mb'] / max(sh['added_mb'], 1):.1f}× | {rep['seconds']:.2f} | {sh['seconds']:.2f} | "
            f"{rep['seconds'] / sh['seconds']:.2f}× | {r['same_answers']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, preset="mid", regions=[8, 64, 300])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="shared-prefix-cpu")
    args = parser.parse_args(argv)
    if args.preset == "mid":
        osprey_config.PRESETS["mid"] = mid_preset
    predictor = build_predictor(args)
    device = predictor.model.device
    image, _ = frame(1, 0)
    encoded = predictor.encode(image)
    rows = []
    for count in args.regions:
        _, masks = frame(count, 0)
        row: dict = {"regions": count}
        answers = {}
        for mode, decode in (("shared", "shared"), ("replicated", "dynamic")):  # shared first: a clean heap
            predictor.decode = decode
            predictor.prefix_cache._entries.clear()  # each path prefills its own prefix (counted in its figure)
            try:
                with PeakMemory(device) as memory:
                    start = time.perf_counter()
                    answers[mode] = predictor.describe(encoded, masks, max_new_tokens=args.max_new_tokens)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - start
            except torch.OutOfMemoryError:  # the replicated cache at 7B and hundreds of regions
                row[mode] = {"added_mb": float("nan"), "seconds": float("nan"), "error": "out of memory"}
                print(f"{count} regions, {mode}: out of memory", flush=True)
                torch.cuda.empty_cache()
                continue
            row[mode] = {"added_mb": memory.added_mb, "seconds": seconds}
            print(f"{count} regions, {mode}: {memory.added_mb:.0f} MB, {seconds:.2f} s", flush=True)
        row["same_answers"] = answers["replicated"] == answers["shared"] if len(answers) == 2 else None
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result = {
        **provenance(),
        "preset": args.preset,
        "device": args.device,
        "dtype": args.dtype,
        "prefix_tokens": prefix_tokens(predictor),
        "max_new_tokens": args.max_new_tokens,
        "rows": rows,
    }
    save_results(result, markdown(result), args.out, args.name)
    return result


if __name__ == "__main__":
    main()
