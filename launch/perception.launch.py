"""Launch the osprey_perception node (real ROS 2 installs).

    ros2 launch osprey_ros perception.launch.py image_topic:=/camera/color/image_raw \
        masks_topic:=/segmentation/region_masks params_file:=/path/to/perception.yaml namespace:=robot1

Pip-only installs run the same thing with ``osprey-perception`` and the same ``name:=value`` arguments.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from osprey_ros.parameters import LAUNCH_ARGUMENTS, NODE_NAME

ARGS = {arg.name: arg for arg in LAUNCH_ARGUMENTS}


def generate_launch_description() -> LaunchDescription:
    image_topic = LaunchConfiguration("image_topic")
    default_params = PathJoinSubstitution([FindPackageShare("osprey_ros"), "config", "perception.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "image_topic", default_value=ARGS["image_topic"].default, description=ARGS["image_topic"].description
            ),
            DeclareLaunchArgument(
                "masks_topic", default_value=ARGS["masks_topic"].default, description=ARGS["masks_topic"].description
            ),
            DeclareLaunchArgument(
                "params_file", default_value=default_params, description=ARGS["params_file"].description
            ),
            DeclareLaunchArgument(
                "namespace", default_value=ARGS["namespace"].default, description=ARGS["namespace"].description
            ),
            Node(
                package="osprey_ros",
                executable="osprey_perception_node",
                name=NODE_NAME,
                namespace=LaunchConfiguration("namespace"),
                parameters=[LaunchConfiguration("params_file")],
                remappings=[
                    ("image", image_topic),
                    ("image/compressed", [image_topic, "/compressed"]),
                    ("region_masks", LaunchConfiguration("masks_topic")),
                ],
                output="screen",
                emulate_tty=True,
            ),
        ]
    )
