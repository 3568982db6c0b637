"""``medlite convert``: a bundle to validated .tflite variants, a manifest and a summary.

Everything is written into a staging folder beside ``out`` and renamed into
place at the end, so a failure (a full disk included) never leaves a
half-written output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlite._version import __version__
from medlite.convert.contract_writer import embed_contract
from medlite.convert.export import convert
from medlite.convert.validate import compare, predict_prepared
from medlite.edge.backends.litert import quantization, runtime
from medlite.edge.contract import Contract, InputSpec
from medlite.edge.errors import MedliteError
from medlite.edge.runtime import sha256_bytes
from medlite.edge.variants import REFERENCE, VARIANTS
from medlite.train.bundle import Bundle, load_bundle
from medlite.train.data import TrainingData
from medlite.train.pipeline import load_data_for


class ConvertError(MedliteError, RuntimeError):
    pass


@dataclass
class ConvertOptions:
    variants: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    n_calibration: int = 300  # real training images used to calibrate integer variants
    io_type: str = "int8"  # input/output type of full-integer variants: int8 or uint8
    max_auc_drop: float = 0.01  # a variant losing more validation AUC than this is flagged
    allow_drop: bool = False  # do not fail the command on a flagged variant
    force: bool = False  # replace an existing output folder
    data_dir: str | None = None
    seed: int = 0


def input_spec_of(tflite: bytes) -> InputSpec:
    interp = runtime().Interpreter(model_content=tflite)
    d = interp.get_input_details()[0]
    _, h, w, c = (int(v) for v in d["shape"])
    q = quantization(d)
    dtype = np.dtype(d["dtype"]).name
    return InputSpec(h, w, c, dtype, q[0] if q and dtype != "float32" else None,
                     q[1] if q and dtype != "float32" else None)


def _load_data(bundle: Bundle, data_dir) -> TrainingData:
    try:
        data = load_data_for(bundle.info["data_source"], bundle.config, data_dir)
    except MedliteError as e:
        raise ConvertError(f"{bundle.path}: the training data this bundle was made from is needed for "
                           f"calibration and validation, and could not be loaded: {e}") from None
    if data.sha256 != bundle.info.get("data_sha256"):
        raise ConvertError(f"{bundle.path}: the data found for {bundle.info['data_source']!r} is not the data the "
                           f"bundle was trained on (sha256 {data.sha256[:12]}... vs "
                           f"{bundle.info.get('data_sha256', '?')[:12]}...); point --data-dir at the original file")
    return data


def convert_bundle(bundle_path: str | Path, out: str | Path, options: ConvertOptions, progress=None) -> dict:
    """Convert, validate and write every requested variant; returns the manifest."""
    out = Path(out)
    if out.exists() and not options.force:
        raise ConvertError(f"{out}: already exists; pass --force to replace it")
    bundle = load_bundle(bundle_path)
    data = _load_data(bundle, options.data_dir)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _convert_all(bundle, data, staging, options, progress)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        (staging / "convert.md").write_text(summary_markdown(manifest))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConvertError(f"{out}: writing the models failed ({e.strerror or e}); nothing was left behind"
                           + (" (the disk is full)" if getattr(e, "errno", None) == 28 else "")) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _convert_all(bundle: Bundle, data: TrainingData, staging: Path, options: ConvertOptions, progress) -> dict:
    c0: Contract = bundle.contract
    cfg = bundle.config
    pos = c0.positive_index
    val, test = data.splits["val"], data.splits.get("test")
    source_sha = bundle.model_sha256
    wanted = list(dict.fromkeys([REFERENCE, *options.variants]))  # fp32 is always the reference
    entries, ref = [], None
    for name in wanted:
        if progress:
            progress(name)
        t0 = time.perf_counter()
        model = bundle.model
        if VARIANTS[name].fine_tuned:
            from medlite.convert.finetune import fine_tune

            model = fine_tune(bundle, data, name)
        tfl = convert(model, name, calibration=data.splits["train"].x, n_calibration=options.n_calibration,
                      io_type=options.io_type, seed=options.seed)
        seconds = time.perf_counter() - t0
        provenance = {**c0.provenance, "medlite_version": __version__, "variant": name,
                      "source_model_sha256": source_sha}
        contract = c0.replace(input=input_spec_of(tfl), provenance=provenance)
        path = staging / f"{name}.tflite"
        path.write_bytes(embed_contract(tfl, contract))
        pv = predict_prepared(str(path), val.x)
        pt = predict_prepared(str(path), test.x) if test is not None else None
        if ref is None:
            ref = {"val": pv, "test": pt, "threshold": c0.threshold}
            ref_threshold = None
            if pos is not None:
                from medlite.edge.metrics import choose_threshold

                ref_threshold = choose_threshold(val.y == pos, pv[:, pos], cfg.operating_point, cfg.target_sensitivity)
            ref["threshold"] = ref_threshold
        threshold, vm = compare(val.y, pv, ref["val"], ref["threshold"], pos, cfg.operating_point,
                                cfg.target_sensitivity, options.seed)
        tm = None
        if test is not None:
            _, tm = compare(test.y, pt, ref["test"], ref["threshold"], pos, cfg.operating_point,
                            cfg.target_sensitivity, options.seed)
            tm = _at(test.y, pt, ref["test"], pos, threshold, ref["threshold"], tm)
        final = contract.replace(threshold=threshold, validation=vm)
        blob = embed_contract(tfl, final)
        path.write_bytes(blob)
        flagged = -vm["auc_change"] > options.max_auc_drop
        entries.append({
            "variant": name, "file": path.name, "size_bytes": len(blob), "sha256": sha256_bytes(blob),
            "convert_seconds": round(seconds, 2),
            "flags": {"io_type": options.io_type if VARIANTS[name].integer else "float32",
                      "n_calibration": options.n_calibration if VARIANTS[name].calibrated else 0},
            "metrics": vm, "test": tm, "flagged": flagged,
            "description": VARIANTS[name].description,
        })
    return {
        "medlite_version": __version__, "bundle": str(bundle.path), "source_model_sha256": source_sha,
        "data": {"name": data.name, "sha256": data.sha256}, "max_auc_drop": options.max_auc_drop,
        "operating_point": c0.operating_point, "variants": entries,
    }


def _at(y, probs, ref_probs, pos, threshold, ref_threshold, metrics):
    """Test metrics at the threshold chosen on validation (not re-chosen on test)."""
    from medlite.convert.validate import decisions
    from medlite.edge.metrics import classification_metrics

    m = classification_metrics(y, probs, pos, threshold, ci=True)
    m["agreement_with_fp32"] = float((decisions(probs, pos, threshold) == decisions(ref_probs, pos, ref_threshold))
                                     .mean())
    m["auc_change"] = metrics["auc_change"]
    return m


def summary_markdown(manifest: dict) -> str:
    lines = [f"# medlite convert: {manifest['bundle']}", "",
             f"Operating point: {manifest['operating_point']}, re-chosen on validation for every variant. "
             f"Flag: validation AUC drop above {manifest['max_auc_drop']}.", "",
             "| variant | size (KiB) | val AUC | AUC change | agreement with fp32 | threshold | test AUC | flagged |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for e in manifest["variants"]:
        m, t = e["metrics"], e["test"] or {}
        thr = "-" if m.get("threshold") is None else f"{m['threshold']:.4f}"
        lines.append(f"| {e['variant']} | {e['size_bytes'] / 1024:.1f} | {m['auc']:.4f} | {m['auc_change']:+.4f} | "
                     f"{m['agreement_with_fp32']:.3f} | {thr} | {t.get('auc', float('nan')):.4f} | "
                     f"{'YES' if e['flagged'] else 'no'} |")
    return "\n".join(lines) + "\n"
