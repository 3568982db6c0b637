"""Fuzz everything medlite reads from untrusted bytes: DICOM, PNG/JPEG/TIFF, and .tflite models with contracts.

    python scripts/fuzz.py --model MODEL.tflite --data-dir ../shared/data [--inputs 100000] [--shards 2] [--seed N]

hypothesis draws mutations (bit flips, overwritten and inserted chunks, truncation) of real seed files: the
shared DICOMs and PNGs, BUSI images (also re-encoded as JPEG and TIFF), pydicom's own small DICOMs, and the
model itself. Each input runs the path `medlite predict` runs (the decode engine's per-file decode at the
model's input size, so JPEG 2000 takes its reduced-resolution path; the intended-use check, or for a share of
the inputs none, as under --ignore-intended-use, so that DICOMs of other modalities reach their decoders too;
inference; for models, load and one prediction) in a worker process, so a native crash (a decoder's
segfault) ends the worker, not the harness: the input is saved under build/fuzz-crashes/ and the worker is
replaced. The checks:
- no input crashes its process (or hangs it past a time limit);
- every input ends as a record (ok, rejected, error) or a MedliteError; anything else is counted as
  "unexpected" and reported with its type;
- no patient name, ID or birth date of the seed files appears in any record or error.
The run fails on any crash, leak or unexpected outcome, and when fewer inputs ran than asked for. It prints
its seed first; --seed repeats a run. The last line reads: fuzz: N inputs, C crashes, L leaks, U unexpected.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60  # one input's limit before its worker counts as hung
PYDICOM_SEEDS = ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "examples_palette.dcm",
                 "examples_jpeg2k.dcm", "SC_rgb_rle.dcm", "JPEG-lossy.dcm", "dicomdirtests/77654033/CR1/6154")


def seeds(data_dir: Path, model: Path) -> tuple[list[tuple[str, str, bytes, int]], dict[str, str]]:
    """(kind, suffix, bytes, weight, whether it is a greyscale JPEG 2000 DICOM that decodes at reduced resolution)
    of every seed, and the patient data in them that must never leak."""
    import cv2
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    out, patient = [], {}
    dicoms = [(p, 1) for p in sorted((data_dir / "dicom").glob("*.dcm"))]
    dicoms += [(Path(get_testdata_file(n, download=False)), 4) for n in PYDICOM_SEEDS]
    for path, weight in dicoms:
        data = path.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        if ds.get("Modality") in ("CR", "DX"):  # the shared chest films are of adults: made 4 years old, so that
            full = pydicom.dcmread(io.BytesIO(data))  # the paediatric model's age rule lets them reach the decoders
            full.PatientAge = "004Y"
            buf = io.BytesIO()
            full.save_as(buf)
            data = buf.getvalue()
        for kw in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(ds.get(kw, "") or "").strip()
            if len(value) >= 4:
                patient[value] = kw
        # Chest X-rays are what the model's intended use lets through to the decoders (JPEG 2000 at reduced
        # resolution among them): drawn most often.
        chest = ds.get("Modality") in ("CR", "DX")
        reducible = str(ds.file_meta.get("TransferSyntaxUID", "")).startswith("1.2.840.10008.1.2.4.9") and \
            ds.get("PhotometricInterpretation") in ("MONOCHROME1", "MONOCHROME2") and int(ds.get("Rows", 0)) > 56
        out.append(("image", ".dcm", data, 8 if chest else weight, reducible))
    for p in sorted((data_dir / "images").glob("*.png")):
        out.append(("image", ".png", p.read_bytes(), 1, False))
    busi = sorted((data_dir / "busi" / "images").rglob("*.png"))[::40]
    for i, p in enumerate(busi):
        out.append(("image", ".png", p.read_bytes(), 3, False))
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        suffix = (".jpg", ".tif")[i % 2]
        ok, enc = cv2.imencode(suffix, img)
        assert ok
        out.append(("image", suffix, np.asarray(enc).tobytes(), 3, False))
    out.append(("model", ".tflite", model.read_bytes(), 12, False))
    return out, patient


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, where, blob in ops:
        if not b:
            break
        at = int(where * (len(b) - 1))
        if kind == "flip":
            b[at] ^= 1 << (blob[0] % 8 if blob else 0)
        elif kind == "overwrite":
            b[at : at + len(blob)] = blob
        elif kind == "insert":
            b[at:at] = blob
        elif kind == "truncate":
            del b[at:]
    return bytes(b)


# ------------------------------------------------------------------------------------------------ the worker

def _worker(conn, model_path: str, stderr_path: str) -> None:
    """Runs inputs until the pipe closes; a native crash ends this process, which the harness sees. Its
    standard error goes to ``stderr_path``, which the harness searches for patient data too."""
    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(err, 2)
    sys.stderr = open(2, "w", closefd=False)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from medlite.edge import MedliteError, load
    from medlite.edge.batch import job_of
    from medlite.edge.engine import decode

    model = load(model_path, backend="cpu")
    jobs = {False: job_of(model), True: job_of(load(model_path, backend="cpu", ignore_intended_use=True))}
    probe = model.prepare(model.frames(_probe_image())[0])
    tmp = Path(tempfile.mkdtemp(prefix="medlite-fuzz-"))
    conn.send("ready")
    while True:
        try:
            kind, suffix, data, ignore_intended_use = conn.recv()
        except EOFError:
            return
        path = tmp / f"input{suffix}"
        path.write_bytes(data)
        try:
            if kind == "model":
                m = load(data, backend="cpu")
                text, outcome = json.dumps(m.classify(probe).record()), "ok"
            else:
                decoded = decode(str(path), jobs[ignore_intended_use])
                if decoded.status == "ok":
                    text = json.dumps([model.classify(x, frame).record() for frame, x in decoded.frames])
                else:
                    text = json.dumps({"file": str(path), "status": decoded.status, "detail": decoded.problem})
                outcome = decoded.status
        except MedliteError as e:
            text, outcome = str(e), "refused"
        except Exception as e:  # a failure that is not medlite's clear error: reported, and the run goes on
            text, outcome = f"{type(e).__name__}: {e}", f"unexpected {type(e).__name__}"
        conn.send((outcome, text))


def _probe_image():
    import numpy as np

    return np.full((64, 64), 128, dtype=np.uint8)


class Worker:
    def __init__(self, ctx, model: str, stderr_path: Path):
        self.ctx, self.model, self.stderr_path = ctx, model, stderr_path
        self._start()

    def _start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.model, str(self.stderr_path)), daemon=True)
        self.proc.start()
        child.close()
        # A worker that cannot start is the harness's failure, not an input's crash.
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError(f"the fuzz worker did not start (exit code {self.proc.exitcode})")

    def run(self, item) -> tuple[str, str] | None:
        """(outcome, text), or None when the input crashed or hung the worker (which is then replaced)."""
        try:
            self.conn.send(item)
            if self.conn.poll(TIMEOUT_S):
                return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.proc.kill()
        self.proc.join()
        self._start()
        return None

    def close(self):
        self.conn.close()
        self.proc.join(5)


# ------------------------------------------------------------------------------------------------ a shard

def shard(index: int, n: int, model: str, data_dir: str, queue, seed: int = 0) -> None:
    """Run ``n`` hypothesis-drawn inputs against one worker; put the counts (or what went wrong) on ``queue``."""
    try:
        queue.put(_shard(index, n, model, data_dir, seed))
    except BaseException as e:  # the harness itself failed: say so rather than leave the parent waiting
        queue.put(e)
        raise


def _shard(index: int, n: int, model: str, data_dir: str, seed_value: int):
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    pool, patient = seeds(Path(data_dir), Path(model))
    weighted = [i for i, s in enumerate(pool) for _ in range(s[3])]
    ops = st.lists(st.tuples(st.sampled_from(("flip", "flip", "overwrite", "insert", "truncate")),
                             st.floats(0, 1), st.binary(min_size=1, max_size=64)), min_size=0, max_size=4)
    ctx = multiprocessing.get_context("spawn")
    stderr_path = Path(tempfile.mkdtemp(prefix="medlite-fuzz-")) / "worker-stderr.txt"
    worker = Worker(ctx, model, stderr_path)
    counts, leaks, crashes, reduced = Counter(), [], [], 0
    crash_dir, leak_dir = ROOT / "build" / "fuzz-crashes", ROOT / "build" / "fuzz-leaks"

    @seed(seed_value + index)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    # One input in four is read with the intended use ignored, as `--ignore-intended-use` reads it.
    @given(st.sampled_from(weighted), ops, st.sampled_from((False, False, False, True)))
    def one(i, mutations, ignore_intended_use):
        nonlocal reduced
        kind, suffix, data, _, reducible = pool[i]
        blob = _mutate(data, mutations)
        result = worker.run((kind, suffix, blob, ignore_intended_use))
        if result is None:
            counts["crash"] += 1
            crash_dir.mkdir(parents=True, exist_ok=True)
            name = crash_dir / (hashlib.sha256(blob).hexdigest()[:16] + suffix)
            name.write_bytes(blob)
            crashes.append(str(name))
            return
        outcome, text = result
        counts[outcome] += 1
        reduced += reducible and outcome == "ok"
        leaked = [field for value, field in patient.items() if value in text]
        if leaked:
            leak_dir.mkdir(parents=True, exist_ok=True)
            name = leak_dir / (hashlib.sha256(blob).hexdigest()[:16] + suffix)
            name.write_bytes(blob)  # the input, to reproduce; the harness prints which field, never its value
            leaks.append(f"{name}: {outcome}: a seed's {', '.join(sorted(set(leaked)))} in the output")

    one()
    worker.close()
    printed = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    leaks += [f"standard error: a seed's {field}" for value, field in patient.items() if value in printed]
    return dict(counts), reduced, leaks, crashes + [f"{printed.count(chr(10))} line(s) on standard error"]


def run(inputs: int, model: str, data_dir: str, shards: int = 2, seed: int = 1000) -> tuple[Counter, int, list, list,
                                                                                           int]:
    """(outcomes, JPEG 2000 images decoded at reduced resolution, leaks, crashed inputs saved, lines the workers
    printed on standard error); shard k draws its inputs from ``seed + k``."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    per = [inputs // shards + (1 if k < inputs % shards else 0) for k in range(shards)]
    procs = [ctx.Process(target=shard, args=(k, per[k], model, data_dir, queue, seed)) for k in range(shards)]
    for p in procs:
        p.start()
    counts, reduced, leaks, crashes, printed = Counter(), 0, [], [], 0
    for _ in procs:
        got = queue.get()
        if isinstance(got, BaseException):
            for p in procs:
                p.kill()
            raise RuntimeError(f"a fuzz shard failed: {got!r}")
        c, rd, lk, cr = got
        counts.update(c)
        reduced += rd
        leaks += lk
        crashes += cr[:-1]
        printed += int(cr[-1].split()[0])
    for p in procs:
        p.join()
    return counts, reduced, leaks, crashes, printed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="a medlite .tflite (its contract drives decoding)")
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=2, help="parallel hypothesis runs, each with its own worker")
    ap.add_argument("--seed", type=int, help="repeat a run: the seed it printed (default: a new one)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"fuzz: seed {seed} (repeat with --seed {seed})", flush=True)
    t0 = time.perf_counter()
    counts, reduced, leaks, crashes, printed = run(args.inputs, str(args.model.resolve()), str(args.data_dir.resolve()),
                                          args.shards, seed)
    n = sum(counts.values())
    unexpected = sum(v for k, v in counts.items() if k.startswith("unexpected"))
    print(f"outcomes: {', '.join(f'{k} {v}' for k, v in counts.most_common())}; {time.perf_counter() - t0:.0f} s; "
          f"{printed} line(s) on the workers' standard error; {reduced} ok result(s) from the greyscale "
          "JPEG 2000 seeds, decoded at the model's input size (reduced resolution)")
    for c in crashes[:20]:
        print(f"crash: {c}")
    for lk in leaks[:20]:
        print(f"leak: {lk}")
    if n < args.inputs:
        print(f"fuzz: only {n} of the {args.inputs} inputs asked for ran")
    print(f"fuzz: {n} inputs, {counts['crash']} crashes, {len(leaks)} leaks, {unexpected} unexpected")
    return 0 if not counts["crash"] and not leaks and not unexpected and n >= args.inputs else 1


if __name__ == "__main__":
    sys.exit(main())
