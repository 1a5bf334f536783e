"""``osprey-perception``: the launch file's job for pip-only installs (PyPI has no ``launch``).

Takes the same ``name:=value`` arguments as ``launch/perception.launch.py`` (one table,
``parameters.LAUNCH_ARGUMENTS``) and the same params YAML, then runs the node; anything after
``--ros-args`` is passed to ROS unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from .parameters import LAUNCH_ARGUMENTS, LAUNCH_DEFAULTS


def share_file(relative: str) -> Path:
    """A file of the package's share folder: from the ament index, pip's data files under sys.prefix, or the
    sources."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("osprey_ros")))
    except (ImportError, LookupError, OSError):  # OSError: AMENT_PREFIX_PATH unset (pip-only install)
        pass
    candidates += [Path(sys.prefix) / "share" / "osprey_ros", Path(__file__).resolve().parents[1]]
    for share in candidates:
        if (share / relative).is_file():
            return share / relative
    raise FileNotFoundError(f"{relative} not found in the osprey_ros share folder ({', '.join(map(str, candidates))})")


def default_params_file() -> Path:
    try:
        return share_file("config/perception.yaml")
    except FileNotFoundError:
        raise FileNotFoundError(
            "config/perception.yaml not found: pass params_file:=/path/to/perception.yaml"
        ) from None


def resolve_params_file(value: str) -> str:
    """``params_file``: empty means the package's config/perception.yaml (the launch file says the same)."""
    return value or str(default_params_file())


DDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def use_large_data_profile(environ: MutableMapping[str, str] = os.environ) -> str:
    """Point Fast DDS at the shipped large-data profile unless the user chose a profile; returns the one in use.

    Must run before the process's first DDS participant exists (rclpy.init does not create it; the first
    node does).
    """
    if not environ.get(DDS_PROFILE_VARIABLE) and not environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        environ[DDS_PROFILE_VARIABLE] = str(share_file("config/fastdds_large_data.xml"))
    return environ.get(DDS_PROFILE_VARIABLE) or environ["FASTRTPS_DEFAULT_PROFILES_FILE"]


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
    params_file = resolve_params_file(values["params_file"])
    image = values["image_topic"]
    args = ["--ros-args", "--params-file", params_file]
    args += ["-r", f"image:={image}", "-r", f"image/compressed:={image}/compressed"]
    args += ["-r", f"region_masks:={values['masks_topic']}"]
    args += ["-r", f"depth:={values['depth_topic']}", "-r", f"camera_info:={values['camera_info_topic']}"]
    if values["namespace"]:
        args += ["-r", f"__ns:={'/' + values['namespace'].lstrip('/')}"]
    if values["mask_source"]:
        args += ["-p", f"mask_source:={values['mask_source']}"]
    return args + extra


def main(argv: list[str] | None = None) -> None:
    values, extra = parse_launch_arguments(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    use_large_data_profile()
    from .perception_node import main as run_node

    run_node(["osprey-perception", *ros_arguments(values, extra)])


if __name__ == "__main__":
    main()
