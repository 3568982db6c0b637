"""What checking a model's signature costs when it is loaded (``load(..., trust=...)``), against a plain load.

    python benchmarks/trust_cost.py MODEL

Signs a copy of MODEL with a fresh P-256 key, then loads it 30 times each way, alternated, in one process
(model-signing imported once before), and prints the medians; and, in fresh processes, the first load with
trust (model-signing's import included) against the first plain load.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from medlite.edge import load
from medlite.edge.signature import sign

FIRST = ("import sys, time; t0 = time.perf_counter(); from medlite.edge import load; "
         "load(sys.argv[1], backend='cpu', trust=sys.argv[2:] or None); print(time.perf_counter() - t0)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, private, public = Path(tmp) / "m.tflite", Path(tmp) / "k.pem", Path(tmp) / "k.pub"
        shutil.copy(args.model, model)
        key = ec.generate_private_key(ec.SECP256R1())
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
        sign(model, private)
        load(model, backend="cpu", trust=[public])  # imports model-signing once
        times = {"plain": [], "trust": []}
        for _ in range(args.rounds):
            for name, trust in (("plain", None), ("trust", [public])):
                t0 = time.perf_counter()
                load(model, backend="cpu", trust=trust)
                times[name].append((time.perf_counter() - t0) * 1e3)
        plain, trusted = (statistics.median(times[k]) for k in ("plain", "trust"))
        print(f"model {args.model}: {model.stat().st_size / 1024:.1f} KiB")
        print(f"load, median of {args.rounds}: plain {plain:.2f} ms, with trust {trusted:.2f} ms "
              f"(+{trusted - plain:.2f} ms)")
        first = {}
        for name, extra in (("plain", []), ("trust", [str(public)])):
            runs = [float(subprocess.run([sys.executable, "-c", FIRST, str(model), *extra], capture_output=True,
                                         text=True, check=True).stdout) * 1e3 for _ in range(5)]
            first[name] = statistics.median(runs)
        print(f"first load in a fresh process (imports included), median of 5: plain {first['plain']:.0f} ms, "
              f"with trust {first['trust']:.0f} ms (+{first['trust'] - first['plain']:.0f} ms)")


if __name__ == "__main__":
    main()
