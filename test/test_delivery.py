"""Camera-size frames reach the node with its shipped defaults (bench/dds_delivery.py measures the same).

640x480 and 1280x720 rgb8 at 15 Hz with 8 masks, from a reliable and from a best-effort publisher, the
camera using the shipped Fast DDS profile as the README asks of a camera driver: at least 90 % of images
and mask sets received, and no mask set dropped for lack of its image.

The node subscribes best effort (its shipped qos_reliability), so a reliable publisher's samples travel best
effort too, and either may lose a few when the node's executor falls behind its KEEP_LAST 5 queue while the
model runs on a 2-core CI machine: one received 97 of 100 720p mask sets from a best-effort publisher,
another 94 of 100 from a reliable one (the same run: 100 of 100 in the other three cases). Fast DDS's own
defaults deliver 9-28 % (bench/results/dds-delivery-cpu.md), so 90 % still tells the shipped profile from
them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ros_harness import domain_id

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 100
SHARE_RECEIVED = 0.9


def load_bench():
    spec = importlib.util.spec_from_file_location("dds_delivery", ROOT / "bench" / "dds_delivery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_size_frames_reach_the_node_on_shipped_defaults(tmp_path: Path) -> None:
    bench = load_bench()
    cases = bench.measure(bench.shipped_profile(), domain_id(51), FRAMES, 15.0, tmp_path, parameters={})
    for case in cases:
        print(case)
    assert [(c["width"], c["height"], c["publisher"]) for c in cases] == bench.CASES
    for case in cases:
        where = f"{case['width']}x{case['height']} from a {case['publisher']} publisher"
        least = SHARE_RECEIVED * FRAMES
        assert case["images_received"] >= least, f"{where}: {case}"
        assert case["mask_sets_received"] >= least, f"{where}: {case}"
        assert case["mask_sets_unmatched"] == 0, f"{where}: {case}"
        assert case["frames_described"] > 0, f"{where}: {case}"
