"""What the node publishes for a described frame, built in one place for the node and ``osprey-bag``."""

from __future__ import annotations

from geometry_msgs.msg import Point, Vector3
from osprey_interfaces.msg import RegionDescription, RegionDescriptionArray
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from .depth import RegionPosition
from .markers import region_markers
from .region_describer import RegionResult


def descriptions_msg(
    header: Header,
    model_name: str,
    regions: list[RegionResult],
    elapsed: float,
    positions: list[RegionPosition] | None = None,
) -> RegionDescriptionArray:
    """``positions``: one per region, or None when the frame has no depth."""
    out = RegionDescriptionArray(header=header, model_name=model_name, inference_time=float(elapsed))
    for i, region in enumerate(regions):
        x, y, w, h = region.bbox
        description = RegionDescription(
            id=region.id,
            label=region.label,
            description=region.description,
            bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
            area=region.area,
            reused=region.reused,
            label_confidence=float(region.confidence),
            category=region.attributes.get("category", ""),
            colour=region.attributes.get("colour", ""),
            material=region.attributes.get("material", ""),
            state=region.attributes.get("state", ""),
        )
        if positions is not None:
            place = positions[i]
            description.depth_pixels = place.valid_pixels
            if place.centroid is not None and place.extent is not None:
                description.has_position = True
                description.position = Point(x=place.centroid[0], y=place.centroid[1], z=place.centroid[2])
                description.extent = Vector3(x=place.extent[0], y=place.extent[1], z=place.extent[2])
        out.regions.append(description)
    return out


def markers_msg(descriptions: RegionDescriptionArray) -> MarkerArray:
    """RViz boxes and labels of the regions that have a 3D position."""
    placed = [r for r in descriptions.regions if r.has_position]
    return region_markers(descriptions.header, [(r.id, r.label, r.position, r.extent) for r in placed])


def description_record(descriptions: RegionDescriptionArray) -> dict:
    """One frame's descriptions as plain JSON (``osprey-bag``'s JSONL)."""
    stamp = descriptions.header.stamp
    regions = []
    for r in descriptions.regions:
        record = {
            "id": r.id,
            "label": r.label,
            "description": r.description,
            "label_confidence": round(r.label_confidence, 4),
            **{name: getattr(r, name) for name in ("category", "colour", "material", "state")},
            "bbox": [r.bbox.x_offset, r.bbox.y_offset, r.bbox.width, r.bbox.height],
            "area": r.area,
            "reused": r.reused,
            "depth_pixels": r.depth_pixels,
        }
        if r.has_position:
            record["position"] = [r.position.x, r.position.y, r.position.z]
            record["extent"] = [r.extent.x, r.extent.y, r.extent.z]
        regions.append(record)
    return {
        "stamp": stamp.sec + stamp.nanosec * 1e-9,
        "frame_id": descriptions.header.frame_id,
        "model": descriptions.model_name,
        "inference_time": descriptions.inference_time,
        "regions": regions,
    }
