"""``osprey-perception``: the launch file's job for pip-only installs (PyPI has no ``launch``).

Takes the same ``name:=value`` arguments as ``launch/perception.launch.py`` (one table,
``parameters.LAUNCH_ARGUMENTS``) and the same params YAML, then runs the node; anything after
``--ros-args`` is passed to ROS unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .parameters import LAUNCH_ARGUMENTS, LAUNCH_DEFAULTS


def default_params_file() -> Path:
    """config/perception.yaml: from the ament index, pip's data files under sys.prefix, or the sources."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("osprey_ros")))
    except (ImportError, LookupError, OSError):  # OSError: AMENT_PREFIX_PATH unset (pip-only install)
        pass
    candidates += [Path(sys.prefix) / "share" / "osprey_ros", Path(__file__).resolve().parents[1]]
    for share in candidates:
        if (share / "config" / "perception.yaml").is_file():
            return share / "config" / "perception.yaml"
    raise FileNotFoundError("config/perception.yaml not found: pass params_file:=/path/to/perception.yaml")


def parse_launch_arguments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``name:=value`` launch arguments from pass-through ROS arguments."""
    values = dict(LAUNCH_DEFAULTS)
    ros_args: list[str] = []
    for i, token in enumerate(argv):
        if token == "--ros-args":
            ros_args = argv[i + 1 :]
            break
        name, sep, value = token.partition(":=")
        if not sep or name not in values:
            known = ", ".join(arg.name for arg in LAUNCH_ARGUMENTS)
            raise SystemExit(
                f"osprey-perception: unknown argument {token!r}; launch arguments are {known} (name:=value)"
            )
        values[name] = value
    return values, ros_args


def ros_arguments(values: dict[str, str], extra: list[str]) -> list[str]:
    """The ``--ros-args`` the launch file's Node action would produce."""
    params_file = values["params_file"] or str(default_params_file())
    image = values["image_topic"]
    args = ["--ros-args", "--params-file", params_file]
    args += ["-r", f"image:={image}", "-r", f"image/compressed:={image}/compressed"]
    args += ["-r", f"region_masks:={values['masks_topic']}"]
    if values["namespace"]:
        args += ["-r", f"__ns:={'/' + values['namespace'].lstrip('/')}"]
    return args + extra


def main(argv: list[str] | None = None) -> None:
    values, extra = parse_launch_arguments(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from .perception_node import main as run_node

    run_node(["osprey-perception", *ros_arguments(values, extra)])


if __name__ == "__main__":
    main()
