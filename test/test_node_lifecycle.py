"""The managed node over real rclpy: failed start-ups, lifecycle transitions, run-time parameters."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from ros_harness import NodeProcess, RosTester, assert_clean_exit, domain_id, ros_env
from test_perception_node import first_description, publish_frame, scene

NODE = "/osprey_perception"


def start_failure(tmp_path: Path, parameters: dict) -> subprocess.CompletedProcess[str]:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**/osprey_perception": {"ros__parameters": parameters}}))
    return subprocess.run(
        [sys.executable, "-m", "osprey_ros.launcher", f"params_file:={params_file}"],
        env=ros_env(domain_id(41)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing-model-dir", "config.json not found"),
        ("bad-prompt-mode", "prompt_mode='poem'"),
        ("corrupt-checkpoint", "cannot read"),
    ],
)
def test_failed_start_up_is_one_fatal_line_and_exit_code_1(kind: str, expected: str, tiny_dir: Path, tmp_path) -> None:
    parameters: dict = {"model_dir": str(tmp_path / "nowhere")}
    if kind == "bad-prompt-mode":
        parameters = {"model_dir": str(tiny_dir), "prompt_mode": "poem"}
    elif kind == "corrupt-checkpoint":
        broken = tmp_path / "broken"
        shutil.copytree(tiny_dir, broken)
        (broken / "model.safetensors").write_bytes(b"\0" * 100)
        parameters = {"model_dir": str(broken)}
    result = start_failure(tmp_path, parameters)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    fatal = [line for line in output.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "cannot start" in fatal[0] and expected in fatal[0], output
    assert len([line for line in output.splitlines() if line.strip()]) == 1, output


@pytest.fixture(scope="module")
def managed(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A node started with autostart false: it waits, unconfigured, for a lifecycle manager."""
    domain = domain_id(43)
    parameters = {
        "model_dir": str(tiny_dir),
        "autostart": False,
        "max_new_tokens": 2,
        "diagnostics_period": 0.2,
        "cpu_threads": 1,
    }
    node = NodeProcess(
        tmp_path_factory.mktemp("managed"),
        domain,
        parameters,
        {"image_topic": "/cam/image", "masks_topic": "/cam/region_masks"},
    )
    tester = RosTester(domain, "/cam/image", "/cam/region_masks")
    try:
        yield node, tester
    finally:
        tester.close()
        node.stop()


def call(tester: RosTester, srv_type, name: str, request, timeout: float = 60.0):
    client = tester.node.create_client(srv_type, name)
    tester.spin_until(client.service_is_ready, 60, name)
    future = client.call_async(request)
    tester.spin_until(future.done, timeout, f"the reply of {name}")
    tester.node.destroy_client(client)
    return future.result()


def transition(tester: RosTester, transition_id: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition_id))
    return call(tester, ChangeState, f"{NODE}/change_state", request).success


def state(tester: RosTester) -> str:
    return call(tester, GetState, f"{NODE}/get_state", GetState.Request()).current_state.label


def set_parameter(tester: RosTester, name: str, value) -> tuple[bool, str]:
    if isinstance(value, str):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    elif isinstance(value, float):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=parameter_value)])
    result = call(tester, SetParameters, f"{NODE}/set_parameters", request).results[0]
    return result.successful, result.reason


def test_lifecycle_configure_activate_deactivate_cleanup(managed) -> None:
    node, tester = managed
    assert state(tester) == "unconfigured"
    assert tester.image_pub.get_subscription_count() == 0  # nothing subscribed before activate

    assert transition(tester, Transition.TRANSITION_CONFIGURE)
    node.wait_for_log(r"configured: model")
    assert state(tester) == "inactive"
    assert transition(tester, Transition.TRANSITION_ACTIVATE)
    tester.spin_until(lambda: tester.image_pub.get_subscription_count() > 0, 30, "the image subscription")
    tester.spin_until(lambda: tester.masks_pub.get_subscription_count() > 0, 30, "the masks subscription")
    image, masks = scene()
    first_description(tester, image, masks)

    assert transition(tester, Transition.TRANSITION_DEACTIVATE)
    assert state(tester) == "inactive"
    tester.spin_until(lambda: tester.image_pub.get_subscription_count() == 0, 30, "the subscriptions to go")
    assert transition(tester, Transition.TRANSITION_CLEANUP)
    node.wait_for_log(r"cleaned up: model released")
    assert state(tester) == "unconfigured"

    assert transition(tester, Transition.TRANSITION_CONFIGURE)  # and back: the model loads again
    assert transition(tester, Transition.TRANSITION_ACTIVATE)
    tester.spin_until(lambda: tester.masks_pub.get_subscription_count() > 0, 30, "the masks subscription")
    tester.spin_until(lambda: tester.image_pub.get_subscription_count() > 0, 30, "the image subscription")
    first_description(tester, image, masks)


def test_deactivate_and_activate_many_times_while_frames_arrive(managed) -> None:
    """A robot pauses and resumes perception while its camera streams: each deactivate destroys the camera
    subscriptions from an executor thread while the spinning thread waits on them. rclpy's destroy-while-waiting
    race ended the node here with plain ``executor.spin()`` (3 of 3 runs); the node must stay up and describe
    frames after the cycles."""
    node, tester = managed
    if state(tester) != "active":
        if state(tester) == "unconfigured":
            assert transition(tester, Transition.TRANSITION_CONFIGURE)
        assert transition(tester, Transition.TRANSITION_ACTIVATE)
    image, masks = scene()
    streaming = threading.Event()
    streaming.set()

    def camera() -> None:  # a camera at a few hundred frames a second keeps the node's executor turning
        while streaming.is_set():
            publish_frame(tester, image, masks)
            time.sleep(0.003)

    streamer = threading.Thread(target=camera, daemon=True)
    streamer.start()
    try:
        for _ in range(12):
            assert transition(tester, Transition.TRANSITION_DEACTIVATE)
            assert transition(tester, Transition.TRANSITION_ACTIVATE)
    finally:
        streaming.clear()
        streamer.join(timeout=10)
    assert node.alive(), node.log()[-4000:]
    assert state(tester) == "active"
    tester.spin_until(lambda: tester.image_pub.get_subscription_count() > 0, 30, "the image subscription")
    first_description(tester, image, masks)


def test_run_time_parameters_are_validated_and_the_rest_refused(managed) -> None:
    node, tester = managed
    if state(tester) == "unconfigured":
        assert transition(tester, Transition.TRANSITION_CONFIGURE)
    ok, reason = set_parameter(tester, "prompt_mode", "category")
    assert ok, reason
    node.wait_for_log(r"parameters changed: \{'prompt_mode': 'category'\}")
    ok, reason = set_parameter(tester, "prompt_mode", "poem")
    assert not ok and "choose one of short, category, detailed" in reason
    ok, reason = set_parameter(tester, "max_new_tokens", 0)
    assert not ok  # outside the descriptor's range
    ok, reason = set_parameter(tester, "max_regions", 3)
    assert ok, reason
    ok, reason = set_parameter(tester, "model_dir", "/elsewhere")
    assert not ok and "model_dir is read on configure" in reason and "prompt_mode" in reason
    assert node.alive()


def test_harness_sees_a_node_that_does_not_exit_cleanly() -> None:
    with pytest.raises(AssertionError, match="printed a traceback"):
        assert_clean_exit(0, "Traceback (most recent call last):\n  boom", "the node")
    with pytest.raises(AssertionError, match="exited with 1"):
        assert_clean_exit(1, "", "the node")
