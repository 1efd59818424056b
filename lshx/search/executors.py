"""Where jobs run: in this process, in a process pool, or as Ray tasks.

Every job carries its thread count (the search's, SearchConfig.threads) and sets it itself,
and everything a job computes depends only on its inputs (seeded), so the same search gives
the same result on every executor, whatever OMP_NUM_THREADS the shell has.
"""
from __future__ import annotations

from collections import Counter
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from lshx.errors import ConfigError

EXECUTORS = ("serial", "process", "ray")


class Executor(ABC):
    # the thread count of jobs that carry none (a search's jobs always carry one)
    threads_per_job: Optional[int] = None
    kind = "?"

    @abstractmethod
    def map(self, fn: Callable, jobs: List[dict]) -> Iterator:
        """Yields fn(job) for every job, in the order of `jobs`."""

    def map_unordered(self, fn: Callable, jobs: List[dict]) -> Iterator[Tuple[int, object]]:
        """Yields (i, fn(jobs[i])) for every job as it finishes, so that a caller can store each
        result at once instead of behind a slower job (default: in order)."""
        return enumerate(self.map(fn, jobs))

    def describe(self) -> dict:
        """Where the jobs ran, for the command's output."""
        return {"kind": self.kind}

    def check(self, threads: int) -> None:
        """Raises ConfigError when jobs of `threads` threads cannot run here."""

    def close(self, abort: bool = False) -> None:
        """Frees the workers; abort=True (an error or a signal is on its way out) stops the jobs
        in flight instead of waiting for them (each loses at most the epoch it was in)."""


class SerialExecutor(Executor):
    kind = "serial"

    def __init__(self, threads: Optional[int] = None) -> None:
        self.threads_per_job = threads

    def map(self, fn, jobs):
        for j in jobs:
            yield fn(j)


def _exit_with_parent(parent: int, period_s: float = 1.0) -> None:
    """A worker's watchdog: exits the worker as soon as its parent is gone (a driver killed by
    SIGKILL runs no cleanup; its workers, reparented, would otherwise train on, holding memory
    and, on a GPU, the device). Finished epochs are in the checkpoints already."""
    def watch():
        while True:
            time.sleep(period_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="lshx-parent-watch", daemon=True).start()


def _init_worker(parent: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: tuple = ()) -> None:
    if parent is not None:
        _exit_with_parent(parent)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def _check_workers(workers) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")


class ProcessExecutor(Executor):
    """A pool of spawned processes (one BLAS thread each until a job sets its own count)."""

    threads_per_job = 1
    kind = "process"

    def __init__(self, workers: int, initializer: Optional[Callable] = None, initargs: tuple = ()) -> None:
        """initializer(*initargs) runs once in each worker after its thread count is set (a
        replay loads its table there)."""
        _check_workers(workers)
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                        initializer=_init_worker, initargs=(os.getpid(), initializer, initargs))

    def map(self, fn, jobs):
        futures = [self.pool.submit(fn, j) for j in jobs]
        for f in futures:
            yield f.result()

    def map_unordered(self, fn, jobs):
        futures = {self.pool.submit(fn, j): i for i, j in enumerate(jobs)}
        for f in as_completed(futures):
            yield futures[f], f.result()

    def describe(self) -> dict:
        return {"kind": self.kind, "workers": self.workers}

    def close(self, abort: bool = False) -> None:
        if abort:  # (the pool keeps its processes in a private dict; there is no public way to stop a job)
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.terminate()
        self.pool.shutdown(cancel_futures=True)


def _on_node(fn: Callable, job: dict):
    """A Ray task: fn(job) and the id of the Ray node it ran on (also given to the job, which
    records it with each epoch in the candidate's checkpoint)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    return fn({**job, "node": node}), node


class RayExecutor(Executor):
    """Ray core remote tasks: a local cluster by default (`workers` CPUs), or the cluster at
    `address` (HOST:PORT of its head). Each task asks for as many CPUs as the job has threads.
    Jobs read and write their checkpoints and data by absolute path: on a cluster of several
    machines those must be on a filesystem that every node sees (README: Scaling out)."""

    threads_per_job = 1
    kind = "ray"

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs ray: pip install 'lshx[ray]' (make setup installs it)") from None
        if workers is not None:
            _check_workers(workers)
        self.ray, self.address = ray, address
        self.jobs_per_node: Dict[str, int] = Counter()
        self._owns = not ray.is_initialized()  # shut down at close what this executor started
        if self._owns:
            try:
                quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
                if address:
                    ray.init(address=address, **quiet)
                else:
                    ray.init(num_cpus=workers, **quiet)
            except Exception as exc:  # a wrong address, a cluster of another ray version, ...
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"cannot start or join {where}: {msg}") from None

    def check(self, threads: int) -> None:
        cpus = [n.get("Resources", {}).get("CPU", 0) for n in self.ray.nodes() if n.get("Alive")]
        if not any(c >= threads for c in cpus):
            raise ConfigError(f"--threads {threads}: every job asks Ray for {threads} CPUs on one node, and no node "
                              f"of this cluster has that many (CPUs per node: {', '.join(f'{c:g}' for c in cpus)})")

    def _submit(self, fn, jobs) -> list:
        jobs = list(jobs)
        threads = max([int(j.get("threads") or 1) for j in jobs] or [1])
        remote = self.ray.remote(num_cpus=threads)(_on_node)
        return [remote.remote(fn, j) for j in jobs]

    def _get(self, ref):
        out, node = self.ray.get(ref)
        self.jobs_per_node[node] += 1
        return out

    def map(self, fn, jobs):
        for r in self._submit(fn, jobs):
            yield self._get(r)

    def map_unordered(self, fn, jobs):
        refs = self._submit(fn, jobs)
        index = {r: i for i, r in enumerate(refs)}
        pending = refs
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield index[done[0]], self._get(done[0])

    def describe(self) -> dict:
        return {"kind": self.kind, "address": self.address, "jobs_per_node": dict(self.jobs_per_node)}

    def close(self, abort: bool = False) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()  # (stops this driver's tasks either way)


def make_executor(kind: str, workers: int = 2, address: Optional[str] = None,
                  threads: Optional[int] = None) -> Executor:
    """threads: the default of jobs that carry no thread count (a search's always do)."""
    if address and kind != "ray":
        raise ConfigError(f"--ray-address is for --executor ray, not {kind}")
    _check_workers(workers)
    if kind == "serial":
        return SerialExecutor(threads)
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, workers)
    raise ConfigError(f"unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")


def run_all(executor: Executor, fn: Callable, jobs: Iterable[dict]) -> list:
    jobs = list(jobs)
    for j in jobs:
        if executor.threads_per_job and not j.get("threads"):
            j["threads"] = executor.threads_per_job
    return list(executor.map(fn, jobs))
