"""Check that every package the arm64 cart image installs has a linux/arm64 binary wheel for its Python.

Usage: python scripts/arm64/resolve_wheels.py [--dest DIR]

Downloads, for manylinux aarch64 and Python 3.11 (the image's), exactly the pinned list in
docker/cart-requirements.txt, binary wheels only; lists every wheel; exits 1 if any is missing.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "docker" / "cart-requirements.txt"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64")


def pinned() -> list[str]:
    return [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()
            if line.split("#")[0].strip()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dest", help="keep the wheels here (default: a temporary folder)")
    ap.add_argument("--python-version", default="3.11")
    args = ap.parse_args()
    if args.dest is None:
        with tempfile.TemporaryDirectory(prefix="medlite-arm64-wheels-") as tmp:
            return check(Path(tmp), args.python_version)
    return check(Path(args.dest), args.python_version)


def check(dest: Path, python_version: str) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
           "--python-version", python_version, "--implementation", "cp", "--dest", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    missing = []
    for req in pinned():
        r = subprocess.run([*cmd, req], capture_output=True, text=True)
        if r.returncode != 0:
            missing.append(req)
            print(f"MISSING  {req}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no wheel'}")
    wheels = sorted(dest.glob("*.whl"))
    for w in wheels:
        print(f"ok       {w.name}")
    not_arm = [w.name for w in wheels if not ("aarch64" in w.name or w.name.endswith("-none-any.whl"))]
    for name in not_arm:
        print(f"NOT ARM  {name}")
    print(f"{len(wheels)} wheel(s) for linux/arm64, Python {python_version}; "
          f"{len(missing)} missing")
    return 1 if missing or not_arm else 0


if __name__ == "__main__":
    raise SystemExit(main())
