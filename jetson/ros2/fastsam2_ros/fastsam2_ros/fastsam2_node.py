"""ROS 2 node: fastsam2 SAM2 tracking on an image topic.

    ros2 run fastsam2_ros fastsam2_node --ros-args -p engine_dir:=/data/engines -p box:="100,80,300,400"
    ros2 launch fastsam2_ros fastsam2.launch.py engine_dir:=/data/engines point:="320,240"

Subscribes ``image_topic`` (sensor_msgs/Image, rgb8/bgr8/rgba8/bgra8/mono8; default
``/camera/image_raw``). Publishes ``~/mask`` (mono8, pixel = object id, 0 = background) and, when
``publish_overlay`` is true, ``~/overlay`` (the frame with the masks blended in, same rgb8/bgr8
encoding as the input); both carry the input's header (stamp, frame_id).

Prompts: ``box`` ("x0,y0,x1,y1") or ``point`` ("x,y") parameters give object ``obj_id`` on the first
frame; ``~/prompt`` (std_msgs/String, JSON, see ``prompts.py``) adds or re-initialises an object on
the next frame; ``~/reset`` (std_srvs/Trigger) forgets all objects and re-applies the parameter
prompt. Without any prompt the node waits.

Frames are dropped while the tracker is busy: the subscription keeps 1 message (best effort, which
also matches reliable publishers), the callback only stores the newest frame, and one worker thread
tracks whatever is newest when it is free; dropped frames are counted in the latency log.

rclpy API used (rclpy Node: ``declare_parameter``, ``get_parameter``, ``create_subscription``,
``create_publisher``, ``create_service``, ``get_logger``; rclpy.qos.QoSProfile). rclpy is imported
only in :func:`make_node_class` / :func:`main`, so this module imports without ROS. Never run under ROS 2 (unit-tested against stub modules).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from .image_conversions import (
    ImageConversionError,
    label_image,
    mono8_fields,
    msg_to_rgb,
    overlay,
    rgb_to_fields,
)
from .prompts import PromptError, PromptSpec, from_json, from_parameters

PARAMETERS: dict[str, Any] = {
    "image_topic": "/camera/image_raw",
    "mask_topic": "~/mask",
    "overlay_topic": "~/overlay",
    "publish_overlay": True,
    "engine_dir": "",
    "backend": "trt",  # trt | ort
    "device": "cuda",
    "cuda_graphs": False,
    "keep_ratio": 1.0,
    "router_weights": "",
    "text": "",
    "texts_file": "",
    "box": "",
    "point": "",
    "obj_id": 1,
    "overlay_alpha": 0.5,
    "log_every": 1,  # log latency every N tracked frames
}


def load_tracker(params: dict[str, Any]):
    """A SAM2Tracker over the backend the parameters name (fastsam2 imported here)."""
    from fastsam2 import SAM2Tracker, open_backend

    engine_dir = params["engine_dir"]
    if not engine_dir:
        raise ValueError("parameter engine_dir is empty: point it at build_engines.py's output (or an ONNX export for ort)")
    if params["backend"] not in ("trt", "ort"):
        raise ValueError(f"parameter backend must be trt or ort, got {params['backend']!r}")
    router = params["router_weights"] or None
    # TensorRT engines carry their profile limits (e.g. the edge profile's conditioning frames): the
    # backend's config is capped to them
    backend = open_backend(
        params["backend"], engine_dir, router=router,
        device=params["device"] if params["backend"] == "trt" else None,
        cuda_graphs=params["cuda_graphs"] if params["backend"] == "trt" else False,
    )
    return SAM2Tracker.from_backend(
        backend, keep=float(params["keep_ratio"]), text=params["text"] or None,
        texts=params["texts_file"] or None, router=router,
    )


def to_tracker_prompt(spec: PromptSpec):
    from fastsam2.runtime.tracker import Prompt

    return Prompt(**spec.as_kwargs())


def make_node_class():
    """The rclpy Node subclass (defined here so that rclpy is imported only when a node is made)."""
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    def fill_image(fields: dict[str, Any], header) -> Image:
        msg = Image()
        msg.header = header
        msg.height, msg.width = fields["height"], fields["width"]
        msg.encoding, msg.is_bigendian, msg.step = fields["encoding"], fields["is_bigendian"], fields["step"]
        try:
            # rclpy maps uint8[] to array.array('B'): frombytes avoids the per-element setter check.
            msg.data.frombytes(fields["data"])
        except AttributeError:
            msg.data = fields["data"]
        return msg

    class FastSAM2Node(Node):
        def __init__(self) -> None:
            super().__init__("fastsam2")
            for name, default in PARAMETERS.items():
                self.declare_parameter(name, default)
            self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
            self.initial = from_parameters(self.params["box"], self.params["point"], int(self.params["obj_id"]))
            self.tracker = load_tracker(self.params)
            self.get_logger().info(
                f"fastsam2 {self.tracker.backend.description} keep_ratio={self.params['keep_ratio']} "
                f"on {self.params['image_topic']}"
                + (f", initial prompt {self.initial}" if self.initial else ", waiting for a prompt on ~/prompt")
            )
            self._lock = threading.Lock()
            self._wake = threading.Event()
            self._latest = None
            self._pending: dict[int, PromptSpec] = {self.initial.obj_id: self.initial} if self.initial else {}
            self._reset = False
            self._running = True
            self.received = self.dropped = self.tracked = 0
            self._window: list[float] = []

            qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
            self.create_subscription(Image, self.params["image_topic"], self.on_image, qos)
            self.mask_pub = self.create_publisher(Image, self.params["mask_topic"], 1)
            self.overlay_pub = (
                self.create_publisher(Image, self.params["overlay_topic"], 1) if self.params["publish_overlay"] else None
            )
            self.create_subscription(String, "~/prompt", self.on_prompt, 10)
            self.create_service(Trigger, "~/reset", self.on_reset)
            self.worker = threading.Thread(target=self.work, name="fastsam2-tracker", daemon=True)
            self.worker.start()

        # -- callbacks (executor thread): never block on the tracker -----------------------------
        def on_image(self, msg: Image) -> None:
            with self._lock:
                self.received += 1
                if self._latest is not None:
                    self.dropped += 1
                self._latest = (msg, time.perf_counter())
            self._wake.set()

        def on_prompt(self, msg: String) -> None:
            try:
                spec = from_json(msg.data, default_obj_id=int(self.params["obj_id"]))
            except PromptError as e:
                self.get_logger().warning(f"ignored prompt: {e}")
                return
            with self._lock:
                self._pending[spec.obj_id] = spec
            self.get_logger().info(f"prompt for object {spec.obj_id} queued for the next frame")

        def on_reset(self, request, response):
            with self._lock:
                self._reset = True
                self._pending = {self.initial.obj_id: self.initial} if self.initial else {}
            response.success = True
            response.message = "tracking reset" + (" (initial prompt re-applied)" if self.initial else "")
            return response

        # -- worker thread -----------------------------------------------------------------------
        def work(self) -> None:
            while self._running:
                if not self._wake.wait(timeout=0.5):
                    continue
                with self._lock:
                    self._wake.clear()
                    item, self._latest = self._latest, None
                    reset, self._reset = self._reset, False
                    pending, self._pending = self._pending, {}
                if item is None:
                    continue
                try:
                    self.process(item, reset, pending)
                except (ImageConversionError, ValueError) as e:  # TrackerError is a ValueError
                    # A bad prompt would fail again on every frame: it is dropped with the frame.
                    dropped = f"; prompts for objects {sorted(pending)} dropped" if pending else ""
                    self.get_logger().error(f"frame skipped: {e}{dropped}")

        def process(self, item, reset: bool, pending: dict[int, PromptSpec]) -> None:
            msg, t_recv = item
            t0 = time.perf_counter()
            if reset:
                self.tracker.reset()
            state = self.tracker.stream_state
            if not pending and (state is None or not state.objects):
                self.get_logger().info("no object yet: publish a prompt on ~/prompt", throttle_duration_sec=5.0)
                return
            rgb = msg_to_rgb(msg)
            prompts = {oid: to_tracker_prompt(spec) for oid, spec in pending.items()}
            result = self.tracker.track(rgb, prompts or None)
            label = label_image(result.logits, result.obj_ids)
            self.mask_pub.publish(fill_image(mono8_fields(label), msg.header))
            if self.overlay_pub is not None:
                enc = "bgr8" if msg.encoding.lower() in ("bgr8", "bgra8") else "rgb8"
                shown = overlay(rgb, label, float(self.params["overlay_alpha"]))
                self.overlay_pub.publish(fill_image(rgb_to_fields(shown, enc), msg.header))
            t1 = time.perf_counter()
            self.tracked += 1
            self._window.append((t1 - t0) * 1e3)
            if self.tracked % max(1, int(self.params["log_every"])) == 0:
                self.get_logger().info(
                    f"frame {result.frame_idx}: track {result.ms:.1f} ms, frame-to-publish "
                    f"{np.mean(self._window):.1f} ms (queue wait {(t0 - t_recv) * 1e3:.1f} ms), "
                    f"objects {result.obj_ids}, dropped {self.dropped}/{self.received}"
                )
                self._window.clear()

        def destroy_node(self):
            self._running = False
            self._wake.set()
            self.worker.join(timeout=2.0)
            return super().destroy_node()

    return FastSAM2Node


def main(args: list[str] | None = None) -> None:
    import rclpy

    rclpy.init(args=args)
    node = make_node_class()()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
