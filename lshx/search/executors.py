"""Where jobs run: in this process, in a process pool, or as Ray tasks.

Each job sets its own thread count, and everything a job computes depends only on its
inputs (seeded), so the same search gives the same result on every executor.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Iterable, Iterator, List, Optional

from lshx.errors import ConfigError

EXECUTORS = ("serial", "process", "ray")


class Executor(ABC):
    threads_per_job: Optional[int] = None

    @abstractmethod
    def map(self, fn: Callable, jobs: List[dict]) -> Iterator:
        """Yields fn(job) for every job, in the order of `jobs`."""

    def close(self) -> None:
        pass


class SerialExecutor(Executor):
    def __init__(self, threads: Optional[int] = None) -> None:
        self.threads_per_job = threads

    def map(self, fn, jobs):
        for j in jobs:
            yield fn(j)


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


class ProcessExecutor(Executor):
    """A pool of spawned processes, one BLAS thread each (no oversubscription)."""

    threads_per_job = 1

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                        initializer=_init_worker)

    def map(self, fn, jobs):
        futures = [self.pool.submit(fn, j) for j in jobs]
        for f in futures:
            yield f.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayExecutor(Executor):
    """Ray core remote tasks: a local cluster by default, or the cluster at `address`."""

    threads_per_job = 1

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs ray: pip install 'lshx[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, ignore_reinit_error=True, log_to_driver=False)

    def map(self, fn, jobs):
        remote = self.ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(j) for j in jobs]
        for r in refs:
            yield self.ray.get(r)


def make_executor(kind: str, workers: int = 2, address: Optional[str] = None,
                  threads: Optional[int] = None) -> Executor:
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
