"""The service flow every model service shares: no error in a request's checks escapes to the executor."""

from __future__ import annotations

from types import SimpleNamespace

import rclpy
from osprey_interfaces.srv import SegmentAndDescribe
from ros_harness import domain_id

from osprey_ros.model_service import ModelService


class Broken(ModelService):
    srv_type = SegmentAndDescribe
    name = "~/broken"

    def check(self, request: SegmentAndDescribe.Request) -> str | None:
        raise AttributeError("'RegionPrompt' object has no attribute 'mask'")  # as a stale interface build did


def test_an_unexpected_error_in_check_is_answered_not_raised() -> None:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id(65))
    try:
        node = rclpy.node.Node("osprey_perception", context=context)
        stats = SimpleNamespace(service_calls=0, service_errors=0)
        node.pipeline = SimpleNamespace(stats=stats)  # type: ignore[attr-defined]
        node.active = True  # type: ignore[attr-defined]
        service = Broken(node)  # type: ignore[arg-type]
        response = service._on_request(SegmentAndDescribe.Request(), SegmentAndDescribe.Response())
        assert isinstance(response, SegmentAndDescribe.Response) and not response.success
        assert response.message.startswith("internal error: AttributeError(") and stats.service_errors == 1
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
