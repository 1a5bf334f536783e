"""ROS 2 side of osprey_ros: message conversion, synchronisation, and the perception node."""
