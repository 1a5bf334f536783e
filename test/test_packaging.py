"""package.xml declares every ROS package the node imports, so colcon orders and rosdep installs them."""

from __future__ import annotations

import ast
import importlib.metadata
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_ROS_PACKAGES = {"osprey_interfaces"}  # built from this repository (colcon, or pip ./osprey_interfaces)
LAUNCH_PACKAGES = {"launch", "launch_ros"}  # not on PyPI; only the launch file imports them


def imported_top_level(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def ros_packages(names: set[str]) -> set[str]:
    """The imported names that are ROS packages: shipped as ros-* wheels here, built locally, or launch."""
    distributions = importlib.metadata.packages_distributions()
    return {
        name
        for name in names
        if name in LOCAL_ROS_PACKAGES
        or name in LAUNCH_PACKAGES
        or any(dist.startswith("ros-") for dist in distributions.get(name, []))
    }


def declared_dependencies() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {element.text.strip() for tag in ("depend", "exec_depend") for element in root.iter(tag) if element.text}


def test_package_xml_declares_every_imported_ros_package() -> None:
    sources = sorted((ROOT / "osprey_ros").glob("*.py")) + sorted((ROOT / "launch").glob("*.py"))
    needed = ros_packages(imported_top_level(sources))
    assert {"rclpy", "sensor_msgs", "osprey_interfaces"} <= needed  # the scan itself works
    missing = needed - declared_dependencies()
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"
