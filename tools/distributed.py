"""Videos sharded over a Ray cluster (``eval --run --ray``, ``label --ray``); needs ``fastsam2[ray]``.

One long-lived actor per GPU (``--backend trt`` or ``--device cuda``) or per CPU slot holds the loaded
backend (a :class:`~fastsam2.tools.video_jobs.TrackerCache`); the driver hands each video to the next
free actor (``ray.wait``), so long and short videos balance themselves. Each actor call is
:func:`~fastsam2.tools.video_jobs.run_video`, the same function the single-process path runs.

Failures: an actor whose process dies is restarted by Ray (``max_restarts``; the constructor reruns and
the backend is built again on its next video) and its video is retried on it (``max_task_retries``:
at-least-once). If an actor is gone for good, the driver gives its video to another actor. At-least-once
is safe because a video's folder is committed by one rename and a retried video that is already
committed is returned, not written again.
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from typing import Callable

from fastsam2.runtime.args import positive
from .video_jobs import TrackerCache, VideoJob, VideoResult, run_video, worker_identity

LOCAL = "local"  # --ray with no address: start a local cluster in this process


def require_ray():
    """The ray module, or a one-line UsageError saying how to install it."""
    from fastsam2.runtime.errors import UsageError

    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'fastsam2[ray]'") from None
    return ray


def uses_gpu(args: argparse.Namespace) -> bool:
    """Whether the backend the arguments name runs on a GPU (then one actor per GPU)."""
    return args.backend == "trt" or (args.backend == "torch" and str(args.device).startswith("cuda"))


class VideoWorker:
    """The actor: one loaded backend, any number of videos (wrapped by ``ray.remote`` at start)."""

    def __init__(self, args: argparse.Namespace, threads: int | None):
        self.trackers = TrackerCache(args, threads=threads)

    def load(self) -> dict:
        """Build the backend now, so that model errors surface before any video is given out."""
        return {**self.trackers.load(), "worker": worker_identity()}

    def run(self, job: VideoJob) -> VideoResult:
        return run_video(self.trackers, job)


class RayExecutor:
    """Runs VideoJobs on Ray actors; same ``start``/``map``/``close`` as video_jobs.LocalExecutor.

    ``address``: "local" starts a local cluster (sized for ``workers`` when given), anything else is
    passed to ``ray.init(address=...)`` ("auto", "ray://head:10001"). An already initialized Ray (a test
    fixture, a notebook) is used as it is and left running.
    """

    def __init__(self, args: argparse.Namespace, *, address: str = LOCAL, workers: int | None = None,
                 cpus_per_worker: int = 1, max_restarts: int = 2):
        from fastsam2.runtime.errors import UsageError

        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        if cpus_per_worker < 1:
            raise UsageError(f"--cpus-per-worker must be >= 1, got {cpus_per_worker}")
        self.args = args
        self.address = address
        self.requested = workers
        self.cpus_per_worker = cpus_per_worker
        self.max_restarts = max_restarts
        self.actors: list = []
        self.workers = 0
        self._started_ray = False

    def start(self) -> dict:
        """Connect to (or start) the cluster, start the actors and load every backend."""
        ray = require_ray()
        from fastsam2.runtime.errors import UsageError

        if not ray.is_initialized():
            if self.address == LOCAL:
                cpus = self.requested * self.cpus_per_worker if self.requested else None
                ray.init(num_cpus=cpus, include_dashboard=False)
            else:
                try:
                    ray.init(address=self.address)
                except ConnectionError as e:
                    raise UsageError(f"cannot connect to the Ray cluster at {self.address}: {e}") from None
            self._started_ray = True
        gpu = uses_gpu(self.args)
        resources = ray.cluster_resources()
        slots = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 0) // self.cpus_per_worker)
        if slots < 1:
            raise UsageError(f"the Ray cluster has no {'GPU' if gpu else f'{self.cpus_per_worker} free CPUs'} "
                           "for a worker")
        n = self.requested or slots
        if n > slots:
            raise UsageError(f"--workers {n}: the Ray cluster has room for {slots} "
                           f"({'one per GPU' if gpu else f'{self.cpus_per_worker} CPU(s) each'})")
        actor_cls = ray.remote(VideoWorker).options(
            num_cpus=self.cpus_per_worker, num_gpus=1 if gpu else 0,
            max_restarts=self.max_restarts, max_task_retries=self.max_restarts,
        )
        self.actors = [actor_cls.remote(self.args, None if gpu else self.cpus_per_worker) for _ in range(n)]
        self.workers = n
        infos = self._get_all([a.load.remote() for a in self.actors])
        info = {k: v for k, v in infos[0].items() if k != "worker"}
        info["ray"] = {"workers": n, "per_worker": "1 GPU" if gpu else f"{self.cpus_per_worker} CPU",
                       "hosts": sorted({i["worker"]["host"] for i in infos})}
        return info

    def _get_all(self, refs: list) -> list:
        ray = require_ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            raise _user_cause(e) from None

    def map(self, jobs: list[VideoJob], on_result: Callable[[VideoJob, VideoResult], None]) -> list[VideoResult]:
        """Results in job order; each video goes to the next free actor; ``on_result`` as each finishes."""
        ray = require_ray()
        queue = deque(range(len(jobs)))
        free = deque(range(len(self.actors)))
        pending: dict = {}  # ObjectRef -> (actor index, job index)
        attempts = [0] * len(jobs)
        results: list[VideoResult | None] = [None] * len(jobs)
        alive = len(self.actors)
        while queue or pending:
            while queue and free:
                a, i = free.popleft(), queue.popleft()
                attempts[i] += 1
                pending[self.actors[a].run.remote(jobs[i])] = (a, i)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            a, i = pending.pop(ref)
            try:
                res = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise _user_cause(e) from None
            except ray.exceptions.RayActorError as e:
                # Ray's restarts and task retries are used up on this actor: retire it and give the
                # video to another one.
                alive -= 1
                if alive == 0 or attempts[i] > self.max_restarts + 1:
                    raise RuntimeError(f"video {jobs[i].name} (keep {jobs[i].keep:g}): "
                                       f"{'every worker died' if alive == 0 else 'its workers kept dying'}: "
                                       f"{str(e).splitlines()[0]}") from e
                queue.appendleft(i)
                continue
            results[i] = res
            free.append(a)
            on_result(jobs[i], res)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the actors; shut Ray down if this executor started it."""
        if "ray" not in sys.modules:
            return
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def _user_cause(err: Exception) -> BaseException:
    """A worker's user error (bad video, bad prompt) as itself, for the CLI's one-line report; any
    other failure as Ray reported it (with the remote traceback)."""
    from fastsam2.runtime.errors import UserError

    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, UserError) else err


def make_executor(args: argparse.Namespace):
    """RayExecutor when ``args.ray`` is set (``--ray [ADDRESS]``), else the in-process LocalExecutor."""
    from .video_jobs import LocalExecutor

    if getattr(args, "ray", None) is None:
        if args.workers is not None or args.cpus_per_worker != 1:
            from fastsam2.runtime.errors import UsageError

            raise UsageError("--workers and --cpus-per-worker need --ray")
        return LocalExecutor(args)
    require_ray()
    return RayExecutor(args, address=args.ray, workers=args.workers, cpus_per_worker=args.cpus_per_worker)


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS], --workers, --cpus-per-worker (shared by eval and label)."""
    p.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                   help="shard videos over Ray actors (needs fastsam2[ray]); no ADDRESS: a local cluster, "
                        "'auto' or ray://HOST:10001: an existing one")
    p.add_argument("--workers", type=positive(int), default=None,
                   help="with --ray: number of actors (default: one per GPU, or per --cpus-per-worker CPUs)")
    p.add_argument("--cpus-per-worker", type=positive(int), default=1, help="with --ray on CPU: CPUs per actor (default 1)")
