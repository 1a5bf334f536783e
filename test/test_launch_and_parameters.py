"""One table of defaults: the launch file, the pip launcher, the params YAML and the node agree."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import rclpy
import yaml
from ros_harness import domain_id

from osprey_ros.launcher import parse_launch_arguments, ros_arguments
from osprey_ros.parameters import (
    LAUNCH_ARGUMENTS,
    NODE_NAME,
    NODE_PARAMETERS,
    RUNTIME_PARAMETERS,
    NodeSettings,
    declare_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "perception.launch.py"


def _launch_calls(name: str) -> list[ast.Call]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_launch_file_declares_the_table_arguments() -> None:
    declared = [call.args[0].value for call in _launch_calls("DeclareLaunchArgument")]
    assert declared == [arg.name for arg in LAUNCH_ARGUMENTS]
    (node,) = _launch_calls("Node")
    keywords = {kw.arg: kw.value for kw in node.keywords}
    assert ast.literal_eval(keywords["package"]) == "osprey_ros"
    assert ast.literal_eval(keywords["executable"]) == "osprey_perception_node"
    assert ast.unparse(keywords["name"]) == "NODE_NAME"
    remapped = [ast.literal_eval(pair.elts[0]) for pair in keywords["remappings"].elts]
    assert remapped == ["image", "image/compressed", "region_masks"]
    setup = (ROOT / "setup.py").read_text()
    assert "osprey_perception_node = osprey_ros.perception_node:main" in setup


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not on PyPI")
def test_launch_file_imports_where_launch_is_installed() -> None:
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [entity.name for entity in module.generate_launch_description().entities if hasattr(entity, "name")]
    assert names[: len(LAUNCH_ARGUMENTS)] == [arg.name for arg in LAUNCH_ARGUMENTS]


def test_pip_launcher_takes_the_same_arguments(tmp_path: Path) -> None:
    values, extra = parse_launch_arguments(
        [
            "image_topic:=/a/image",
            "masks_topic:=/a/masks",
            "namespace:=robot1",
            "params_file:=p.yaml",
            "--ros-args",
            "-p",
            "x:=1",
        ]
    )
    assert values == {
        "image_topic": "/a/image",
        "masks_topic": "/a/masks",
        "namespace": "robot1",
        "params_file": "p.yaml",
    }
    args = ros_arguments(values, extra)
    assert args[:3] == ["--ros-args", "--params-file", "p.yaml"]
    assert "image:=/a/image" in args and "region_masks:=/a/masks" in args and "__ns:=/robot1" in args
    assert args[-2:] == ["-p", "x:=1"]
    defaults, _ = parse_launch_arguments([])
    assert ros_arguments(defaults, [])[2].endswith("config/perception.yaml")
    with pytest.raises(SystemExit, match="unknown argument 'camera:=/x'"):
        parse_launch_arguments(["camera:=/x"])


def test_params_yaml_has_the_table_defaults() -> None:
    data = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    params = data[f"/**/{NODE_NAME}"]["ros__parameters"]
    assert params == {spec.name: spec.default for spec in NODE_PARAMETERS}


def test_node_declares_every_parameter_with_a_descriptor() -> None:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id(31))
    try:
        node = rclpy.node.Node(NODE_NAME, context=context)
        settings = declare_parameters(node)
        assert settings == NodeSettings(**{spec.name: spec.default for spec in NODE_PARAMETERS})
        for spec in NODE_PARAMETERS:
            descriptor = node.describe_parameter(spec.name)
            # Not read-only: the node's own callback refuses configure-time parameters with a reason.
            assert descriptor.description and not descriptor.read_only
            assert ("Read on configure." in descriptor.description) == (spec.name not in RUNTIME_PARAMETERS)
        assert node.describe_parameter("max_regions").integer_range[0].from_value == 1
        node.destroy_node()

        bad = rclpy.node.Node(
            NODE_NAME, context=context, parameter_overrides=[rclpy.parameter.Parameter("prompt_mode", value="poem")]
        )
        with pytest.raises(ValueError, match="prompt_mode='poem'"):
            declare_parameters(bad)
        bad.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
