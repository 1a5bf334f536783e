"""One table of defaults: the launch file, the pip launcher, the params YAML and the node agree."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import rclpy
import yaml
from ros_harness import domain_id

from osprey_ros.launcher import (
    DDS_PROFILE_VARIABLE,
    parse_launch_arguments,
    resolve_params_file,
    ros_arguments,
    use_large_data_profile,
)
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
LAUNCH_DEFAULTS_DESCRIPTIONS = {arg.name: arg.description for arg in LAUNCH_ARGUMENTS}


def _launch_calls(name: str) -> list[ast.Call]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_launch_file_declares_the_table_arguments() -> None:
    (declare,) = _launch_calls("DeclareLaunchArgument")
    assert [ast.unparse(a) for a in declare.args] == ["arg.name"]  # one per LAUNCH_ARGUMENTS entry
    assert "for arg in LAUNCH_ARGUMENTS" in LAUNCH_FILE.read_text()
    (node,) = _launch_calls("LifecycleNode")
    keywords = {kw.arg: kw.value for kw in node.keywords}
    assert ast.literal_eval(keywords["package"]) == "osprey_ros"
    assert ast.literal_eval(keywords["executable"]) == "osprey_perception_node"
    assert ast.unparse(keywords["name"]) == "NODE_NAME"
    remapped = [ast.literal_eval(pair.elts[0]) for pair in keywords["remappings"].elts]
    assert remapped == ["image", "image/compressed", "region_masks", "depth", "camera_info"]
    setup = (ROOT / "setup.py").read_text()
    assert "osprey_perception_node = osprey_ros.perception_node:main" in setup


def test_an_empty_params_file_means_the_default_in_both_launchers() -> None:
    """`params_file:=` (empty) was refused by ros2 launch although its description says empty = default."""
    assert "empty = the package's config/perception.yaml" in LAUNCH_DEFAULTS_DESCRIPTIONS["params_file"]
    assert resolve_params_file("").endswith("config/perception.yaml")
    assert resolve_params_file("mine.yaml") == "mine.yaml"
    assert len(_launch_calls("resolve_params_file")) == 1  # the launch file resolves it the same way
    values, _ = parse_launch_arguments(["params_file:="])
    assert ros_arguments(values, [])[2] == resolve_params_file("")


def test_the_large_data_dds_profile_is_used_unless_the_user_has_one() -> None:
    environ: dict[str, str] = {}
    shipped = use_large_data_profile(environ)
    assert shipped.endswith("config/fastdds_large_data.xml") and environ[DDS_PROFILE_VARIABLE] == shipped
    assert "<segment_size>33554432</segment_size>" in Path(shipped).read_text()
    mine = {DDS_PROFILE_VARIABLE: "/etc/robot/dds.xml"}
    assert use_large_data_profile(mine) == "/etc/robot/dds.xml" and mine == {DDS_PROFILE_VARIABLE: "/etc/robot/dds.xml"}
    legacy = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/robot/old.xml"}
    assert use_large_data_profile(legacy) == "/etc/robot/old.xml" and DDS_PROFILE_VARIABLE not in legacy
    assert _launch_calls("use_large_data_profile")


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not on PyPI")
def test_launch_file_imports_where_launch_is_installed() -> None:
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [entity.name for entity in module.generate_launch_description().entities if hasattr(entity, "name")]
    # The node itself comes from an OpaqueFunction (it resolves an empty params_file), so only arguments here.
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
        "mask_source": "",
        "depth_topic": "/camera/aligned_depth_to_color/image_raw",
        "camera_info_topic": "/camera/color/camera_info",
    }
    args = ros_arguments(values, extra)
    assert args[:3] == ["--ros-args", "--params-file", "p.yaml"]
    assert "image:=/a/image" in args and "region_masks:=/a/masks" in args and "__ns:=/robot1" in args
    assert args[-2:] == ["-p", "x:=1"]
    defaults, _ = parse_launch_arguments([])
    assert ros_arguments(defaults, [])[2].endswith("config/perception.yaml")
    with pytest.raises(SystemExit, match="unknown argument 'camera:=/x'"):
        parse_launch_arguments(["camera:=/x"])
    assert "-p" not in ros_arguments(defaults, [])  # empty mask_source: the params file decides
    everything, _ = parse_launch_arguments(["mask_source:=everything"])
    assert ros_arguments(everything, [])[-2:] == ["-p", "mask_source:=everything"]
    assert 'parameters=[params_file, *([{"mask_source": mask_source}] if mask_source else [])]' in (
        LAUNCH_FILE.read_text()
    )


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
