"""The benchmark script runs end to end (its timings are not checked here: speed lives in bench/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("run_bench", ROOT / "bench" / "run_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(
        ["--regions", "1", "3", "--repeats", "1", "--max-new-tokens", "2", "--out", str(tmp_path), "--name", "t"]
    )
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["regions"] for r in result["paths"]] == [1, 3]
    assert all(r["same_answers"] for r in result["paths"])
    assert result["encoders"]["torch"]["available"] and result["encoders"]["onnxruntime"]["available"]
    table = (tmp_path / "t.md").read_text()
    assert result["machine"] in table and "| 3 |" in table
