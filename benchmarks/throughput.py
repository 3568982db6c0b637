"""Folder throughput, streaming and stopping of ``medlite predict``, against the loop a user would write.

    python benchmarks/throughput.py MODEL --data-dir ../shared/data

1. Decoding shortcuts against full decoding, on every shared DICOM and the copies below: the model input's
   largest difference, the decision and the score difference.
2. A folder of 200 DICOMs: the hand-written loop (pydicom ``dcmread`` + ``pixel_array``, the middle frame,
   min-max, an OpenCV area resize, a raw LiteRT interpreter, one process) against ``medlite predict
   --workers 2``, each in a fresh process, alternated, in one run. Two folders: the cart mix (chest X-rays
   and ultrasound, which a chest model rejects before decoding) and chest X-rays only.
3. Peak memory of ``medlite predict`` on 200 and on 2,000 files (the main process, and it with its workers).
4. SIGINT and SIGTERM 5 s into a 2,000-file run: how long it takes to stop, the exit code, the lines written.

Sources (cycled): the shared CR chest (JPEG 2000, 1955x1841) and DX chest (1024x1024), the same CR
transcoded to JPEG lossless (GDCM) and the DX to JPEG 2000 lossless (pydicom + OpenJPEG), the shared RLE and
RGB ultrasound, and pydicom's own ultrasound JPEG 2000 and 30-frame JPEG cine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
from paediatric import make_child

CHEST = ("cr_chest_j2k.dcm", "cr_chest_jpeg_lossless.dcm", "dx_chest.dcm", "dx_chest_j2k_lossless.dcm")
ULTRASOUND = ("us_rle.dcm", "us_rgb.dcm", "us_j2k.dcm", "us_cine_jpeg_30_frames.dcm")

HAND_LOOP = textwrap.dedent("""
    import sys, time
    import cv2, numpy as np, pydicom
    from ai_edge_litert.interpreter import Interpreter

    model, files = sys.argv[1], sorted(sys.argv[2:])
    interp = Interpreter(model_path=model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    _, h, w, _ = inp["shape"]
    scale, zero = inp["quantization"]
    results = []
    for f in files:
        ds = pydicom.dcmread(f)
        a = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            a = a[len(a) // 2]
        if a.ndim == 3:
            a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        a = a.astype(np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
        x = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)
        if scale:
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x[None, :, :, None])
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    print(len(results))
""")


def build_sources(data_dir: Path, into: Path) -> dict[str, Path]:
    """The eight source files, written under ``into``."""
    import gdcm
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEG2000Lossless

    dicom = data_dir / "dicom"
    into.mkdir(parents=True, exist_ok=True)
    out = {name: into / name for name in CHEST + ULTRASOUND}
    shutil.copy(dicom / "RG1_J2KI.dcm", out["cr_chest_j2k.dcm"])
    shutil.copy(dicom / "nih_cxr14_dx_nofinding.dcm", out["dx_chest.dcm"])
    shutil.copy(dicom / "OBXXXX1A_rle.dcm", out["us_rle.dcm"])
    shutil.copy(dicom / "US1_UNCR.dcm", out["us_rgb.dcm"])
    shutil.copy(get_testdata_file("examples_jpeg2k.dcm"), out["us_j2k.dcm"])
    shutil.copy(get_testdata_file("examples_ybr_color.dcm"), out["us_cine_jpeg_30_frames.dcm"])
    reader = gdcm.ImageReader()
    reader.SetFileName(str(dicom / "RG1_J2KI.dcm"))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(out["cr_chest_jpeg_lossless.dcm"]))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    ds = pydicom.dcmread(out["dx_chest.dcm"])
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.save_as(out["dx_chest_j2k_lossless.dcm"])
    for f in out.values():
        make_child(f)  # the paediatric model answers them, as the hand-written loop does
    return out


def make_folder(sources: list[Path], folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, src in zip(range(n), itertools.cycle(sources)):
        os.link(src, folder / f"{i:04d}_{src.name}")
    return folder


def tolerance(model_path: Path, sources: dict[str, Path], data_dir: Path) -> list[dict]:
    """Reduced against full decoding, through medlite's own reader and preprocessing."""
    from medlite.edge import load
    from medlite.edge.preprocess import prepare

    files = sorted({*sources.values(), *(data_dir / "dicom").glob("*.dcm")})
    rows = []
    for f in files:
        got = {}
        for full in (True, False):
            # the ultrasound files too: the shortcut must hold for every file
            model = load(str(model_path), ignore_intended_use=True, full_decode=full)
            frame = model.frames(str(f))[0]
            x = prepare(frame.pixels, model.contract.preprocess, model.contract.input)
            t0 = time.perf_counter()
            for _ in range(3):
                model.frames(str(f))
            ms = (time.perf_counter() - t0) / 3 * 1000
            got[full] = (model.predict(str(f)), x, frame.pixels.shape, ms)
        (pf, xf, sf, tf), (pr, xr, sr, tr) = got[True], got[False]
        rows.append({"file": f.name, "decoded": f"{sf[1]}x{sf[0]} -> {sr[1]}x{sr[0]}", "full_ms": tf,
                     "medlite_ms": tr, "max_input_diff_255": float(np.abs(xf - xr).max() * 255),
                     "same_label": pf.label == pr.label, "score_diff": abs(pf.score - pr.score)})
    return rows


def _tree_rss(root: int) -> tuple[int, int]:
    """Resident memory (bytes) of ``root`` and of it with its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(d))
        rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return rss.get(root, 0), total


def run_predict(model: Path, folder: Path, out: Path, workers: int = 2, stop_after: float | None = None,
                sig: int = signal.SIGINT) -> dict:
    """One ``medlite predict`` in a fresh process: wall time, peak memory and, when stopped, how it stopped."""
    cmd = [sys.executable, "-m", "medlite", "predict", str(model), str(folder), "--quiet", "--out", str(out),
           "--workers", str(workers)]
    t0 = time.perf_counter()
    # A shell that starts this script in the background hands it SIGINT ignored, and a child inherits that:
    # give medlite the default disposition, as a terminal's foreground job has.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    peak = [0, 0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            main, tree = _tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], main), max(peak[1], tree)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    signalled = None
    if stop_after is not None:
        time.sleep(stop_after)
        proc.send_signal(sig)
        signalled = time.perf_counter()
    err = proc.communicate()[1]
    end = time.perf_counter()
    stop.set()
    sampler.join()
    lines = out.read_text().splitlines() if out.exists() else []
    valid = sum(1 for line in lines if json.loads(line))
    return {"wall_s": end - t0, "rc": proc.returncode, "peak_main_mb": peak[0] / 2**20,
            "peak_tree_mb": peak[1] / 2**20, "lines": len(lines), "valid": valid,
            "stop_s": None if signalled is None else end - signalled, "stderr": err.strip().splitlines()[-2:]}


def run_hand_loop(model: Path, folder: Path) -> float:
    files = [str(p) for p in sorted(folder.iterdir())]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", HAND_LOOP, str(model), *files], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MEDLITE_DATA_DIR", "../shared/data")))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    model = args.model.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = build_sources(args.data_dir.resolve(), tmp / "sources")

        print("## Decoding shortcuts against full decoding (medlite's reader, --full-decode against default)\n")
        print("| file | decoded (WxH) | full (ms) | medlite (ms) | max input difference (of 255) | same label |"
              " score difference |")
        print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
        for r in tolerance(model, sources, args.data_dir.resolve()):
            print(f"| {r['file']} | {r['decoded']} | {r['full_ms']:.1f} | {r['medlite_ms']:.1f} | "
                  f"{r['max_input_diff_255']:.2f} | {r['same_label']} | {r['score_diff']:.2e} |")

        folders = {
            "cart mix (4 chest, 4 ultrasound sources)": make_folder(
                [sources[n] for n in CHEST + ULTRASOUND], tmp / "mix", 200),
            "chest X-rays only (4 sources)": make_folder([sources[n] for n in CHEST], tmp / "chest", 200),
        }
        print("\n## 200 DICOMs: the hand-written loop against `medlite predict --workers 2` (fresh processes, "
              "alternated)\n")
        print("| folder | hand-written loop (s) | medlite --workers 2 (s) | medlite --workers 0 (s) | ratio (workers 2) |")
        print("| --- | --- | --- | --- | ---: |")
        for name, folder in folders.items():
            hand, two, zero = [], [], []
            for _ in range(args.repeats):
                hand.append(run_hand_loop(model, folder))
                two.append(run_predict(model, folder, tmp / "out.jsonl", workers=2)["wall_s"])
                zero.append(run_predict(model, folder, tmp / "out.jsonl", workers=0)["wall_s"])
            fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
            print(f"| {name} | {fmt(hand)} | {fmt(two)} | {fmt(zero)} | {min(two) / min(hand):.3f} |")

        big = make_folder([sources[n] for n in CHEST + ULTRASOUND], tmp / "mix2000", 2000)
        print("\n## Memory (peak resident, sampled every 50 ms)\n")
        print("| files | wall (s) | main process (MB) | with its 2 workers (MB) | records |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for name, folder in (("200", folders["cart mix (4 chest, 4 ultrasound sources)"]), ("2000", big)):
            r = run_predict(model, folder, tmp / "out.jsonl")
            print(f"| {name} | {r['wall_s']:.1f} | {r['peak_main_mb']:.0f} | {r['peak_tree_mb']:.0f} | {r['lines']} |")

        print("\n## Stopping a 2,000-file run 5 s in\n")
        print("| signal | exit code | stopped within (s) | JSON Lines written (all valid) | last line of standard error |")
        print("| --- | ---: | ---: | ---: | --- |")
        for sig in (signal.SIGINT, signal.SIGTERM):
            out = tmp / f"stopped_{sig.name}.jsonl"
            r = run_predict(model, big, out, stop_after=5.0, sig=sig)
            assert r["valid"] == r["lines"]
            print(f"| {sig.name} | {r['rc']} | {r['stop_s']:.2f} | {r['lines']} of 2000 | {r['stderr'][-1:]} |")


if __name__ == "__main__":
    main()
