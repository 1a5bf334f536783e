"""The README's main job: the node on a tiny checkpoint, fed by the synthetic camera, printing descriptions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ros_harness import domain_id, ros_env


def test_demo_prints_descriptions(tiny_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "osprey_ros.demo", "--model", str(tiny_dir), "--frames", "2", "--max-new-tokens", "3"],
        env=ros_env(domain_id(23)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    frames = re.findall(r"^frame \d+ stamp [\d.]+ model \S+ \d+ ms$", result.stdout, flags=re.M)
    regions = re.findall(
        r"^  region \d+: '.*' \(truth: \w+ \w+\) box \d+,\d+ \d+x\d+ area \d+$", result.stdout, flags=re.M
    )
    assert len(frames) == 2 and len(regions) >= 2, result.stdout
    assert "described 2 frames" in result.stdout
