"""Batches on a Dask cluster: a whole collection compressed or decompressed, resumable, nothing lost.

    from dask.distributed import Client
    from aecodec import cluster
    summary = cluster.compress(Client("tcp://scheduler:8786"), ["s3://photos/2026/"], "s3://archive/2026/", quality=5)

Needs the `cluster` extra (dask.distributed and fsspec) on the machine that submits and on every
worker. Tasks carry URLs, several files a task; the inputs are listed as a stream and submitted in a
bounded window, so a collection of any size costs the scheduler a few thousand tasks at a time. Each
worker process runs one task at a time, gives ONNX Runtime its share of the host's cores and loads the
weights once (`AecodecWorker`). Before any work, every worker is checked: aecodec version, model,
the extras the options need, that it sees the inputs and that it can write to the output folder.

Exactly once in effect (`aecodec.collection`): an output appears only complete, after its receipt; a
rerun skips an output whose receipt names the same input stamp and options and whose bytes verify.
A worker lost mid-file costs that file's retry; a file whose worker dies on every attempt (memory,
say) is reported as failed after the scheduler's allowed failures (`local`: MAX_RETRIES), and the
rest go on. Which file that was is exact when the scheduler sends a worker one task at a time
(worker-saturation 1.0, as `local` sets); otherwise a task waiting on a worker that dies is charged too.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import sys
import time
import uuid
from asyncio import CancelledError
from collections import deque
from itertools import islice
from typing import Callable, Iterable, Iterator

from . import collection, transcode
from .errors import AecError, require

require("cluster", "aecodec on a cluster", "distributed", "fsspec")

from distributed import Client, KilledWorker, WorkerPlugin, as_completed  # noqa: E402

FILES_PER_TASK = 2  # a task of 2 Kodak-sized files is about a second on a core: cheap to schedule, a short tail
TASKS_PER_WORKER = 4  # tasks submitted and not finished, per worker: the bounded window
MAX_RETRIES = 2  # deaths of a worker on one task before it counts as the task's fault (local clusters)
SUFFIX = {"compress": ".aec", "decompress": ".png"}
# Modules each worker must be able to import for what the options ask.
_NEEDS = {"effort": ("torch", "compressai")}


class ClusterError(AecError):
    """The cluster cannot run the job (a worker that does not match, a path it cannot see); one line."""


def compress(client: Client, sources: Iterable[str], dest: str, quality: float = 4.0, bpp: float | None = None,
             size: int | None = None, psnr: float | None = None, strict: bool = False, effort: int = 0,
             denoise: float | str | None = None, force: bool = False, progress: Callable[[dict], None] | None = None,
             files_per_task: int = FILES_PER_TASK, context: bool | None = None) -> dict:
    """Compress every image of `sources` (folders, globs, list files, files: any fsspec URL) into .aec files
    under `dest`, mirroring the input tree, on the cluster of `client`; the options are those of
    `aecodec compress` (`denoise`: a noise sigma, "auto", or None; `context`: None for the default
    entropy model). Returns the job's summary."""
    target = {k: v for k, v in {"bpp": bpp, "size": size, "psnr": psnr}.items() if v is not None}
    from .codec import DEFAULT_CONTEXT

    options = {"quality": quality, "target": target, "strict": strict, "effort": effort, "denoise": denoise,
               "context": DEFAULT_CONTEXT if context is None else context}
    return run(client, "compress", sources, dest, options, force, progress, files_per_task)


def decompress(client: Client, sources: Iterable[str], dest: str, scale: int = 1, force: bool = False,
               progress: Callable[[dict], None] | None = None, files_per_task: int = FILES_PER_TASK) -> dict:
    """Decompress every .aec file of `sources` into PNGs under `dest` (`scale` 2: through the
    super-resolution head), on the cluster of `client`. Returns the job's summary."""
    return run(client, "decompress", sources, dest, {"scale": scale}, force, progress, files_per_task)


def local(workers: int, memory_limit: str | int = "auto") -> Client:
    """A client of a cluster of `workers` processes on this machine, one thread each, its scheduler set
    as a job of aecodec's wants (LOCAL_CONFIG)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(LOCAL_CONFIG):
        return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   memory_limit=memory_limit, dashboard_address=":0"))


LOCAL_CONFIG = {
    "distributed.scheduler.allowed-failures": MAX_RETRIES,
    # one task on a worker at a time: a worker's death is charged to the task it was running only
    "distributed.scheduler.worker-saturation": 1.0,
    # the workers' statistical profiler samples every thread's stack 100 times a second, and the event
    # loops' watchdog and system monitor wake 50 and 2 times a second: on a laptop's few cores that
    # is time the coding loses (half of the scheduler's CPU, measured here), for nothing a job reads
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


class AecodecWorker(WorkerPlugin):
    """Set on every worker, also those started later: the runtime's threads, and the weights loaded once."""

    name = "aecodec"

    def __init__(self, threads: int):
        self.threads = threads

    def setup(self, worker) -> None:
        from . import codec, runtime

        _restore_malloc()
        runtime.set_threads(self.threads)
        codec.coding_model()


def _restore_malloc() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns glibc's dynamic mmap
    threshold off: every large numpy temporary is then mapped and unmapped anew, and a file codes 16%
    slower (kodim01, one thread, measured here). Set the thresholds glibc would have grown to itself."""
    import ctypes
    import ctypes.util

    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's largest dynamic mmap threshold on 64-bit
    mallopt(m_trim_threshold, 64 * 2**20)  # twice it, as glibc's dynamic rule keeps


def _facts(paths: list[str], dest: str, modules: list[str]) -> dict:
    """What a worker has: aecodec's version, the model, the modules wanted, the paths it sees, whether it
    can write to `dest` (a probe written and removed: an object store's new prefix does not yet exist), its cores."""
    from importlib.util import find_spec

    out = collection.Output(dest)
    probe = posixpath.join(out.root, collection.JOB_DIR, f"probe-{uuid.uuid4().hex}")
    try:
        out.put(probe, b"")
        out.fs.rm_file(probe)
        writes = None
    except OSError as e:
        writes = str(e)
    return {**_identity(), "missing": [m for m in modules if find_spec(m) is None],
            "unseen": [p for p in paths if not collection.exists(p)], "cannot_write": writes,
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1}


def _identity() -> dict:
    """This process's aecodec version, model id and context model id (None: not installed), which every
    worker must share with the job."""
    from importlib.metadata import version

    from . import weights

    context = weights.expected_model_id(weights.CONTEXT_NAME)
    return {"version": version("aecodec"), "model": weights.find_weights().model_id.hex(),
            "context model": context.hex() if context else None}


def _check_workers(client: Client, roots: list[str], dest: str, options: dict, mine: dict) -> dict:
    """Refuse, in one line naming the worker, a cluster that cannot run the job; set up the workers."""
    info = _workers(client)
    if not info:
        raise ClusterError("the cluster has no workers; start some (docs/CLUSTER.md) or use --cluster local:N")
    for address, w in info.items():
        if w["nthreads"] != 1:
            raise ClusterError(f"worker {address} runs {w['nthreads']} threads: start workers with --nthreads 1 "
                               "(aecodec gives each worker process the cores it has)")
    modules = [m for option, needed in _NEEDS.items() if options.get(option) for m in needed]
    facts = client.run(_facts, roots, dest, modules, on_error="return")
    for address, f in facts.items():
        if isinstance(f, BaseException):
            raise ClusterError(f"worker {address} cannot run aecodec: {type(f).__name__}: {f}")
        for key, wanted in mine.items():
            if f[key] != wanted:
                raise ClusterError(f"worker {address} has {key} {f[key]}, this machine {wanted}: install the same "
                                   "aecodec release (and weights) on every worker")
        if f["missing"]:
            raise ClusterError(f"worker {address} lacks {', '.join(f['missing'])}, which "
                               f"{', '.join(o for o in _NEEDS if options.get(o))} needs: pip install 'aecodec[train]' there")
        if f["unseen"]:
            raise ClusterError(f"worker {address} cannot see {f['unseen'][0]}: local paths need --cluster local:N "
                               "or a filesystem that every worker shares")
        if f["cannot_write"]:
            raise ClusterError(f"worker {address} cannot write to {dest}: {f['cannot_write']}")
    per_host: dict[str, int] = {}
    for w in info.values():
        per_host[w["host"]] = per_host.get(w["host"], 0) + 1
    threads = min(max(1, facts[a]["cores"] // per_host[w["host"]]) for a, w in info.items())
    client.register_plugin(AecodecWorker(threads))
    return {"workers": len(info), "runtime_threads": threads}


def _workers(client: Client) -> dict:
    """Every worker's address and description (Dask 2025 and later list only five unless asked)."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return client.scheduler_info(n_workers=-1)["workers"]
    return client.scheduler_info()["workers"]


def _work(batch: list[tuple[str, str]], op: str, options: dict, digest: str, dest: str, force: bool,
          run_id: str, expected: dict) -> list[dict]:
    """One task, on a worker: each (input URL, output path relative to `dest`) coded, skipped or failed.
    `run_id` tells the outputs of this run (a task retried after its worker died) from those of earlier
    ones; `expected` is the release and model of the job, which a worker that joined after the check
    may not have."""
    mine = _worker_identity()
    if mine != expected:
        from distributed import get_worker

        reason = (f"worker {get_worker().address} has aecodec {mine['version']}, model {mine['model']} and context "
                  f"model {mine['context model']}, the job {expected['version']}, {expected['model']} and "
                  f"{expected['context model']}: install the same release there and run again")
        return [{"src": src, "status": "failed", "error": f"{src}: {reason}"} for src, _ in batch]
    out = collection.Output(dest)
    if options.get("effort"):  # torch takes OMP_NUM_THREADS, which Dask sets to 1: give it the worker's cores
        import torch

        from . import runtime

        torch.set_num_threads(runtime.threads())
    return [_one(src, relative, op, options, digest, out, force, run_id) for src, relative in batch]


@functools.lru_cache(maxsize=1)
def _worker_identity() -> dict:
    return _identity()


def _job_identity() -> dict:
    """What the job asks of every worker: this machine's identity (the tests change one side alone)."""
    return _identity()


def _one(src: str, relative: str, op: str, options: dict, digest: str, out: collection.Output, force: bool,
         run_id: str) -> dict:
    start = time.perf_counter()
    try:
        fs, path = collection.filesystem(src)
        source = collection.stamp(fs.info(path))
        receipt = out.receipt(relative)
        if receipt and receipt["src"] != src and collection.exists(receipt["src"]):
            raise transcode.JobError(f"{src}: its output {out.path(relative)} is also {receipt['src']}'s; "
                                     "rename one, or code them apart")
        if out.verifies(receipt, relative, source, digest):
            return {**receipt["result"], "status": "done" if receipt["run"] == run_id else "skipped"}
        if not force and receipt is None and out.exists(relative):
            raise transcode.JobError(f"{out.path(relative)} exists and no aecodec job made it; use --force to replace it")
        data = fs.cat_file(path)
        if op == "compress":
            coded, info = transcode.compress(data, src, options["quality"], options["target"], options["denoise"],
                                             options["effort"], options["strict"], context=options["context"])
        else:
            image, info = transcode.decompress(data, src, options["scale"])
            buffer = io.BytesIO()
            transcode.save_image(image, buffer, "PNG", src)
            coded = buffer.getvalue()
        result = {"src": src, "bytes_in": len(data), "bytes_out": len(coded), "pixels": info["pixels"],
                  "bpp": info["bpp"], "seconds": time.perf_counter() - start}
        if info.get("missed"):  # a rate target no quality meets: the file is written, and the summary says so
            result["missed"] = info["missed"]
        out.record(relative, coded, {"src": src, "source": source, "options": digest, "run": run_id, "result": result})
    except transcode.JobError as e:
        return {"src": src, "status": "failed", "error": str(e)}
    except Exception as e:  # one file's bug or resource error stops nothing else
        return {"src": src, "status": "failed", "error": f"{src}: {type(e).__name__}: {e}"}
    return {**result, "status": "done"}


def _batches(sources: list[str], suffix: str, size: int, failed: list[dict]) -> Iterator[list[tuple[str, str]]]:
    """The inputs as tasks of `size` (input URL, output path) pairs, listed as they come. A second input
    with the same output (a.png and a.jpg, or one name in two sources) and a source that cannot be
    listed are failures, and the rest go on."""
    names = collection.Names()

    def items():
        for spec in sources:
            try:
                for item in collection.inputs(spec):
                    relative = collection.with_suffix(item.relative, suffix)
                    if names.add(relative):
                        yield item.src, relative
                    else:
                        failed.append({"src": item.src, "error": f"{item.src}: its output {relative} is also an "
                                                                 "earlier input's; rename one, or code them apart"})
            except (OSError, ValueError) as e:
                failed.append({"src": spec, "error": f"{spec}: cannot list it: {e}"})

    stream = items()
    while batch := list(islice(stream, size)):
        yield batch


def run(client: Client, op: str, sources: Iterable[str], dest: str, options: dict, force: bool = False,
        progress: Callable[[dict], None] | None = None, files_per_task: int = FILES_PER_TASK) -> dict:
    """The job: `op` ("compress" or "decompress") with `options` on every input of `sources`, outputs under `dest`."""
    start = time.perf_counter()
    sources = [sources] if isinstance(sources, str) else list(sources)
    out = collection.Output(dest)
    expected = _job_identity()
    setup = _check_workers(client, [collection.root(s) for s in sources], dest, options, expected)
    # --strict changes only whether a missed target is written: not a reason to redo a file
    digest = collection.digest({"op": op, **{k: v for k, v in options.items() if k != "strict"},
                                "model": expected["model"], "aecodec": expected["version"],
                                **({"context model": expected["context model"]} if options.get("context") else {})})
    run_id = uuid.uuid4().hex
    attempts = client.run_on_scheduler(_allowed_failures) + 1
    counts = {"done": 0, "skipped": 0, "failed": 0, "listed": 0, "listing": True}
    totals = {"bytes_in": 0, "bytes_out": 0, "pixels": 0, "bpp": 0.0}
    failed: list[dict] = []
    missed: list[dict] = []  # files written at the nearest quality to a target none meets
    window = TASKS_PER_WORKER * setup["workers"]
    batches = _batches(sources, SUFFIX[op], files_per_task, failed)
    retry: deque[list[tuple[str, str]]] = deque()
    running = as_completed()
    submitted: dict = {}

    def submit(batch):
        future = client.submit(_work, batch, op, options, digest, dest, force, run_id, expected, pure=False)
        submitted[future] = batch
        running.add(future)

    def refill():
        while len(submitted) < window:
            if retry:
                submit(retry.popleft())
                continue
            batch = next(batches, None)
            if batch is None:
                counts["listing"] = False
                return
            counts["listed"] += len(batch)
            submit(batch)

    finished = False
    try:
        refill()
        for future in running:
            batch = submitted.pop(future)
            for r in _outcomes(future, batch, out, digest, run_id, attempts, retry):
                if r["status"] == "failed":
                    failed.append({"src": r["src"], "error": r["error"]})
                    continue
                counts[r["status"]] += 1
                if r["status"] == "done":
                    for k in totals:
                        totals[k] += r[k]
                    if r.get("missed"):
                        missed.append({"src": r["src"], "missed": r["missed"]})
            counts["failed"] = len(failed)
            refill()
            if progress:
                progress(dict(counts))
        finished = True
    finally:
        if not finished:  # interrupted: tasks already running still finish; the next run cleans after them
            client.cancel(list(submitted))
        out.clean()
    done = counts["done"]
    seconds = time.perf_counter() - start
    return {"operation": op, "files": done, "skipped": counts["skipped"], "failed": failed, "missed": missed,
            "bytes_in": totals["bytes_in"], "bytes_out": totals["bytes_out"],
            "mean_bpp": totals["bpp"] / done if done else 0.0, "megapixels": totals["pixels"] / 1e6,
            "seconds": seconds, "files_per_second": (done + counts["skipped"]) / seconds, **setup}


def _outcomes(future, batch: list[tuple[str, str]], out: collection.Output, digest: str, run_id: str,
              attempts: int, retry: deque) -> list[dict]:
    """A finished task's outcomes. A task whose workers all died: the files it finished are done (their
    receipts say so), the first one it did not finish is the one they died on, the rest go again."""
    try:
        return future.result()
    except KilledWorker:
        outcomes, pending = [], []
        for src, relative in batch:
            receipt = out.receipt(relative)
            try:
                fs, path = collection.filesystem(src)
                finished = out.verifies(receipt, relative, collection.stamp(fs.info(path)), digest)
            except OSError:  # the input is gone: it goes again, and fails with the reason
                finished = False
            if finished:
                outcomes.append({**receipt["result"], "status": "done" if receipt["run"] == run_id else "skipped"})
            else:
                pending.append((src, relative))
        if pending:
            src = pending[0][0]
            outcomes.append({"src": src, "status": "failed",
                             "error": f"{src}: its worker died on each of {attempts} attempts (out of memory?)"})
        if pending[1:]:
            retry.append(pending[1:])
        return outcomes
    except (Exception, CancelledError) as e:
        return [{"src": src, "status": "failed", "error": f"{src}: task failed: {type(e).__name__}: {e}"}
                for src, _ in batch]


def _allowed_failures(dask_scheduler=None) -> int:
    return dask_scheduler.allowed_failures

