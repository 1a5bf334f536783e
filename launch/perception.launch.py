"""Launch the osprey_perception node (real ROS 2 installs).

    ros2 launch osprey_ros perception.launch.py image_topic:=/camera/color/image_raw \
        masks_topic:=/segmentation/region_masks params_file:=/path/to/perception.yaml namespace:=robot1
    ros2 launch osprey_ros perception.launch.py mask_source:=everything   # SAM finds the regions

Pip-only installs run the same thing with ``osprey-perception`` and the same ``name:=value`` arguments.
The node is a lifecycle node; its ``autostart`` parameter (default true) brings it to active by itself,
so a lifecycle manager is optional. Fast DDS gets the package's large-data profile unless
FASTDDS_DEFAULT_PROFILES_FILE is already set.
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchContext, LaunchDescription
from osprey_ros.launcher import DDS_PROFILE_VARIABLE, resolve_params_file, use_large_data_profile
from osprey_ros.parameters import LAUNCH_ARGUMENTS, NODE_NAME


def _node(context: LaunchContext) -> list[LifecycleNode]:
    # Empty means the package's defaults, as the argument's description says (and as osprey-perception does).
    params_file = resolve_params_file(LaunchConfiguration("params_file").perform(context))
    image_topic = LaunchConfiguration("image_topic").perform(context)
    mask_source = LaunchConfiguration("mask_source").perform(context)  # empty: the params file's value
    profile = use_large_data_profile(dict(os.environ))  # the user's profile if set, else the shipped one
    return [
        LifecycleNode(
            package="osprey_ros",
            executable="osprey_perception_node",
            name=NODE_NAME,
            namespace=LaunchConfiguration("namespace").perform(context),
            parameters=[params_file, *([{"mask_source": mask_source}] if mask_source else [])],
            remappings=[
                ("image", image_topic),
                ("image/compressed", image_topic + "/compressed"),
                ("region_masks", LaunchConfiguration("masks_topic").perform(context)),
                ("depth", LaunchConfiguration("depth_topic").perform(context)),
                ("camera_info", LaunchConfiguration("camera_info_topic").perform(context)),
            ],
            additional_env={DDS_PROFILE_VARIABLE: profile},
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description)
        for arg in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
