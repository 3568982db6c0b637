"""What medlite does with randomly damaged copies of a real model: refused, or the original's answers.

    python benchmarks/damaged_models.py medlite-out/models/int8.tflite --data-dir ../shared/data [--copies 150]

Each copy (bit flips, overwritten chunks, truncation at a random place; a third of each) is loaded and run
on a few real images in a fresh process, as `medlite predict` would: a copy is "refused" (exit 3, the
error saying the file is damaged), "same" (it runs and every score equals the original's: damage the JSON
of the contract absorbs, such as a changed space) or "DIFFERENT" (it runs and answers otherwise: must not
happen). A process that dies of a signal is counted as a crash.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def damaged(data: bytes, k: int, rng) -> bytes:
    b = bytearray(data)
    if k % 3 == 0:
        for pos in rng.integers(0, len(b), rng.integers(1, 9)):
            b[pos] ^= 1 << int(rng.integers(0, 8))
    elif k % 3 == 1:
        size = int(rng.integers(16, 257))
        at = int(rng.integers(0, len(b) - size))
        b[at : at + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    else:
        b = b[: int(rng.integers(8, len(b)))]
    return bytes(b)


def predict(model: Path, images: list[str], out: Path, cwd: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "medlite", "predict", str(model), *images, "--out", str(out), "-q",
                        "--workers", "0", "--backend", "cpu"], capture_output=True, text=True, cwd=cwd)
    return r.returncode, r.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.model, args.data_dir = args.model.resolve(), args.data_dir.resolve()
    images = [str(p) for p in sorted((args.data_dir / "images").glob("*.png"))[:2]]
    data, rng, outcomes, kinds = args.model.read_bytes(), np.random.default_rng(args.seed), Counter(), Counter()
    with tempfile.TemporaryDirectory() as tmp:
        rc, err = predict(args.model, images, Path(tmp) / "ref.jsonl", tmp)
        assert rc == 0, err
        expected = [json.loads(line)["scores"] for line in (Path(tmp) / "ref.jsonl").read_text().splitlines()]
        for k in range(args.copies):
            path, out = Path(tmp) / f"d{k}.tflite", Path(tmp) / f"d{k}.jsonl"
            path.write_bytes(damaged(data, k, rng))
            rc, err = predict(path, images, out, tmp)
            if rc < 0:
                outcome = "crash"
            elif rc == 3:
                outcome = "refused"
                kinds[next((w for w in ("weights do not match", "truncated", "not valid JSON", "not a TensorFlow",
                                        "corrupt", "malformed", "invalid") if w in err), "other")] += 1
            elif rc == 0:
                got = [json.loads(line)["scores"] for line in out.read_text().splitlines()]
                outcome = "same" if got == expected else "DIFFERENT"
            else:
                outcome = f"exit {rc}"
            outcomes[outcome] += 1
    print(f"{args.copies} damaged copies of {args.model}: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    print("refusals by message: " + ", ".join(f"{k!r} {v}" for k, v in kinds.most_common()))


if __name__ == "__main__":
    main()
