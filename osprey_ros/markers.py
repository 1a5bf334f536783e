"""RViz markers for the described regions: a box of each region's extent at its 3D position, and its label.

One MarkerArray per frame that starts with DELETEALL, so regions that left the view vanish from RViz
instead of lingering; marker ids are the region ids (box: 2·id, text: 2·id + 1).
"""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from .overlay import PALETTE

NAMESPACE = "osprey_regions"
MIN_SIZE = 0.02  # metres: a flat or tiny region still shows as a visible box
TEXT_HEIGHT = 0.06


def region_markers(header: Header, regions: list[tuple[int, str, Point, Vector3]]) -> MarkerArray:
    """``regions``: (id, label, position, extent) of each region that has a position."""
    markers = [Marker(header=header, ns=NAMESPACE, action=Marker.DELETEALL)]
    lifetime = Duration(sec=5)  # a node that stops publishing does not leave boxes behind forever
    for region_id, label, position, extent in regions:
        r, g, b = (float(c) / 255 for c in PALETTE[region_id % len(PALETTE)])
        pose = Pose(position=position, orientation=Quaternion(w=1.0))
        size = Vector3(x=max(extent.x, MIN_SIZE), y=max(extent.y, MIN_SIZE), z=max(extent.z, MIN_SIZE))
        markers.append(
            Marker(
                header=header, ns=NAMESPACE, id=2 * region_id, type=Marker.CUBE, action=Marker.ADD, pose=pose,
                scale=size, color=ColorRGBA(r=r, g=g, b=b, a=0.5), lifetime=lifetime,
            )
        )  # fmt: skip
        above = Point(x=position.x, y=position.y - size.y / 2 - TEXT_HEIGHT, z=position.z)  # optical y is down
        markers.append(
            Marker(
                header=header, ns=NAMESPACE, id=2 * region_id + 1, type=Marker.TEXT_VIEW_FACING,
                action=Marker.ADD, pose=Pose(position=above, orientation=Quaternion(w=1.0)),
                scale=Vector3(z=TEXT_HEIGHT), color=ColorRGBA(r=r, g=g, b=b, a=1.0), text=f"{region_id}: {label}",
                lifetime=lifetime,
            )
        )  # fmt: skip
    return MarkerArray(markers=markers)
