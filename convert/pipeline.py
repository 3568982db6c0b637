"""``medlite convert``: a bundle to validated .tflite variants, a manifest and a summary.

Everything is written into a staging folder beside ``out`` and renamed into
place at the end, so a failure (a full disk included) never leaves a
half-written output folder.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..edge.backends.litert import quantization, runtime
from ..edge.contract import Contract, InputSpec, read_contract
from ..edge.decision import decide
from ..edge.errors import MedliteError
from ..edge.metrics import choose_threshold, classification_metrics
from ..edge.runtime import sha256_bytes
from ..edge import ood
from ..edge.version import __version__
from ..measure.report import per_class_table
from ..train.bundle import Bundle, load_bundle
from ..train.calibration import fit as fit_calibration
from ..train.data import TrainingData
from ..train.pipeline import load_data_for
from . import edgetpu_readiness
from .contract_writer import embed_contract
from .errors import ConvertError
from ..edge.heatmap import Cam
from ..edge.signature import SUFFIX, sign
from .export import cart_model, convert
from .finetune import FineTune
from .guard_graph import append_guard
from .validate import compare, infer_prepared
from .variants import REFERENCE, VARIANTS

MAX_AUTO_FLOAT_LAYERS = 8  # --float-layers auto gives up beyond this many float layers
OOD_FIT_IMAGES = 2000  # training images whose features fit the out-of-distribution detector
OOD_FALSE_ALARM_RATE = 0.02  # share of validation images the detector's threshold flags


@dataclass
class ConvertOptions:
    variants: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    n_calibration: int = 1000  # real training images used to calibrate integer variants (see RESULTS)
    io_type: str = "int8"  # input/output type of full-integer variants: int8 or uint8
    max_auc_drop: float = 0.01  # a variant losing more validation AUC than this is flagged
    allow_drop: bool = False  # do not fail the command on a flagged variant
    force: bool = False  # replace an existing output folder
    data_dir: str | None = None
    seed: int = 0
    finetune: FineTune = field(default_factory=FineTune)  # QAT and pruning
    float_layers: str | int = 0  # int8: keep the N worst layers in float, or "auto"
    layer_report: int = 10  # int8: rows of the per-layer error table kept in the manifest
    sign_key: str | None = None  # PEM private key: every .tflite written gets its signature beside it


@dataclass
class _Run:
    """What validating one converted model gave."""

    blob: bytes
    threshold: float | None
    val: dict
    test: dict | None
    val_probs: np.ndarray
    calibration: dict  # a multi-class model's decision weights, chosen on validation ({} otherwise)


def input_spec_of(tflite: bytes) -> InputSpec:
    interp = runtime().Interpreter(model_content=tflite)
    d = interp.get_input_details()[0]
    _, h, w, c = (int(v) for v in d["shape"])
    q = quantization(d)
    dtype = np.dtype(d["dtype"]).name
    quantized = q is not None and dtype != "float32"
    return InputSpec(h, w, c, dtype, q[0] if quantized else None, q[1] if quantized else None)


def outputs_of(tflite: bytes, n_labels: int, has_features: bool) -> tuple[int, int | None, int | None]:
    """Which output of a converted model holds the scores, which the features and which the last feature map
    (told apart by shape: the converter does not keep Keras' output order)."""
    outs = runtime().Interpreter(model_content=tflite).get_output_details()
    if not has_features:
        return 0, None, None
    shapes = [tuple(int(v) for v in o["shape"]) for o in outs]
    maps = [i for i, s in enumerate(shapes) if len(s) == 4]
    flat = [i for i, s in enumerate(shapes) if len(s) != 4]
    sizes = [int(np.prod(shapes[i])) for i in flat]
    scores = flat[sizes.index(n_labels)] if sizes[0] != n_labels else flat[0]
    features = next(i for i in flat if i != scores)
    return scores, features, (maps[0] if maps else None)


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
    try:
        staging.mkdir(parents=True)
        manifest = _Converter(bundle, data, staging, options, progress).run()
        if options.sign_key:
            _sign(staging, manifest, options.sign_key)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        (staging / "convert.md").write_text(summary_markdown(manifest))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        full = " (the disk is full)" if getattr(e, "errno", None) == 28 else ""
        raise ConvertError(f"{out}: writing the models failed{full} ({e.strerror or e}); nothing was left "
                           "behind") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _sign(folder: Path, manifest: dict, key: str) -> None:
    """Sign every model written (Edge TPU builds included), last, so that nothing changes a file after it."""
    for model in sorted(folder.glob("*.tflite")):
        manifest["signed_by"] = sign(model, key)
    for entry in manifest["variants"]:
        entry["signature"] = entry["file"] + SUFFIX


class _Converter:
    def __init__(self, bundle: Bundle, data: TrainingData, staging: Path, options: ConvertOptions, progress):
        self.bundle, self.data, self.staging, self.options, self.progress = bundle, data, staging, options, progress
        self.contract: Contract = bundle.contract
        self.pos = self.contract.positive_index
        self.cfg = bundle.config
        self.source_sha = bundle.model_sha256
        self.ref = None  # the reference's validation and test probabilities and its contract (with threshold)
        self.readiness_md: list[str] = []

    def _say(self, text: str):
        if self.progress:
            self.progress(text)

    def run(self) -> dict:
        # The reference comes first, always: every other variant is validated against its scores and decisions.
        others = [n for n in dict.fromkeys(self.options.variants) if n != REFERENCE]
        entries = [self._variant(name) for name in (REFERENCE, *others)]
        if self.readiness_md:
            (self.staging / "edgetpu.md").write_text("# Edge TPU readiness\n\n" + "\n".join(self.readiness_md))
        c = self.contract
        return {
            "medlite_version": __version__, "bundle": str(self.bundle.path), "source_model_sha256": self.source_sha,
            "data": {"name": self.data.name, "sha256": self.data.sha256}, "max_auc_drop": self.options.max_auc_drop,
            "operating_point": c.operating_point, "intended_use": c.intended_use.describe(), "labels": list(c.labels),
            "variants": entries,
        }

    def _variant(self, name: str) -> dict:
        self._say(name)
        v, opts = VARIANTS[name], self.options
        t0 = time.perf_counter()
        model = self.bundle.model
        flags: dict = {"io_type": opts.io_type if v.integer else "float32",
                       "n_calibration": opts.n_calibration if v.calibrated else 0}
        extra: dict = {}
        if v.fine_tune:
            from .finetune import fine_tune, settings, sparsity_of

            model = fine_tune(self.bundle, self.data, v.fine_tune, opts.finetune)
            flags.update(settings(v.fine_tune, opts.finetune))
            if v.fine_tune == "pruned":
                extra["sparsity"] = sparsity_of(model)
        model, activation, has_features, head = cart_model(model, keep_softmax=v.float_activations)
        tfl = convert(model, name, calibration=self.data.splits["train"].x, n_calibration=opts.n_calibration,
                      io_type=opts.io_type, seed=opts.seed)
        seconds = time.perf_counter() - t0
        heads = (activation, has_features, head)
        run = self._validate(name, tfl, heads)
        if v.layer_errors:
            run, flags, extra = self._float_layers(name, model, heads, run, flags, extra)
        path = self.staging / f"{name}.tflite"
        path.write_bytes(run.blob)
        entry = {
            "variant": name, "file": path.name, "size_bytes": len(run.blob),
            # TFLite stores zeros as zeros: the gzip size is what pruning actually saves in transfer and storage.
            "size_gzip_bytes": len(gzip.compress(run.blob, 9)), "sha256": sha256_bytes(run.blob),
            "convert_seconds": round(seconds, 2), "flags": flags, "metrics": run.val, "test": run.test,
            "flagged": -run.val["auc_change"] > opts.max_auc_drop, "description": v.description,
            "calibration": run.calibration, **extra,
        }
        if v.integer:
            entry["edgetpu"] = self._readiness(name, path, run.blob)
        return entry

    def _validate(self, name: str, tfl: bytes, heads: tuple) -> _Run:
        """Embed a provisional contract, run through medlite.edge, re-choose the threshold, embed the final one."""
        c0, val, test = self.contract, self.data.splits["val"], self.data.splits.get("test")
        provenance = {**c0.provenance, "medlite_version": __version__, "variant": name,
                      "source_model_sha256": self.source_sha}
        activation, has_features, head = heads
        scores_at, features_at, map_at = outputs_of(tfl, len(c0.labels), has_features)
        heatmap = Cam(map_at, head).to_dict() if head is not None and map_at is not None else {}
        contract = c0.replace(input=input_spec_of(tfl), provenance=provenance, activation=activation,
                              scores_output=scores_at, features_output=features_at, heatmap=heatmap)
        provisional = embed_contract(tfl, contract)
        # One pass gives each image's scores and features; the guard is fitted on a subset of training images.
        fit_on, on_val, on_test = infer_prepared(provisional, self._ood_fit_images() if has_features else None,
                                                 val.x, test.x if test is not None else None)
        pv, pt = on_val[0], None if on_test is None else on_test[0]
        calibration = self._calibration(val.y, pv)  # this variant's own, as its threshold is
        if VARIANTS[name].reference:
            self.ref = {"val": pv, "test": pt, "contract": contract.replace(threshold=self._threshold(val.y, pv),
                                                                            calibration=calibration)}
        elif self.ref is None:
            raise RuntimeError(f"{name} was validated before the reference variant {REFERENCE}")
        ref = self.ref["contract"]
        threshold, vm = compare(val.y, pv, self.ref["val"], ref, self.cfg.operating_point,
                                self.cfg.target_sensitivity, self.options.seed, calibration)
        mine = ref.replace(threshold=threshold, calibration=calibration)
        tm = None
        if test is not None:
            # Test metrics at the decision chosen on validation, never re-chosen on test.
            tm = classification_metrics(test.y, pt, self.pos, threshold, seed=self.options.seed,
                                        decided=decide(pt, mine))
            # How many different scores the test images get: a quantized softmax collapses them to a few dozen.
            tm["distinct_scores"] = int(len(np.unique(pt[:, self.pos] if self.pos is not None else pt, axis=0)))
            tm["agreement_with_fp32"] = float((decide(pt, mine) == decide(self.ref["test"], ref)).mean())
        guard = {}
        if has_features:
            detector = self._fit_ood(fit_on[1], on_val[1], None if on_test is None else on_test[1], tm)
            tfl, guard_at = append_guard(tfl, features_at, detector)  # the cart reads the score from the model
            guard = {**detector.to_dict(), "output": guard_at}
        blob = embed_contract(tfl, contract.replace(threshold=threshold, calibration=calibration, validation=vm,
                                                    ood=guard))
        return _Run(blob, threshold, vm, tm, pv, calibration)

    def _ood_fit_images(self) -> np.ndarray:
        rng = np.random.default_rng(self.options.seed)
        train = self.data.splits["train"].x
        return train[np.sort(rng.permutation(len(train))[:OOD_FIT_IMAGES])]

    def _fit_ood(self, train: np.ndarray, val: np.ndarray, test: np.ndarray | None,
                 tm: dict | None) -> ood.OodDetector:
        """The out-of-distribution detector of this variant, fitted on its own features of training images,
        its threshold set on validation; with the share of test images it flags, for the record."""
        detector = ood.fit(train, val, OOD_FALSE_ALARM_RATE)
        if tm is not None and test is not None:
            tm["ood_flagged"] = float(np.mean([detector.score(f) > detector.threshold for f in test]))
        return detector

    def _calibration(self, y: np.ndarray, probs: np.ndarray) -> dict:
        """A multi-class model's decision weights, by the bundle's recipe, chosen on ``y``; {} for a binary
        model or a bundle trained before calibration (which keeps its plain argmax)."""
        if self.pos is not None or not self.contract.calibration:
            return {}
        if self.contract.calibration.get("fitted_on"):
            # Fitted on cross-validation's scores of every training image (train --folds): many more images
            # than validation holds, so every variant keeps it rather than re-fit it on a few dozen.
            return dict(self.contract.calibration)
        counts = np.bincount(self.data.splits["train"].y, minlength=len(self.contract.labels))
        return fit_calibration(self.contract.calibration["method"], y, probs, counts)

    def _threshold(self, y: np.ndarray, probs: np.ndarray) -> float | None:
        """The operating point of the recipe, chosen on ``y``; None for a multi-class model."""
        if self.pos is None:
            return None
        return choose_threshold(y == self.pos, probs[:, self.pos], self.cfg.operating_point,
                                self.cfg.target_sensitivity)

    def _float_layers(self, name: str, model, heads: tuple, run: _Run, flags: dict, extra: dict):
        """The per-layer error table, and the worst layers kept in float when asked (or needed, for auto)."""
        from .quant_debug import int8_with_float_layers, layer_errors

        opts = self.options
        calibration = self.data.splits["train"].x
        errors = layer_errors(model, calibration, n=min(100, opts.n_calibration), seed=opts.seed)
        extra["layer_errors"] = errors[: opts.layer_report]
        if opts.float_layers == "auto":
            counts = range(0, MAX_AUTO_FLOAT_LAYERS + 1)
        else:
            counts = [int(opts.float_layers)]
        chosen = run
        for k in counts:
            if k == 0:
                chosen = run
            else:
                names = [e["tensor"] for e in errors[:k]]
                self._say(f"{name} with {k} layer(s) in float")
                chosen = self._validate(name, int8_with_float_layers(model, calibration, names, opts.n_calibration,
                                                                       opts.seed), heads)
            if opts.float_layers != "auto" or -chosen.val["auc_change"] <= opts.max_auc_drop:
                flags["float_layers"] = [e["tensor"] for e in errors[:k]]
                break
        else:
            flags["float_layers"] = [e["tensor"] for e in errors[:MAX_AUTO_FLOAT_LAYERS]]
            extra["float_layers_note"] = (f"no count up to {MAX_AUTO_FLOAT_LAYERS} float layers met the AUC "
                                          "budget; the largest was kept")
        return chosen, flags, extra

    def _readiness(self, name: str, path: Path, blob: bytes) -> dict:
        static = edgetpu_readiness.check(blob)
        compiled = edgetpu_readiness.compile_if_available(path)
        if compiled.get("file"):
            # The build is another file: it gets the plain model's contract with digests of its own content.
            build = path.with_name(compiled["file"])
            build.write_bytes(embed_contract(build.read_bytes(), read_contract(blob)))
        if compiled.get("compiler_ops"):
            compiled["differences"] = edgetpu_readiness.compare_with_compiler(static, compiled["compiler_ops"])
        self.readiness_md.append(edgetpu_readiness.markdown(name, static, compiled))
        out = {"summary": static["summary"], "mapped": static["mapped"], "cpu": static["cpu"],
               "guard_ops": static["guard_ops"], "split_at": static["split_at"], "ops": static["ops"],
               "compiler": {k: v for k, v in compiled.items() if k != "log"}}
        heatmap = read_contract(blob).heatmap
        if heatmap:
            where = ("computed on the Edge TPU with every other op" if static["cpu"] == 0 else
                     f"the graph splits at {static['split_at']}, so ops after it run on the CPU")
            out["heatmap"] = (f"heatmap-ready: output {heatmap['output']} is the last feature map, {where}; the host "
                              f"only combines it with the head's {len(heatmap['layers'])} dense layer(s)")
            self.readiness_md.append(f"{name}: {out['heatmap']}.\n")
        return out


def summary_markdown(manifest: dict) -> str:
    lines = [f"# medlite convert: {manifest['bundle']}", "",
             f"Operating point: {manifest['operating_point']}, re-chosen on validation for every variant. "
             f"Flag: validation AUC drop above {manifest['max_auc_drop']}. "
             f"Intended use: {manifest.get('intended_use', 'not recorded')}.", "",
             f"Signed: each model's signature is beside it (NAME.tflite.sig, OpenSSF model-signing), by key "
             f"{manifest['signed_by']}." if manifest.get("signed_by") else
             "Not signed (`medlite sign` or `convert --sign-key` signs; a cart with --trust runs only signed models).",
             "",
             "| variant | size KiB | gzip KiB | val AUC | AUC change | agreement with fp32 | mean / max score diff | "
             "threshold | test AUC | test agreement | distinct test scores | Edge TPU | flagged |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for e in manifest["variants"]:
        m, t = e["metrics"], e["test"] or {}
        thr = "-" if m.get("threshold") is None else f"{m['threshold']:.4f}"
        tpu = "-" if "edgetpu" not in e else f"{e['edgetpu']['mapped']}/{e['edgetpu']['mapped'] + e['edgetpu']['cpu']}"
        lines.append(f"| {e['variant']} | {e['size_bytes'] / 1024:.1f} | {e['size_gzip_bytes'] / 1024:.1f} | "
                     f"{m['auc']:.4f} | {m['auc_change']:+.4f} | {m['agreement_with_fp32']:.3f} | "
                     f"{m['score_diff_mean']:.4f} / {m['score_diff_max']:.4f} | {thr} | "
                     f"{t.get('auc', float('nan')):.4f} | {t.get('agreement_with_fp32', float('nan')):.3f} | "
                     f"{t.get('distinct_scores', '-')} | {tpu} | {'YES' if e['flagged'] else 'no'} |")
    for e in manifest["variants"]:
        lines += per_class_markdown(e, manifest.get("labels"))
    for e in manifest["variants"]:
        if e.get("layer_errors"):
            worst = ", ".join(f"`{r['tensor']}` ({r['op']}, RMSE/scale {r['rmse_over_scale']:.2f})"
                              for r in e["layer_errors"][:5])
            lines += ["", f"{e['variant']}: worst layers by quantization error: {worst}."]
            if e["flags"].get("float_layers"):
                lines.append(f"Kept in float: {', '.join(e['flags']['float_layers'])}.")
        if "sparsity" in e:
            lines += ["", f"{e['variant']}: {e['sparsity']:.1%} of conv and dense weights are zero; the .tflite "
                          f"stores them anyway ({e['size_bytes'] / 1024:.1f} KiB), gzip shows the real saving "
                          f"({e['size_gzip_bytes'] / 1024:.1f} KiB)."]
    return "\n".join(lines) + "\n"


def per_class_markdown(entry: dict, labels: list[str] | None) -> list[str]:
    """A multi-class variant's decision class by class on test (validation without a test split): its weight,
    sensitivity, specificity and one-vs-rest AUC, and the confusion matrix. Nothing for a binary model."""
    m = entry["test"] or entry["metrics"]
    if "per_class" not in m or not labels:
        return []
    split = "test" if entry["test"] else "validation"
    weights = entry.get("calibration", {}).get("weights") or [1.0] * len(labels)
    how = entry.get("calibration", {}).get("method", "none (the highest score)")
    return ["", f"{entry['variant']}, class by class on {split}: accuracy {m['accuracy']:.3f}, balanced accuracy "
            f"{m['balanced_accuracy']:.3f}; the decision's class weights were chosen on validation ({how}).", ""] + \
        per_class_table(m, labels, weights)
