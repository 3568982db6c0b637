"""``medlite predict --engine ray``: an archive's records on a Ray cluster, the same as a local run's.

Ray Data reads the files (``read_binary_files``: local paths, or any filesystem pyarrow reaches, ``s3://``,
``gs://``); a pool of actors, each holding the model loaded once, decodes each file from its bytes with
medlite's own decode engine (``edge.engine.decode``: the intended-use check before decoding, as on a cart) and
scores it through ``Model.classify``; the driver writes the records. Ray Data keeps the order of the files
given (``preserve_order``), so records stream out as soon as every file before them is done, in the order a
local run writes them. The model's bytes go from the driver to the actors through Ray's object store, so the
model file needs to be on the driver only, and it is checked there (contract, signature) before any actor
starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator

import numpy as np

from medlite.edge.errors import MedliteError

FILES_PER_CALL = 16  # files an actor decodes and scores per call: few, so records stream and a lost call is cheap
# Files per block Ray Data reads: by default it reads one file a block, and each block's task then costs more than
# the file (200 DICOMs: 15.3 s against 6.3 s in blocks of 50; benchmarks/RESULTS.md).
FILES_PER_BLOCK = 50
# Reading is I/O: read tasks take no CPU, so that they never wait for the CPUs the actors hold (the pipeline would
# stall), and at most this many run at once (a task without CPUs would otherwise get a process of its own each).
READERS = 2


class ClusterError(MedliteError):
    """The Ray cluster cannot be reached or started."""


class Scorer:
    """One actor: the model loaded once from the driver's bytes; a batch of files in, one JSON line per record
    out (a cine's frames under the frame policy "all" give several)."""

    def __init__(self, model: bytes, options: dict, signed_by: str | None):
        from medlite.edge import load
        from medlite.edge.batch import job_of

        self.model = load(model, **options)
        self.model.signed_by = signed_by  # the driver checked these very bytes against its trusted keys
        self.job = job_of(self.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from medlite.edge.batch import records
        from medlite.edge.engine import decode

        lines = []
        for path, data in zip(batch["path"], batch["bytes"]):
            lines += [json.dumps(rec) for rec in records(self.model, decode(str(path), self.job, bytes(data)))]
        return {"line": np.array(lines, dtype=object)}


def connect(address: str | None, verbose: bool = False) -> bool:
    """Join the cluster at ``address`` ("auto": the one `ray start` began here; host:port; ray://), or start a
    local one with this machine's CPUs, unless this process is connected already; True when this call started
    Ray (and should shut it down). Quiet unless ``verbose``."""
    import ray
    import ray.data

    from medlite.edge.backends.litert import quiet_stderr

    started = not ray.is_initialized()
    if started:
        # Ray's core installs its own SIGTERM handler, which ends the process at once; medlite's (a run stops as
        # on Ctrl-C, says how far it got, and exits 143) is put back after it.
        on_term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
        if not verbose:  # Ray's C++ core logs to standard error; its level is read from the environment at start
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        try:
            with quiet_stderr(not verbose):  # where the core says which level it read
                ray.init(address=address, include_dashboard=False if address is None else None,
                         logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {e}") from None
        if callable(on_term):
            signal.signal(signal.SIGTERM, on_term)
    if not verbose:  # Ray Data's advice on its own tuning (too few blocks for the actors, for a few files)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\..*")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # records in the order of the files given
    context.enable_progress_bars = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
    return started


@contextlib.contextmanager
def session(address: str | None, verbose: bool = False):
    """Connected to the cluster (``connect``) for the block; Ray shut down after it where this started it."""
    import ray

    started = connect(address, verbose)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run(model_bytes: bytes, files: list[str], *, actors: int, options: dict,
        signed_by: str | None = None) -> Iterator[dict]:
    """One record per frame or failure of ``files`` (local paths or URIs), in their order, scored by
    ``actors`` actors of ``options["threads"]`` CPUs each. Ray must be connected (``connect``)."""
    import ray.data

    if not files:
        return
    names = {_as_ray_names(f): f for f in files}  # the path Ray reports -> the name a local run records
    threads = options.get("threads") or 1
    dataset = ray.data.read_binary_files(
        [_for_ray(f) for f in files], include_paths=True,
        num_cpus=0, concurrency=READERS, override_num_blocks=-(-len(files) // FILES_PER_BLOCK))
    scored = dataset.map_batches(  # the model's bytes go once into the object store, where each actor reads them
        Scorer, fn_constructor_args=(model_bytes, options, signed_by), batch_size=FILES_PER_CALL,
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads)
    for row in scored.iter_rows():
        rec = json.loads(row["line"])
        rec["file"] = names.get(rec["file"], rec["file"])
        yield rec


def default_actors(threads: int | None) -> int:
    """As many actors as the cluster has CPUs for, each with ``threads`` of them."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1) // (threads or 1)))


def _for_ray(file: str) -> str:
    """A file as Ray Data reads it: a URI as given, a local path absolute (the workers' working folder is not
    the driver's)."""
    return file if "://" in file else os.path.abspath(file)


def _as_ray_names(file: str) -> str:
    """The path Ray Data reports for a file: absolute for a local one, without its scheme for a URI."""
    return file.split("://", 1)[1] if "://" in file else os.path.abspath(file)
