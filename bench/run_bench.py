"""Per-frame latency of describing every region: one region per call (the released way) vs batched.

The baseline is the released evaluation flow: each region is one ``generate`` call that runs the vision
tower and reads the whole prompt again. The batched path encodes once, prefills the shared prefix once and
decodes all regions together.

One run measures, for each region count: p50 / p90 per-frame latency (encoder included) of both paths,
generated tokens per second, and the peak memory each path adds; and the encoder's time per backend. It
writes JSON and a markdown table named after the machine to bench/results/. Ratios are taken within the
run, on the same machine.

    python bench/run_bench.py                                  # CPU, tiny preset
    python bench/run_bench.py --preset osprey-7b --device cuda --dtype bfloat16   # GPU, random 7B weights
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from osprey_model import OspreyForCausalLM, OspreyPredictor, get_preset
from osprey_model.embedded import parse_dtype
from osprey_model.encoders import BACKENDS, BackendUnavailable, ImageEncoderModule, create_encoder
from osprey_model.precision import keep_rotary_in_float32
from osprey_model.shapes import random_shapes, render
from osprey_model.tiny import llama2_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return f"{model}, {torch.get_num_threads()} threads"


def provenance() -> dict[str, str]:
    """The first fields of every bench result: where and when it was measured."""
    return {"machine": machine(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def add_model_arguments(parser: argparse.ArgumentParser, preset: str, regions: list[int]) -> None:
    """The model a bench builds (``build_predictor``) and the region counts it asks."""
    parser.add_argument("--preset", default=preset)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--regions", type=int, nargs="+", default=regions)
    parser.add_argument("--max-new-tokens", type=int, default=8)


def save_results(result: dict, table: str, out: Path, name: str) -> None:
    """``out/name.json`` (every figure) and ``out/name.md`` (the table, also printed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table)
    print(table)


class PeakMemory:
    """Peak memory a block adds: CUDA allocator peak on GPU, sampled resident set size on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self.peak = _rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.added_mb = (torch.cuda.max_memory_allocated() - self.start) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.added_mb = (max(self.peak, _rss()) - self.start) / 2**20


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def build_predictor(args: argparse.Namespace) -> OspreyPredictor:
    torch.manual_seed(0)
    config = get_preset(args.preset)
    device, dtype = torch.device(args.device), parse_dtype(args.dtype)
    with torch.device("meta"):
        model = OspreyForCausalLM(config)
    model.to_empty(device=device)
    keep_rotary_in_float32(model.language_model, model.language_model.config)
    with torch.no_grad():  # random weights at a sane scale; LayerNorm / RMSNorm weights at 1
        for name, param in model.named_parameters():
            if (name.endswith("weight") and param.dim() == 1) or "gamma" in name:
                param.fill_(1.0)
            elif name.endswith("bias") or param.dim() == 1:
                param.zero_()
            else:
                param.normal_(0.0, 0.02)
    return OspreyPredictor(model.to(dtype).eval(), llama2_tokenizer())


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def frame(count: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    image, _ = render(random_shapes(rng, 640, 480, 4), 640, 480, rng)
    masks = []
    for i in range(count):  # distinct, overlapping boxes: every region non-empty
        mask = np.zeros((480, 640), bool)
        y, x = 40 + (i * 53) % 360, 30 + (i * 97) % 520
        mask[y : y + 80, x : x + 90] = True
        masks.append(mask)
    return image, masks


def bench_paths(predictor: OspreyPredictor, args: argparse.Namespace) -> list[dict]:
    device = predictor.model.device
    rows = []
    for count in args.regions:
        image, masks = frame(count, count)
        row = {"regions": count}
        for path, batched in (("baseline", False), ("batched", True)):
            answers: list[str] = []

            def run(batched=batched, answers=answers, image=image, masks=masks) -> None:
                if batched:  # encode once, shared prefix once, all regions in one batch
                    encoded = predictor.encode(image)
                    answers[:] = predictor.describe(encoded, masks, max_new_tokens=args.max_new_tokens)
                elif args.baseline == "encode-once":  # one region per call, but the image encoded once
                    encoded = predictor.encode(image)
                    answers[:] = predictor.describe(encoded, masks, max_new_tokens=args.max_new_tokens, batched=False)
                else:  # the released flow: every region a full call that encodes the image and reads the prompt
                    answers[:] = [
                        predictor.describe(
                            predictor.encode(image), [m], max_new_tokens=args.max_new_tokens, batched=False
                        )[0]
                        for m in masks
                    ]

            predictor.prefix_cache._entries.clear()  # every frame is a new frame: no prefix reuse across repeats
            run()  # warm-up
            times = []
            with PeakMemory(device) as memory:
                for _ in range(args.repeats):
                    predictor.prefix_cache._entries.clear()
                    times.append(timed(run, device))
            tokens = sum(len(predictor.tokenizer(a, add_special_tokens=False).input_ids) + 1 for a in answers)
            row[path] = {
                "p50_ms": 1000 * statistics.median(times),
                "p90_ms": 1000 * float(np.percentile(times, 90)),
                "tokens_per_s": tokens / statistics.median(times),
                "peak_memory_added_mb": memory.added_mb,
            }
            row[f"{path}_answers"] = answers
        row["same_answers"] = row["baseline_answers"] == row["batched_answers"]
        row["speedup_p50"] = row["baseline"]["p50_ms"] / row["batched"]["p50_ms"]
        rows.append(row)
        base, fast = row["baseline"]["p50_ms"], row["batched"]["p50_ms"]
        print(f"{count:>3} regions: baseline {base:.1f} ms, batched {fast:.1f} ms, x{row['speedup_p50']:.2f}, "
              f"same answers: {row['same_answers']}", flush=True)  # fmt: skip
    return rows


def bench_backends(module: ImageEncoderModule, device: torch.device, repeats: int, cache: Path) -> dict[str, dict]:
    """p50 of every encoder backend on one image; an unavailable backend (or one that fell back) says why."""
    pixels = torch.randn(1, 3, module.input_size, module.input_size, device=device)
    out: dict[str, dict] = {}
    for name in BACKENDS:
        try:
            encoder = create_encoder(name, module, cache_dir=cache)
        except (BackendUnavailable, RuntimeError, ImportError) as exc:
            out[name] = {"available": False, "why": str(exc)}
            continue
        if encoder.name != name:
            out[name] = {"available": False, "why": f"fell back to {encoder.name}"}
            continue
        for _ in range(3):
            encoder(pixels)
        times = [timed(lambda encoder=encoder: encoder(pixels), device) for _ in range(repeats)]
        out[name] = {"available": True, "p50_ms": 1000 * statistics.median(times)}
        print(f"{module.graph_name} encoder {name}: {out[name]['p50_ms']:.2f} ms", flush=True)
    return out


def bench_encoders(predictor: OspreyPredictor, args: argparse.Namespace, cache: Path) -> dict[str, dict]:
    return bench_backends(predictor.model.vision_tower, predictor.model.device, 2 * args.repeats, cache)


def markdown(result: dict) -> str:
    lines = [
        f"# Osprey region-description benchmark — {result['machine']}",
        "",
        f"{result['date']}; preset `{result['preset']}`, {result['device']} {result['dtype']}, "
        f"torch {result['torch']}; batched decode `{result['decode']}`; encoder `{result['encoder']}` for both paths; "
        f"{result['max_new_tokens']} new tokens at most per region, {result['repeats']} repeats; "
        "per-frame latency includes the encoder; "
        + (
            "the baseline re-encodes the image for every region, as the released evaluation code does."
            if result["baseline"] == "released"
            else "the baseline encodes the image once per frame and asks one region per call."
        ),
        "",
        "| regions | baseline p50 / p90 ms | batched p50 / p90 ms | speed-up (p50) | tokens/s baseline → batched | "
        "peak memory added baseline / batched MB | same answers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["paths"]:
        b, f = r["baseline"], r["batched"]
        lines.append(
            f"| {r['regions']} | {b['p50_ms']:.1f} / {b['p90_ms']:.1f} | {f['p50_ms']:.1f} / {f['p90_ms']:.1f} | "
            f"{r['speedup_p50']:.2f}× | {b['tokens_per_s']:.0f} → {f['tokens_per_s']:.0f} | "
            f"{b['peak_memory_added_mb']:.0f} / {f['peak_memory_added_mb']:.0f} | {r['same_answers']} |"
        )
    lines += ["", "| encoder backend | p50 ms |", "|---|---|"]
    for name, e in result["encoders"].items():
        lines.append(f"| {name} | {e['p50_ms']:.2f} |" if e["available"] else f"| {name} | n/a ({e['why']}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, preset="tiny", regions=[1, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="", help="file name stem (default: preset and device)")
    parser.add_argument("--decode", default="shared", choices=("shared", "dynamic", "static", "static-compiled"))
    parser.add_argument("--encoder", default="torch", choices=BACKENDS, help="encoder used by both paths")
    parser.add_argument(
        "--baseline", default="released", choices=("released", "encode-once"),
        help="released: every region re-encodes the image (the released code); encode-once: it does not",
    )  # fmt: skip
    args = parser.parse_args(argv)
    predictor = build_predictor(args)
    predictor.decode = args.decode
    predictor.encoder = create_encoder(
        args.encoder, predictor.model.vision_tower, cache_dir=args.out / ".encoder-cache"
    )
    result = {
        **provenance(),
        "preset": args.preset,
        "device": args.device,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "max_new_tokens": args.max_new_tokens,
        "decode": args.decode,
        "baseline": args.baseline,
        "encoder": predictor.encoder.name,
        "repeats": args.repeats,
        "paths": bench_paths(predictor, args),
        "encoders": bench_encoders(predictor, args, args.out / ".encoder-cache"),
    }
    save_results(result, markdown(result), args.out, args.name or f"{args.preset}-{args.device}")
    return result


if __name__ == "__main__":
    main()
