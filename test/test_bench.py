"""The benchmark script runs end to end (its timings are not checked here: speed lives in bench/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    module = load_bench("run_bench")
    module.main(
        ["--regions", "1", "3", "--repeats", "1", "--max-new-tokens", "2", "--out", str(tmp_path), "--name", "t"]
    )
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["regions"] for r in result["paths"]] == [1, 3]
    assert all(r["same_answers"] for r in result["paths"])
    assert result["encoders"]["torch"]["available"] and result["encoders"]["onnxruntime"]["available"]
    table = (tmp_path / "t.md").read_text()
    assert result["machine"] in table and "| 3 |" in table


def test_sam_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    module = load_bench("sam_bench")
    module.main(["--presets", "tiny", "--repeats", "1", "--points-per-side", "4", "--out", str(tmp_path), "--name=s"])
    result = json.loads((tmp_path / "s.json").read_text())
    tiny = result["presets"]["tiny"]
    assert tiny["encoders"]["torch"]["available"] and tiny["encoders"]["onnxruntime"]["available"]
    assert set(tiny["prompts"]) == {"one_click_ms", "one_box_ms", "sixteen_clicks_ms"}
    assert tiny["everything"]["ours_ms"] > 0 and tiny["everything"]["segment_anything_ms"] > 0
    assert tiny["frame"]["frame_ms"] > 0
    assert result["machine"] in (tmp_path / "s.md").read_text()


def test_reuse_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    module = load_bench("reuse_bench")
    module.main(["--frames", "4", "--speeds", "0.1", "--max-new-tokens", "2", "--out", str(tmp_path), "--name=r"])
    result = json.loads((tmp_path / "r.json").read_text())
    on, off = result["runs"]["0.1"]["on"], result["runs"]["0.1"]["off"]
    assert on["regions"] == off["regions"] > 0  # the same frames, every region delivered either way
    assert off["reused"] == 0 and on["reused"] > 0 and on["described"] < off["described"]
    assert result["machine"] in (tmp_path / "r.md").read_text()


def test_bag_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    module = load_bench("bag_bench")
    module.main(["--frames", "3", "--shapes", "2", "--max-new-tokens", "2", "--out", str(tmp_path), "--name=b"])
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["runs"]["on"]["frames"] == result["runs"]["off"]["frames"] == 3
    assert result["runs"]["off"]["reused"] == 0
    assert result["machine"] in (tmp_path / "b.md").read_text()


def test_shared_prefix_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    module = load_bench("shared_prefix_bench")
    module.main(
        ["--preset", "tiny", "--regions", "2", "5", "--max-new-tokens", "2", "--out", str(tmp_path), "--name=p"]
    )
    result = json.loads((tmp_path / "p.json").read_text())
    assert [r["regions"] for r in result["rows"]] == [2, 5] and all(r["same_answers"] for r in result["rows"])
    assert result["prefix_tokens"] > 64  # the image's tokens and the prompt before <mask>
    assert result["machine"] in (tmp_path / "p.md").read_text()
