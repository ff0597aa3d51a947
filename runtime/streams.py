"""Several camera streams served by one tracker: one batch per step across streams.

    mst = MultiStreamTracker(backend, TrackerOptions(keep_ratio=0.3), router=router)
    results = mst.step({"front": rgb0, "rear": rgb1}, prompts={"front": {1: Prompt(box=[...])}})
    results["front"].masks            # {obj_id: bool [H, W]}
    mst.remove_object("front", 1); mst.remove_stream("rear")

Each stream has its own objects and memory bank (a :class:`~fastsam2.runtime.state.VideoState`);
streams share the model and nothing else. A step takes one frame from each stream that has one
ready, encodes all of them in one image-encoder batch and runs every object of every stream through
the router, memory attention, mask decoder and memory encoder in batches of equal shapes
(:meth:`SAM2Tracker.track_streams`): per stream the same arithmetic as a tracker of its own.

:meth:`serve` runs the loop over frame sources: a reader thread per stream keeps its newest frame
(older ones are dropped, as a live camera would), and each step takes whatever is ready. A stream
that stalls or ends is simply not in the next batch, so streams never wait on each other for more
than the batches in flight. On a GPU the next step is issued while the current one computes
(``in_flight=1``): the device never waits for the host to take and stage frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable, Iterable, Mapping

import numpy as np

from .state import VideoState
from .tracker import (
    Prompt, SAM2Tracker, TrackerError, TrackerOptions, TrackResult, finite_logits, rgb_frame, tracker_setup,
)

StreamId = Hashable


class MultiStreamTracker:
    """One :class:`SAM2Tracker` (one backend, one router) serving many independent streams."""

    def __init__(self, backend: Any, options: TrackerOptions | None = None, router: Any = None):
        self.tracker = SAM2Tracker(backend, options, router=router)
        self.streams: dict[StreamId, VideoState] = {}

    @classmethod
    def from_backend(cls, backend: Any, *, keep: float = 1.0, text: str | None = None, texts: Any = None,
                     router: Any = None, **options: Any) -> "MultiStreamTracker":
        """As :meth:`SAM2Tracker.from_backend`, serving many streams."""
        opts, selector = tracker_setup(backend, keep=keep, text=text, texts=texts, router=router, **options)
        return cls(backend, opts, router=selector)

    # -- streams and objects ----------------------------------------------------------------------
    def _state(self, stream_id: StreamId) -> VideoState:
        state = self.streams.get(stream_id)
        if state is None:
            raise TrackerError(f"no stream {stream_id!r} (streams: {list(self.streams)})")
        return state

    def remove_stream(self, stream_id: StreamId) -> None:
        """Forget a stream (its objects and memory)."""
        self._state(stream_id)
        del self.streams[stream_id]

    def remove_object(self, stream_id: StreamId, obj_id: int) -> list[int]:
        """Forget one object of one stream; returns the stream's remaining object ids."""
        return self.tracker.remove_object(self._state(stream_id), obj_id)

    def objects(self, stream_id: StreamId) -> list[int]:
        return self.streams[stream_id].obj_ids if stream_id in self.streams else []

    def memory_bytes(self, stream_id: StreamId) -> int:
        """Bytes of one stream's memory bank."""
        return self.tracker.memory_bytes(self._state(stream_id))

    # -- tracking ---------------------------------------------------------------------------------
    def step(
        self,
        frames: Mapping[StreamId, np.ndarray],
        prompts: Mapping[StreamId, Mapping[int, Prompt]] | None = None,
    ) -> dict[StreamId, TrackResult]:
        """Track the next frame of every stream in ``frames`` (RGB uint8 [H,W,3] each; a stream seen
        for the first time is added) in one batch. ``prompts``: {stream: {obj_id: Prompt}} given on
        these frames (new objects or re-initialisations). A stream without objects yet gets an empty
        result. Returns {stream: TrackResult}."""
        prompts = prompts or {}
        unknown = [s for s in prompts if s not in frames]
        if unknown:
            raise TrackerError(f"prompts for streams {unknown} without a frame in this step")
        items = []
        for sid, frame in frames.items():
            frame = rgb_frame(frame)
            state = self.streams.get(sid)
            if state is None:
                state = self.streams[sid] = VideoState(*frame.shape[:2])
            items.append((state, frame, dict(prompts.get(sid, {}))))
        if not items:
            return {}
        results = self.tracker.track_streams(items)
        return dict(zip(frames, results))

    def serve(
        self,
        sources: Mapping[StreamId, Iterable[np.ndarray]],
        on_result: Callable[[StreamId, TrackResult, float], None],
        prompts: Mapping[StreamId, Mapping[int, Prompt]] | None = None,
        *,
        max_batch: int | None = None,
        in_flight: int = 1,
        idle_wait_s: float = 0.01,
    ) -> ServeStats:
        """Track every source until all have ended.

        ``sources``: {stream: iterable of RGB frames or a FrameSource}; each is read by a thread of
        its own into a one-frame slot (a live stream's newer frame replaces one not taken yet; a
        recorded source waits).
        ``prompts``: {stream: {obj_id: Prompt}} applied to the stream's first frame. Each step
        takes the ready frames (at most ``max_batch`` streams, oldest-waiting first) and calls
        ``on_result(stream, result, latency_s)`` with the time from the frame's arrival to its
        result, masks on the host. A source that raises ends its stream (recorded in the stats)
        without stopping the others.

        ``in_flight``: steps that may still compute when the next one is issued. On a GPU backend
        whose tracker keeps results on the device (``TrackerOptions.device_results``), 1 lets the
        host take and stage the next frames while the device computes the current step (results are
        copied to the host behind their own step, not behind the next one); 0 finishes each step
        before taking the next frames. With ``TrackerOptions.encoder_region`` a step chooses its
        rectangles from the previous step's masks and so waits for it, unless ``encoder_lag`` >= 1.
        A step found done is delivered at once: host backends finish every step when it is issued, so
        their results never wait for the next step."""
        from .frames import StreamSource

        if in_flight < 0:
            raise TrackerError(f"in_flight must be >= 0, got {in_flight}")
        slots = {sid: _Slot(live=isinstance(src, StreamSource)) for sid, src in sources.items()}
        threads = [
            threading.Thread(target=slots[sid].fill, args=(src,), daemon=True, name=f"fastsam2-{sid}")
            for sid, src in sources.items()
        ]
        for th in threads:
            th.start()
        pending_prompts = {sid: dict(p) for sid, p in (prompts or {}).items()}
        stats = ServeStats()
        ops = self.tracker.ops
        issued: deque = deque()  # (frames taken, their results being computed, a marker after them)

        def deliver() -> None:
            ready, results, marker = issued.popleft()
            marker.synchronize()
            now = time.perf_counter()
            for sid, (_, arrived) in ready:
                stats.frames += 1
                on_result(sid, _on_host(results[sid]), now - arrived)

        while True:
            waiting = sorted(
                ((t, sid) for sid, slot in slots.items() if (t := slot.arrival()) is not None), key=lambda x: x[0]
            )
            ready = [(sid, slots[sid].take()) for _, sid in waiting[: max_batch or None]]
            if not ready:
                if issued:
                    deliver()
                    continue
                if all(slot.done for slot in slots.values()):
                    break
                time.sleep(idle_wait_s)
                continue
            frames = {sid: frame for sid, (frame, _) in ready}
            step_prompts = {sid: pending_prompts.pop(sid) for sid in frames if sid in pending_prompts}
            results = self.step(frames, step_prompts)
            # device results start their way to the host now: behind this step, ahead of the next
            results = {sid: _to_host_async(ops, r) for sid, r in results.items()}
            issued.append((ready, results, ops.marker()))
            stats.steps += 1
            stats.batch_sizes.append(len(frames))
            while issued and (len(issued) > in_flight or issued[0][2].query()):  # done ones go out now
                deliver()
        for sid, slot in slots.items():
            stats.dropped[sid] = slot.dropped
            if slot.error is not None:
                stats.errors[sid] = slot.error
        return stats


def _to_host_async(ops: Any, result: TrackResult) -> TrackResult:
    """``result`` with its logits and scores being copied to the host (see ``ops.to_host_async``)."""
    if isinstance(result.logits, np.ndarray):
        return result
    scores = {k: ops.to_host_async(v) for k, v in result.object_scores.items()}
    return replace(result, logits=ops.to_host_async(result.logits), object_scores=scores)


def _on_host(result: TrackResult) -> TrackResult:
    """A result whose host copies have arrived, as numpy arrays and floats."""
    if isinstance(result.logits, np.ndarray):
        return result
    logits = finite_logits(np.asarray(result.logits), result.frame_idx)
    scores = {k: float(v) for k, v in result.object_scores.items()}
    return replace(result, logits=logits, object_scores=scores)


@dataclass
class ServeStats:
    """What :meth:`MultiStreamTracker.serve` did: steps, frames tracked, batch sizes, frames each
    live stream's slot dropped, and the error that ended a stream, if any."""

    steps: int = 0
    frames: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    dropped: dict[StreamId, int] = field(default_factory=dict)
    errors: dict[StreamId, str] = field(default_factory=dict)


class _Slot:
    """The next unread frame of one stream, filled by a reader thread. A live source (a camera or
    network stream) replaces a frame not taken yet by its newer one, as a robot wants; a recorded
    source (a folder, a file, a list) waits until the frame is taken, so none is lost."""

    def __init__(self, live: bool):
        self.live = live
        self._lock = threading.Lock()
        self._item: tuple[np.ndarray, float] | None = None
        self.done = False
        self.dropped = 0
        self.error: str | None = None

    def fill(self, source: Iterable[Any]) -> None:
        try:
            for frame in source:
                image = np.asarray(getattr(frame, "image", frame))  # a FrameSource yields Frames
                item = (image, time.perf_counter())
                while True:
                    with self._lock:
                        if self._item is None or self.live:
                            self.dropped += self._item is not None
                            self._item = item
                            break
                    time.sleep(0.001)
        except Exception as e:  # noqa: BLE001 - a broken source ends its stream, not the others
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done = True

    def arrival(self) -> float | None:
        """When the waiting frame arrived (perf_counter), None if no frame waits."""
        with self._lock:
            return None if self._item is None else self._item[1]

    def take(self) -> tuple[np.ndarray, float] | None:
        with self._lock:
            item, self._item = self._item, None
            return item
