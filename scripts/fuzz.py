"""Fuzz everything medlite reads from untrusted bytes: DICOM, PNG/JPEG/TIFF, and .tflite models with contracts.

    python scripts/fuzz.py --model MODEL.tflite --data-dir ../shared/data [--inputs 100000] [--shards 2]

hypothesis draws mutations (bit flips, overwritten and inserted chunks, truncation) of real seed files: the
shared DICOMs and PNGs, BUSI images (also re-encoded as JPEG and TIFF), pydicom's own small DICOMs, and the
model itself. Each input runs the path `medlite predict` runs (the per-file decode, the intended-use check,
inference; for models, load and one prediction) in a worker process, so a native crash (a decoder's
segfault) ends the worker, not the harness: the input is saved under build/fuzz-crashes/ and the worker is
replaced. The checks:
- no input crashes its process (or hangs it past a time limit);
- every input ends as a record (ok, rejected, error) or a MedliteError; anything else is counted as
  "unexpected" and reported with its type;
- no patient name, ID or birth date of the seed files appears in any record or error.
The last line reads: fuzz: N inputs, C crashes, L leaks.
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
    """(kind, suffix, bytes, weight) of every seed, and the patient data in them that must never leak."""
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
        for kw in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(ds.get(kw, "") or "").strip()
            if len(value) >= 4:
                patient[value] = kw
        # Large compressed images decode slowly: they are drawn less often, not left out.
        out.append(("image", ".dcm", data, 1 if len(data) > 300_000 else weight))
    for p in sorted((data_dir / "images").glob("*.png")):
        out.append(("image", ".png", p.read_bytes(), 1))
    busi = sorted((data_dir / "busi" / "images").rglob("*.png"))[::40]
    for i, p in enumerate(busi):
        out.append(("image", ".png", p.read_bytes(), 3))
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        suffix = (".jpg", ".tif")[i % 2]
        ok, enc = cv2.imencode(suffix, img)
        assert ok
        out.append(("image", suffix, np.asarray(enc).tobytes(), 3))
    out.append(("model", ".tflite", model.read_bytes(), 12))
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
    from medlite.edge.batch import decode

    model = load(model_path, backend="cpu")
    probe = model.prepare(model.frames(_probe_image())[0])
    tmp = Path(tempfile.mkdtemp(prefix="medlite-fuzz-"))
    conn.send("ready")
    while True:
        try:
            kind, suffix, data = conn.recv()
        except EOFError:
            return
        path = tmp / f"input{suffix}"
        path.write_bytes(data)
        try:
            if kind == "model":
                m = load(data, backend="cpu")
                scores, _, guard, ms = m.infer(probe)
                text, outcome = json.dumps(m.result(scores, ms, ood_score=guard).record()), "ok"
            else:
                status, payload = decode(str(path), model.contract, model.reading_rules())
                if status == "ok":
                    recs = []
                    for frame, x in payload:
                        scores, _, guard, ms = model.infer(x)
                        recs.append(model.result(scores, ms, frame, guard).record())
                    text = json.dumps(recs)
                else:
                    text = json.dumps({"file": str(path), "status": status, "detail": payload})
                outcome = status
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

def shard(index: int, n: int, model: str, data_dir: str, queue) -> None:
    """Run ``n`` hypothesis-drawn inputs against one worker; put the counts (or what went wrong) on ``queue``."""
    try:
        queue.put(_shard(index, n, model, data_dir))
    except BaseException as e:  # the harness itself failed: say so rather than leave the parent waiting
        queue.put(e)
        raise


def _shard(index: int, n: int, model: str, data_dir: str):
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    pool, patient = seeds(Path(data_dir), Path(model))
    weighted = [i for i, s in enumerate(pool) for _ in range(s[3])]
    ops = st.lists(st.tuples(st.sampled_from(("flip", "flip", "overwrite", "insert", "truncate")),
                             st.floats(0, 1), st.binary(min_size=1, max_size=64)), min_size=0, max_size=4)
    ctx = multiprocessing.get_context("spawn")
    stderr_path = Path(tempfile.mkdtemp(prefix="medlite-fuzz-")) / "worker-stderr.txt"
    worker = Worker(ctx, model, stderr_path)
    counts, leaks, crashes = Counter(), [], []
    crash_dir, leak_dir = ROOT / "build" / "fuzz-crashes", ROOT / "build" / "fuzz-leaks"

    @seed(1000 + index)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(weighted), ops)
    def one(i, mutations):
        kind, suffix, data, _ = pool[i]
        blob = _mutate(data, mutations)
        result = worker.run((kind, suffix, blob))
        if result is None:
            counts["crash"] += 1
            crash_dir.mkdir(parents=True, exist_ok=True)
            name = crash_dir / (hashlib.sha256(blob).hexdigest()[:16] + suffix)
            name.write_bytes(blob)
            crashes.append(str(name))
            return
        outcome, text = result
        counts[outcome] += 1
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
    return dict(counts), leaks, crashes + [f"{printed.count(chr(10))} line(s) on standard error"]


def run(inputs: int, model: str, data_dir: str, shards: int = 2) -> tuple[Counter, list, list, int]:
    """(outcomes, leaks, crashed inputs saved, lines the workers printed on standard error)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    per = [inputs // shards + (1 if k < inputs % shards else 0) for k in range(shards)]
    procs = [ctx.Process(target=shard, args=(k, per[k], model, data_dir, queue)) for k in range(shards)]
    for p in procs:
        p.start()
    counts, leaks, crashes, printed = Counter(), [], [], 0
    for _ in procs:
        got = queue.get()
        if isinstance(got, BaseException):
            for p in procs:
                p.kill()
            raise RuntimeError(f"a fuzz shard failed: {got!r}")
        c, lk, cr = got
        counts.update(c)
        leaks += lk
        crashes += cr[:-1]
        printed += int(cr[-1].split()[0])
    for p in procs:
        p.join()
    return counts, leaks, crashes, printed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="a medlite .tflite (its contract drives decoding)")
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=2, help="parallel hypothesis runs, each with its own worker")
    args = ap.parse_args()
    t0 = time.perf_counter()
    counts, leaks, crashes, printed = run(args.inputs, str(args.model.resolve()), str(args.data_dir.resolve()),
                                          args.shards)
    n = sum(counts.values())
    print(f"outcomes: {', '.join(f'{k} {v}' for k, v in counts.most_common())}; {time.perf_counter() - t0:.0f} s; "
          f"{printed} line(s) on the workers' standard error")
    for c in crashes[:20]:
        print(f"crash: {c}")
    for lk in leaks[:20]:
        print(f"leak: {lk}")
    print(f"fuzz: {n} inputs, {counts['crash']} crashes, {len(leaks)} leaks")
    return 0 if not counts["crash"] and not leaks else 1


if __name__ == "__main__":
    sys.exit(main())
