"""Run medlite predict and medlite env on arm64 under emulation, and compare with x86-64.

Usage (as root, Debian/Ubuntu host): python scripts/arm64/emulated_check.py [--work build/arm64-check]

1. Installs qemu-user-static and debootstrap (apt), builds a minimal arm64 Debian bookworm root with
   Python 3.11 (debootstrap --foreign; the .debs are unpacked with dpkg -x: no chroot, no Docker).
2. Unpacks the arm64 wheels of docker/cart-requirements.txt and medlite's own wheel into one folder.
3. Trains a small model with `medlite demo` on x86-64 (fp32 and int8), runs `medlite predict` on real
   images (the shared DICOMs and PNGs, and 100 PneumoniaMNIST test images) on x86-64 and under
   `qemu-aarch64-static` with QEMU_CPU=cortex-a72, and compares: int8 scores must be bit-identical,
   fp32 within 1e-5. (qemu's default CPU model gives wrong XNNPACK int8 results: an emulator fault.)
Timings under emulation are not performance figures.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "arm64"))
from resolve_wheels import main as resolve  # noqa: E402

MIRROR = "http://deb.debian.org/debian"
FP32_TOLERANCE = 1e-5


def sh(*cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def arm64_root(work: Path) -> Path:
    root = work / "rootfs"
    python = root / "usr" / "bin" / "python3.11"
    if python.exists():
        return root
    if not shutil.which("qemu-aarch64-static") or not shutil.which("debootstrap"):
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", "qemu-user-static", "debootstrap")
    shutil.rmtree(root, ignore_errors=True)
    sh("debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3.11,libpython3.11",
       "bookworm", root, MIRROR)
    for deb in sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb")):
        sh("dpkg", "-x", deb, root, stdout=subprocess.DEVNULL)
    return root


def site_packages(work: Path) -> Path:
    """The arm64 wheels, unpacked (kept between runs while the pinned list stays the same), and medlite's own,
    built from this tree on every run."""
    site = work / "site"
    pins = hashlib.sha256((ROOT / "docker" / "cart-requirements.txt").read_bytes()).hexdigest()
    marker = site / ".complete"
    if not marker.exists() or marker.read_text().strip() != pins:
        shutil.rmtree(site, ignore_errors=True)
        wheels = work / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        sys.argv = ["resolve_wheels", "--dest", str(wheels)]
        if resolve() != 0:
            raise SystemExit("some arm64 wheels are missing")
        for w in wheels.glob("*.whl"):
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
        marker.write_text(pins)
    own = work / "medlite-wheel"
    shutil.rmtree(own, ignore_errors=True)
    sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", own, ROOT)
    shutil.rmtree(site / "medlite", ignore_errors=True)
    for old in site.glob("medlite-*.dist-info"):
        shutil.rmtree(old)
    for w in own.glob("medlite-*.whl"):
        with zipfile.ZipFile(w) as z:
            z.extractall(site)
    return site


def inputs(work: Path, data_dir: Path) -> Path:
    from medlite.measure import datasets

    folder = work / "images"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in [*sorted((data_dir / "dicom").glob("*.dcm")), *sorted((data_dir / "images").glob("*.png"))]:
        shutil.copy(f, folder / f.name)
    test = datasets.load("pneumoniamnist", data_dir).splits["test"]
    for i in range(100):
        cv2.imwrite(str(folder / f"pneumoniamnist_test_{i:03d}.png"), test.images[i])
    return folder


def predict_x86(model: Path, images: Path, out: Path):
    # Outside the checkout, for the same reason as below.
    sh(sys.executable, "-m", "medlite", "predict", model, images, "--quiet", "--backend", "cpu", "--out", out,
       cwd=ROOT.parent)


def predict_arm(root: Path, site: Path, model: Path, images: Path, out: Path, *args):
    env = {**os.environ, "QEMU_CPU": "cortex-a72", "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    python = [shutil.which("qemu-aarch64-static"), "-L", root, root / "usr" / "bin" / "python3.11"]
    # Started outside the checkout: `python -m` puts the current folder first on sys.path, and the checkout's
    # medlite/ folder would shadow the installed wheel.
    cwd = root.parent
    if args:
        return sh(*python, "-m", "medlite", *args, env=env, capture_output=True, text=True, cwd=cwd)
    # Decoding in the main process: under qemu-user (2026-12) the spawned workers' resource tracker dies and the
    # pool neither starts nor fails (a 108-image run wrote nothing in 13 minutes; with --workers 0 it takes 20 s).
    # What is compared is the model's output, which the pool does not touch.
    sh(*python, "-m", "medlite", "predict", model, images, "--quiet", "--backend", "cpu", "--workers", "0",
       "--out", out, env=env, cwd=cwd)


def load(path: Path) -> dict:
    return {(Path(r["file"]).name, r.get("frame")): r for r in map(json.loads, path.read_text().splitlines())}


def compare(x86: dict, arm: dict, exact: bool) -> dict:
    assert x86.keys() == arm.keys(), "different files on the two machines"
    worst, same_label, identical = 0.0, 0, 0
    guard_worst, same_guard = 0.0, 0  # the guard's score (float32 ops in the graph) and its decision
    for k, a in x86.items():
        b = arm[k]
        assert a["status"] == b["status"] != "error", f"{k}: {a.get('error') or b.get('error')}"
        if a["status"] == "rejected":  # outside the intended use on both: the same reason, nothing scored
            assert a["reason"] == b["reason"], k
            same_label += 1
            identical += 1
            same_guard += 1
            continue
        diff = max(abs(a["scores"][c] - b["scores"][c]) for c in a["scores"])
        worst = max(worst, diff)
        same_label += a["label"] == b["label"]
        identical += a["scores"] == b["scores"]
        same_guard += a["in_distribution"] == b["in_distribution"]
        if a["ood_score"] is not None:
            guard_worst = max(guard_worst, abs(a["ood_score"] - b["ood_score"]) / max(a["ood_score"], 1e-12))
    ok = (identical == len(x86) if exact else worst <= FP32_TOLERANCE) and same_guard == len(x86)
    return {"n": len(x86), "same_label": same_label, "bit_identical": identical, "max_abs_diff": worst,
            "same_guard_decision": same_guard, "guard_max_rel_diff": guard_worst, "ok": ok}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(ROOT / "build" / "arm64-check"))
    ap.add_argument("--data-dir", default=os.environ.get("MEDLITE_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    work, data_dir = Path(args.work).resolve(), Path(args.data_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    root = arm64_root(work)
    site = site_packages(work)
    run = work / "demo"
    if not (run / "models" / "int8.tflite").exists():
        sh(sys.executable, "-m", "medlite", "demo", "--data-dir", data_dir, "--out", run, "--epochs", "3",
           "--variants", "fp32,int8", "--runs", "200", cwd=ROOT.parent)  # outside the checkout, as below
    images = inputs(work, data_dir)
    env_out = predict_arm(root, site, None, None, None, "env", "--json")
    arm_env = json.loads(env_out.stdout)
    print(f"arm64 env: machine {arm_env['device']['machine']}, runtime {arm_env['device']['runtime']}, "
          f"cpu backend available: {arm_env['backends']['cpu']['available']}")
    results = {"arm64_env": {k: arm_env["device"][k] for k in ("machine", "runtime", "python")}}
    for variant, exact in (("int8", True), ("fp32", False)):
        model = run / "models" / f"{variant}.tflite"
        x86_out, arm_out = work / f"{variant}_x86_64.jsonl", work / f"{variant}_arm64.jsonl"
        predict_x86(model, images, x86_out)
        predict_arm(root, site, model, images, arm_out)
        results[variant] = compare(load(x86_out), load(arm_out), exact)
        r = results[variant]
        print(f"{variant}: {r['n']} predictions, {r['bit_identical']} bit-identical, same label {r['same_label']}, "
              f"max |score difference| {r['max_abs_diff']:.3g}, same guard decision {r['same_guard_decision']} "
              f"(its score within {r['guard_max_rel_diff']:.2g} relative) -> {'OK' if r['ok'] else 'MISMATCH'}")
    (work / "result.json").write_text(json.dumps(results, indent=1))
    return 0 if all(results[v]["ok"] for v in ("int8", "fp32")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
