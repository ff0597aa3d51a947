"""TensorRTRunner's own logic (device check, shapes, addresses, profile limits, CUDA-graph buckets with
one execution context each, error paths, tracker limits) against a STAND-IN engine.

NO TensorRT RUNS HERE. ``StandInEngine`` / ``StandInContext`` implement the few ICudaEngine /
IExecutionContext calls the runner makes and, on ``execute_async_v3``, read the inputs from the
addresses the runner bound, run the same ONNX graph in ONNX Runtime (CPU) and write the outputs to
the bound output addresses. ``StandInGraph`` "captures" by remembering the enqueue and "replays" by
calling it again: like a CUDA graph it reuses the context's bound addresses and shapes, so a context
shared between buckets shows up as wrong results. On CPU the buffers are torch CPU tensors; the
tests marked ``gpu`` run the same code with torch CUDA tensors (run on a CUDA machine).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsam2.runtime.backends.trt_profiles import profiles_for
from fastsam2.runtime.backends.base import StageError
from fastsam2.runtime.backends.trt import ProfileLimitError, TensorRTRunner, backend_from_runners, tracker_limits
from fastsam2.tools.check_engines import dummy_feed
from fastsam2.runtime.manifest import Manifest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


class _Named:
    def __init__(self, name):
        self.name = name


_TRT_DTYPE = {"float32": "FLOAT", "int64": "INT64", "int32": "INT32"}


class _HostView:
    def __init__(self, ptr, shape, dtype):
        self.__array_interface__ = {"data": (ptr, False), "shape": tuple(shape),
                                    "typestr": np.dtype(dtype).str, "version": 3}


class _DeviceView:
    def __init__(self, ptr, shape, dtype):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": tuple(shape),
                                         "typestr": np.dtype(dtype).str, "version": 2, "strides": None}


class StandInEngine:
    """STAND-IN for ICudaEngine over an ONNX graph and one optimization profile (not TensorRT)."""

    def __init__(self, onnx_path, spec, profile, device: str):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self.spec, self.profile, self.device = spec, profile, device
        self.names = [*spec.input_names, *spec.output_names]
        self.contexts: list[StandInContext] = []

    num_io_tensors = property(lambda self: len(self.names))

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return _Named("INPUT" if name in self.spec.input_names else "OUTPUT")

    def get_tensor_dtype(self, name):
        t = self.spec.input(name) if name in self.spec.input_names else self.spec.output(name)
        return _Named(_TRT_DTYPE[t.dtype])

    def get_tensor_profile_shape(self, name, index):
        assert index == 0
        s = self.profile[name]
        return [s.min, s.opt, s.max]

    def create_execution_context(self):
        self.contexts.append(StandInContext(self))
        return self.contexts[-1]


class StandInContext:
    """STAND-IN for IExecutionContext: shapes and addresses as TensorRT keeps them per context; the
    enqueue runs ONNX Runtime synchronously."""

    def __init__(self, engine: StandInEngine):
        self.engine = engine
        self.shapes = {t.name: tuple(-1 if isinstance(d, str) else d for d in t.shape) for t in engine.spec.inputs}
        self.addresses: dict[str, int] = {}
        self.set_shape_calls = 0
        self.runs = 0

    def get_tensor_shape(self, name):
        if name in self.shapes:
            return self.shapes[name]
        sizes = {}
        for t in self.engine.spec.inputs:
            for d, n in zip(t.shape, self.shapes[t.name]):
                if isinstance(d, str) and n >= 0:
                    sizes[d] = n
        out = self.engine.spec.output(name)
        return tuple(sizes.get(d, -1) if isinstance(d, str) else d for d in out.shape)

    def set_input_shape(self, name, shape):
        self.set_shape_calls += 1
        lo, hi = self.engine.profile[name].min, self.engine.profile[name].max
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False  # what TensorRT does outside the profile
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def infer_shapes(self):
        return [n for n, s in self.shapes.items() if any(d < 0 for d in s)]

    def _view(self, name, shape, dtype):
        ptr = self.addresses[name]
        if self.engine.device == "cpu":
            return torch.from_numpy(np.asarray(_HostView(ptr, shape, dtype)))
        return torch.as_tensor(_DeviceView(ptr, shape, dtype), device="cuda")

    def execute_async_v3(self, stream_handle):
        if self.engine.device == "cuda":
            torch.cuda.synchronize()
        spec = self.engine.spec
        feed = {t.name: self._view(t.name, self.shapes[t.name], t.dtype).cpu().numpy().copy() for t in spec.inputs}
        results = self.engine.session.run(spec.output_names, feed)
        for t, value in zip(spec.outputs, results):
            assert tuple(value.shape) == tuple(self.get_tensor_shape(t.name)), t.name
            self._view(t.name, value.shape, t.dtype).copy_(torch.from_numpy(value))
        if self.engine.device == "cuda":
            torch.cuda.synchronize()
        self.runs += 1
        return True


class StandInGraph:
    """STAND-IN for a CUDA graph: replay re-runs the captured enqueue with its context's bindings."""

    def __init__(self, runner):
        self.enqueue = None
        self.replays = 0

    def capture(self, enqueue):
        self.enqueue = enqueue

    def replay(self):
        self.replays += 1
        assert self.enqueue()


@pytest.fixture(scope="module")
def export512(onnx_tiny512):
    return onnx_tiny512, Manifest.read(onnx_tiny512)


def _device(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run pytest -m gpu tests/test_trt_standin.py on one)")
    return device


def _runner(export512, graph, device, *, kind="desktop", **kw):
    path, manifest = export512
    entry = manifest.graphs[graph]
    profile = profiles_for(entry.spec, manifest.model_config, kind=kind)[0]
    engine = StandInEngine(path / entry.file, entry.spec, profile, device)
    runner = TensorRTRunner(entry.spec, path / f"{graph}.engine", device=device,
                            engine_loader=lambda: engine, check_metadata=False, **kw)
    return runner, engine, profile


def _torch_feed(feed, device):
    return {k: torch.from_numpy(v).to(device) for k, v in feed.items()}


def _reference(export512, graph, feed):
    path, manifest = export512
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path / manifest.graphs[graph].file), so, providers=["CPUExecutionProvider"])
    return dict(zip(manifest.graphs[graph].spec.output_names, sess.run(None, feed)))


def _shapes(profile, **sizes):
    """Opt shapes of the profile with some symbol sizes replaced (e.g. K=200)."""
    return profile.shapes("opt") | sizes


@pytest.mark.parametrize("device", DEVICES)
def test_runner_matches_the_graph_and_accepts_bare_cuda(export512, device):
    device = _device(device)
    _, manifest = export512
    # "cuda" (no index) must accept tensors on cuda:0 (a device check that compared names refused the first frame)
    runner, engine, profile = _runner(export512, "memory_encoder", "cuda" if device == "cuda" else "cpu")
    with runner:
        feed = dummy_feed(runner.spec, profile.shapes("opt"))
        out = runner.infer(_torch_feed(feed, device))
        ref = _reference(export512, "memory_encoder", feed)
        for name, value in ref.items():
            assert out[name].device.type == device
            np.testing.assert_allclose(out[name].cpu().numpy(), value, atol=1e-5)
        assert runner.profile_limits["kept_idx"] == profile["kept_idx"]
        ctx = engine.contexts[0]
        assert ctx.addresses["memory"] == out["memory"].data_ptr(), "outputs are written where bound"
        # same shapes again: no new set_input_shape call
        calls = ctx.set_shape_calls
        runner.infer(_torch_feed(feed, device))
        assert ctx.set_shape_calls == calls
        with pytest.raises(StageError, match="must be a torch tensor"):
            runner.infer(feed)


@pytest.mark.parametrize("device", DEVICES)
def test_profile_limits_are_enforced_before_tensorrt(export512, device):
    device = _device(device)
    _, manifest = export512
    runner, engine, profile = _runner(export512, "memory_attention", device, kind="edge")
    hw = manifest.model_config.num_tokens
    k_min = profile["kept_idx"].min[1]
    m_max = profile["memory"].max[1]
    with runner:
        spec = runner.spec
        small = dummy_feed(spec, {**profile.shapes("opt"), "kept_idx": (1, k_min - 1)})
        with pytest.raises(ProfileLimitError, match=rf"kept_tokens = {k_min - 1}, outside the engine's profile {k_min}\.\.{hw}; change the keep ratio"):
            runner.infer(_torch_feed(small, device))
        opt = profile.shapes("opt")
        big_shapes = {**opt, "memory": (1, m_max + 1, 64), "memory_pos_idx": (1, m_max + 1), "memory_tpos_idx": (1, m_max + 1)}
        big = dummy_feed(spec, big_shapes)
        with pytest.raises(ProfileLimitError, match="memory_tokens.*max_cond_frames_in_attn"):
            runner.infer(_torch_feed(big, device))
        assert engine.contexts[0].set_shape_calls == 0, "refused before TensorRT saw the shape"


@pytest.mark.parametrize("device", DEVICES)
def test_cuda_graph_buckets_have_their_own_context(export512, device):
    device = _device(device)
    _, manifest = export512
    runner, engine, profile = _runner(export512, "memory_encoder", device, cuda_graphs=True, max_graphs=2,
                                      graph_factory=StandInGraph)
    cfg = manifest.model_config
    feeds = [dummy_feed(runner.spec, {**profile.shapes("opt"), "kept_idx": (1, k)}, seed=k) for k in (300, 500, 700)]
    with runner:
        a, b, c = (_torch_feed(f, device) for f in feeds)
        ref = [_reference(export512, "memory_encoder", f)["memory"] for f in feeds]
        first = [runner.infer(x)["memory"].cpu().numpy() for x in (a, b)]  # capture runs
        assert len(runner._buckets) == 2 and len(runner.contexts) == 3
        assert len({id(ctx) for ctx in runner.contexts}) == 3, "one execution context per captured graph"
        # replays, interleaved: each bucket's graph must still see its own shapes and buffers
        again_a = runner.infer(a)["memory"].cpu().numpy()
        again_b = runner.infer(b)["memory"].cpu().numpy()
        for got, want in zip((first[0], first[1], again_a, again_b), (ref[0], ref[1], ref[0], ref[1])):
            np.testing.assert_allclose(got, want, atol=1e-5)
        for key, bucket in runner._buckets.items():
            assert bucket.graph.replays == 1
            assert bucket.context.addresses["kept_idx"] == bucket.inputs["kept_idx"].data_ptr()
        # over max_graphs: runs without a graph on the runner's own context, still right
        np.testing.assert_allclose(runner.infer(c)["memory"].cpu().numpy(), ref[2], atol=1e-5)
        assert len(runner._buckets) == 2
        # new values in a captured shape are copied into the bucket's static inputs
        a2 = _torch_feed(dummy_feed(runner.spec, {**profile.shapes("opt"), "kept_idx": (1, 300)}, seed=99), device)
        want = _reference(export512, "memory_encoder", {k: v.cpu().numpy() for k, v in a2.items()})["memory"]
        np.testing.assert_allclose(runner.infer(a2)["memory"].cpu().numpy(), want, atol=1e-5)


def test_engine_io_mismatch_is_refused(export512):
    path, manifest = export512
    entry = manifest.graphs["memory_encoder"]
    other = manifest.graphs["router"]
    profile = profiles_for(other.spec, manifest.model_config)[0]
    engine = StandInEngine(path / other.file, other.spec, profile, "cpu")
    runner = TensorRTRunner(entry.spec, path / "x.engine", device="cpu", engine_loader=lambda: engine,
                            check_metadata=False)
    with pytest.raises(StageError, match="does not match the spec"):
        runner.activate()
    with pytest.raises(StageError, match="TensorRT runs on CUDA devices"):
        TensorRTRunner(entry.spec, path / "x.engine", device="cpu").activate()


@pytest.mark.parametrize("kind,cond", [("edge", 2), ("desktop", 4)])
def test_tracker_respects_the_engine_profiles(export512, kind, cond):
    from fastsam2.runtime.router import make_router
    from fastsam2.runtime.tracker import SAM2Tracker, TrackerError, TrackerOptions

    path, manifest = export512
    runners = {name: _runner(export512, name, "cpu", kind=kind)[0] for name in manifest.graphs}
    constants = dict(np.load(path / "constants.npz"))
    backend = backend_from_runners(runners, manifest.model_config, constants, device="cpu", description="stand-in")
    try:
        assert backend.config.max_cond_frames_in_attn == cond
        assert backend.limits == {"max_cond_frames_in_attn": cond, "min_keep_ratio": pytest.approx(0.1, abs=0.01),
                                  "max_batch": 1}  # engines built for one object per call
        config, _ = tracker_limits(manifest.model_config, runners)
        assert config == backend.config
        router = make_router(backend)
        with pytest.raises(TrackerError, match="keep_ratio 0.05 is below 0.10"):
            SAM2Tracker(backend, TrackerOptions(keep_ratio=0.05), router=router)
        with pytest.raises(TrackerError, match=f"exceeds the {cond} conditioning frames"):
            SAM2Tracker(backend, TrackerOptions(max_cond_frames_in_attn=cond + 1), router=router)
    finally:
        backend.close()


def test_full_tracker_on_the_stand_in_equals_onnxruntime(export512, bedroom):
    """The runner inside the whole tracking loop (torch CPU tensors, TorchOps) gives the ORT backend's
    masks on real frames."""
    from PIL import Image

    from fastsam2.runtime.backends.ort import load_ort_backend
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions

    path, manifest = export512
    runners = {name: _runner(export512, name, "cpu")[0] for name in manifest.graphs if name != "router"}
    constants = dict(np.load(path / "constants.npz"))
    standin = backend_from_runners(runners, manifest.model_config, constants, device="cpu", description="stand-in")
    reference = load_ort_backend(path, intra_op_threads=1, graphs=[n for n in manifest.graphs if n != "router"])
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(bedroom.glob("*.jpg"))[:3]]
    opts = TrackerOptions(fill_hole_area=0, profile_stages=False)
    masks = []
    try:
        for backend in (standin, reference):
            tracker = SAM2Tracker(backend, opts)
            out = []
            for i, frame in enumerate(frames):
                prompts = {1: Prompt(points=[[300, 200]], labels=[1])} if i == 0 else None
                out.append(np.asarray(tracker.track(frame, prompts).logits))
            masks.append(out)
    finally:
        standin.close()
        reference.close()
    for a, b in zip(*masks):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_tensorrt_backend_preprocesses_frames_on_its_device(export512, bedroom):
    """The TensorRT backend's ops resize and normalize frames where its engines run (device
    preprocessing is the default wherever the ops can), here on the CPU stand-in."""
    from PIL import Image

    from fastsam2.runtime.backends.torch_device import DeviceTorchOps
    from fastsam2.runtime.preprocess import preprocess_frame
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker

    path, manifest = export512
    runners = {name: _runner(export512, name, "cpu")[0] for name in manifest.graphs if name != "router"}
    constants = dict(np.load(path / "constants.npz"))
    backend = backend_from_runners(runners, manifest.model_config, constants, device="cpu", description="stand-in")
    try:
        assert isinstance(backend.ops, DeviceTorchOps)
        tracker = SAM2Tracker.from_backend(backend, fill_hole_area=0)
        assert tracker.device_preprocess
        calls = []
        preprocess = backend.ops.preprocess_frames

        def spy(images, *args):
            out = preprocess(images, *args)
            calls.append(out)
            return out

        backend.ops.preprocess_frames = spy
        frame = np.asarray(Image.open(sorted(bedroom.glob("*.jpg"))[0]).convert("RGB"))
        tracker.track(frame, {1: Prompt(points=[[300, 200]], labels=[1])})
        cfg = backend.config
        host = preprocess_frame(frame, cfg.image_size, cfg.img_mean, cfg.img_std)
        (device,) = calls[0]
        # one uint8 level of the normalized scale at most, on a small fraction of the values (PIL's
        # fixed-point rounding; tests/test_device_preprocess.py)
        level = 1.0 / 255.0 / min(cfg.img_std)
        diff = np.abs(device.numpy() - host)
        assert device.device.type == "cpu" and diff.max() <= level * 1.001 and (diff > 1e-5).mean() < 1e-3
    finally:
        backend.close()
