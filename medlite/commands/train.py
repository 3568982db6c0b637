"""``medlite train``: train a CNN on labelled images and write a bundle."""

from __future__ import annotations

import argparse
import contextlib

from .shared import EXIT_OK, data_args, needs_train, whole_number


def _config_fields():
    from medlite.train.config import TrainConfig

    return [f for f in TrainConfig.fields() if f.name not in ("model", "model_options")]


def register(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="train a CNN and write a model bundle",
                       description="Train a model family on a labelled image set and write a bundle: the Keras "
                                   "model, its contract with the operating point chosen on validation, metrics on "
                                   "validation and test, the training log and the recipe used. Recipe fields come "
                                   "from --config (YAML), then the flags below.")
    data_args(p)
    p.add_argument("--model", help="model family: small_cnn, mobilenet_v2, resnet (default: the best default "
                                   "recipe, small_cnn)")
    p.add_argument("--config", help="recipe YAML file (fields as the flags below)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--label-fractions", type=fractions, metavar="F,F,...",
                   help="also train on these shares of the labelled training images (e.g. 0.05,0.1,0.25,0.5,1) "
                        "and write the label-efficiency curve (AUC against labelled images, with 95%% intervals) "
                        "beside the bundle: label_efficiency.md, .csv, .png")
    p.add_argument("--folds", type=whole_number(2, 20), metavar="K",
                   help="first cross-validate the recipe on the training images in K folds: the AUC's mean and "
                        "95%% interval (metrics.json's cross_validation); the bundle's model is trained as usual")
    group = p.add_argument_group("recipe overrides")
    for f in _config_fields():
        kind = {"int": int, "float": float}.get(str(f.type), str)
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f.metadata.get("help"))
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, help=f.metadata.get("help"))
    p.set_defaults(run=run)


@contextlib.contextmanager
def epoch_progress(console, label: str, epochs: int):
    """A bar over epochs; yields the ``progress(epoch, total, row)`` callback that training calls."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label, total=epochs)

        def on_epoch(epoch, total, row):
            bar.update(task, completed=epoch, description=f"{label}: loss {row['loss']:.3f} "
                                                          f"val AUC {row['val_auc']:.4f}")

        yield on_epoch


def train_with_progress(source: str, config, out, console, *, data_dir=None, data=None, folds=None, recipe=None):
    """Train with a progress bar and print the metrics; returns (bundle path, metrics). ``demo`` calls this too."""
    from medlite.train.pipeline import train_bundle

    def on_fold(i, k, auc):
        console.print(f"cross-validation fold {i}/{k}: AUC {auc:.4f}")

    with epoch_progress(console, f"training {config.model}", config.epochs) as on_epoch:
        bundle, metrics = train_bundle(source, config, out, data_dir=data_dir, data=data, progress=on_epoch,
                                       folds=folds, fold_progress=on_fold, recipe=recipe)
    cv = metrics.get("cross_validation")
    if cv:
        a = cv["auc"]
        console.print(f"cross-validation, {cv['folds']} folds of the training images: AUC {a['mean']:.4f} "
                      f"(95% CI {a['ci95'][0]:.4f}-{a['ci95'][1]:.4f})")
    from medlite.edge.contract import intended_use_from

    use = intended_use_from(metrics["intended_use"])
    console.print(f"intended use: {use.describe()}" + ("" if use.modalities else
                  "; pass --modality (and --body-part) so that the cart rejects other DICOMs"))
    chosen = metrics["positive_class"]
    if chosen["label"] is not None:
        console.print(f"positive class: {chosen['label']} ({chosen['chosen']})")
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            ci = m.get("auc_ci95")
            ci_text = f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
            rates = "".join(f", {k} {m[k]:.3f}" for k in ("sensitivity", "specificity", "accuracy",
                                                             "balanced_accuracy") if k in m)
            console.print(f"{split}: AUC {m['auc']:.4f}{ci_text}{rates}")
    if metrics["info"]["skipped_files"]:
        console.print(f"[yellow]{len(metrics['info']['skipped_files'])} file(s) could not be read and were "
                      f"skipped; see {bundle}/bundle.json")
    console.print(f"bundle: {bundle}")
    return bundle, metrics


def fractions(text: str) -> list[float]:
    """An argparse type: shares of the training images, each above 0 and at most 1."""
    try:
        values = sorted({float(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"each share must be above 0 and at most 1, got {text!r}")
    return values


def check_recipe(config) -> None:
    """The recipe's values that are words or ranges, checked before any image is read."""
    from medlite.train.calibration import METHODS
    from medlite.train.pipeline import parse_age_range

    from .shared import UsageError

    if config.age_range:
        try:
            parse_age_range(config.age_range)
        except ValueError as e:
            raise UsageError(f"--age-range: {e}") from None
    if config.if_age_missing not in ("reject", "answer"):
        raise UsageError(f"--if-age-missing must be reject or answer, got {config.if_age_missing!r}")
    if config.calibration not in METHODS:
        raise UsageError(f"--calibration must be one of {', '.join(METHODS)}, got {config.calibration!r}")


def run(args) -> int:
    needs_train()
    from medlite.train.config import DEFAULT_FAMILY, load_config

    from .shared import console

    from medlite.train.pipeline import load_data_for

    family = args.model or (None if args.config else DEFAULT_FAMILY)
    overrides = {f.name: getattr(args, f.name) for f in _config_fields()}
    if args.model:
        overrides["model"] = args.model
    config = load_config(args.config, family).updated(**overrides)
    check_recipe(config)
    con = console(args)
    data = load_data_for(args.data, config, args.data_dir)
    config, recipe = choose_recipe(config, len(data.splits["train"].y), args.config, family, overrides)
    con.print(f"recipe: {recipe}")
    train_with_progress(args.data, config, args.out, con, data_dir=args.data_dir, data=data, folds=args.folds,
                        recipe=recipe)
    if args.label_fractions:
        from pathlib import Path

        from medlite.train import label_efficiency

        def config_for(n):
            return choose_recipe(load_config(args.config, family).updated(**overrides), n, args.config, family,
                                 overrides)

        def said(row):
            con.print(f"label efficiency: {row['labelled_images']} labelled images ({row['fraction']:g}): AUC "
                      f"{row['auc']:.4f} (95% CI {row['auc_ci95'][0]:.4f}-{row['auc_ci95'][1]:.4f}) on {row['split']}")

        rows = label_efficiency.curve(data, args.label_fractions, config_for, said)
        for path in label_efficiency.write(rows, Path(args.out), data.name):
            con.print(f"label efficiency: {path}")
    return EXIT_OK


def choose_recipe(config, n_train: int, path, family, overrides) -> tuple:
    """The recipe's small-data fields over it when the training split is small, and the recipe's name and why;
    flags given on the command line still win."""
    from medlite.train.config import SMALL_DATA_IMAGES, load_config

    source = path or f"{config.model} default"
    if n_train >= SMALL_DATA_IMAGES:
        return config, f"{source} (the training split has {n_train} images)"
    small = load_config(path, family, small_data=True).updated(**overrides)
    if small == config:
        return config, f"{source} (the training split has {n_train} images; the recipe has no small-data entry)"
    return small, f"{source}, small-data (the training split has {n_train} images, under {SMALL_DATA_IMAGES})"
