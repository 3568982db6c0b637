"""``medlite train``: train a CNN on labelled images and write a bundle."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from .shared import EXIT_OK, UsageError, data_args, needs_train, whole_number


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
    p.add_argument("--model", help="model family: small_cnn, mobilenet_v2, resnet, efficientnet_lite0 or "
                                   "efficientnet_lite2 (from ImageNet weights) (default: the best default recipe, "
                                   "small_cnn)")
    p.add_argument("--config", help="recipe YAML file (fields as the flags below)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--init", metavar="ENCODER",
                   help="start from a pretrained encoder (`medlite pretrain`); the model family, its options, "
                        "the image size and colour are the encoder's")
    p.add_argument("--unlabelled", nargs="+", default=(), metavar="DIR",
                   help="folders of images without labels that the recipe's pretraining also learns from "
                        "(the small-data recipe pretrains on its training images by default)")
    p.add_argument("--masks", metavar="DIR",
                   help="the training images' findings as masks, laid out as the class folders are "
                        "(DIR/<class>/<name>_mask*.png, BUSI's layout; an empty mask: no finding): the model also "
                        "learns where each finding is, which its heatmap then shows (a test split's are never read)")
    p.add_argument("--label-fractions", type=fractions, metavar="F,F,...",
                   help="also train on these shares of the labelled training images (e.g. 0.05,0.1,0.25,0.5,1) "
                        "and write the label-efficiency curve (AUC against labelled images, with 95%% intervals) "
                        "beside the bundle: label_efficiency.md, .csv, .png")
    p.add_argument("--folds", type=whole_number(2, 20), metavar="K",
                   help="first cross-validate the recipe on the training images in K folds: the AUC's mean and "
                        "95%% interval (metrics.json's cross_validation); the bundle's model is trained as usual")
    p.add_argument("--distil", action="store_true",
                   help="with --folds: the model also learns from the folds' models' mean scores of the training "
                        "images (knowledge distillation of their ensemble into the one model a cart runs)")
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
    """A bar over epochs; yields the ``progress(epoch, total, row)`` callback that training calls (``row`` with
    the epoch's loss, and its validation AUC where there is one)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label, total=epochs)

        def on_epoch(epoch, total, row):
            auc = f" val AUC {row['val_auc']:.4f}" if "val_auc" in row else ""
            bar.update(task, completed=epoch, total=total, description=f"{label}: loss {row['loss']:.3f}{auc}")

        yield on_epoch


def train_with_progress(source: str, config, out, console, *, data_dir=None, data=None, folds=None, recipe=None,
                        init=None, unlabelled=(), distil=False):
    """Train with a progress bar and print the metrics; returns (bundle path, metrics). ``demo`` calls this too."""
    from medlite.train.pipeline import train_bundle

    def on_fold(i, k, auc):
        console.print(f"cross-validation fold {i}/{k}: AUC {auc:.4f}")

    # The recipe's pretraining runs here rather than inside train_bundle so that it has a progress bar of its
    # own: rich shows one live display at a time.
    if init is None and config.pretrain != "none":
        from medlite.train.pipeline import load_data_for, pretrained_encoder
        from medlite.train.pretrain import IMAGENET

        data = data or load_data_for(source, config, data_dir)
        if config.pretrain == IMAGENET:  # read, not learnt: no epochs to show
            init = pretrained_encoder(data, config, Path(out))
        else:
            with epoch_progress(console, f"pretraining {config.model} ({config.pretrain})",
                                config.pretrain_epochs) as on_epoch:
                init = pretrained_encoder(data, config, Path(out), unlabelled,
                                          lambda e, n, loss: on_epoch(e, n, {"loss": loss}))
        console.print(f"pretrained encoder: {init}")
    with epoch_progress(console, f"training {config.model}", config.epochs) as on_epoch:
        bundle, metrics = train_bundle(source, config, out, data_dir=data_dir, data=data, progress=on_epoch,
                                       folds=folds, fold_progress=on_fold, recipe=recipe, init=init, distil=distil)
    cv = metrics.get("cross_validation")
    if cv:
        a = cv["auc"]
        console.print(f"cross-validation, {cv['folds']} folds of the training images: AUC {a['mean']:.4f} "
                      f"(95% CI {a['ci95'][0]:.4f}-{a['ci95'][1]:.4f})")
        if "ensemble_test_auc" in cv:
            console.print(f"the folds' ensemble (the teacher) on test: AUC {cv['ensemble_test_auc']:.4f}")
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
    from medlite.train.pretrain import IMAGENET, IMAGENET_FAMILIES
    from medlite.train.pretrain import METHODS as PRETRAINING

    if config.age_range:
        try:
            parse_age_range(config.age_range)
        except ValueError as e:
            raise UsageError(f"--age-range: {e}") from None
    if config.if_age_missing not in ("reject", "answer"):
        raise UsageError(f"--if-age-missing must be reject or answer, got {config.if_age_missing!r}")
    if config.pretrain not in ("none", *PRETRAINING, IMAGENET):
        raise UsageError(f"--pretrain must be none, {IMAGENET} or one of {', '.join(PRETRAINING)}, "
                         f"got {config.pretrain!r}")
    if config.pretrain == IMAGENET and config.model not in IMAGENET_FAMILIES:
        raise UsageError(f"--pretrain {IMAGENET}: medlite has ImageNet weights for {' and '.join(IMAGENET_FAMILIES)}"
                         f", not {config.model}; add --model {IMAGENET_FAMILIES[0]}")
    if config.calibration not in METHODS:
        raise UsageError(f"--calibration must be one of {', '.join(METHODS)}, got {config.calibration!r}")
    if config.checkpoint not in ("best", "last"):
        raise UsageError(f"--checkpoint must be best or last, got {config.checkpoint!r}")


def run(args) -> int:
    needs_train()
    from medlite.train.config import DEFAULT_FAMILY, load_config

    from .shared import console

    from medlite.train.fit import epochs_for
    from medlite.train.pipeline import load_data_for
    from medlite.train.pretrain import IMAGENET

    family = args.model or (None if args.config else DEFAULT_FAMILY)
    overrides = {f.name: getattr(args, f.name) for f in _config_fields()}
    if args.model:
        overrides["model"] = args.model
    if args.epochs is not None and args.min_steps is None:  # --epochs N means N epochs
        overrides["min_steps"] = 0
    if args.init:
        family = encoder_fields(args.init, overrides)
    config = load_config(args.config, family).updated(**overrides)
    check_recipe(config)
    con = console(args)
    data = load_data_for(args.data, config, args.data_dir, args.masks)
    # With no family named, a small split of large images fine-tunes ImageNet weights (choose_recipe).
    side = None if (args.model or args.config or args.init) else min(data.spec.height, data.spec.width)
    config, recipe = choose_recipe(config, len(data.splits["train"].y), args.config, family, overrides, side)
    if args.distil and not args.folds:
        raise UsageError("--distil learns from the cross-validation folds' models: add --folds K")
    if args.unlabelled and (args.init or config.pretrain in ("none", IMAGENET)):
        raise UsageError("--unlabelled is for the recipe's pretraining, and " +
                         ("--init gives an encoder already" if args.init else
                          "ImageNet weights learn nothing from it" if config.pretrain == IMAGENET else
                          "this recipe does not pretrain: add --pretrain simclr"))
    con.print(f"recipe: {recipe}" + (f"; starting from the encoder {args.init}" if args.init else
                                      f"; pretraining: {config.pretrain}" if config.pretrain != "none" else ""))
    n_train = len(data.splits["train"].y)
    epochs = epochs_for(n_train, config)
    if epochs > config.epochs:
        con.print(f"schedule: {epochs} epochs instead of {config.epochs}, for the recipe's {config.min_steps} "
                  f"optimiser steps at least ({n_train} training images at batch {config.batch_size})")
    if args.masks:
        from medlite.train.pipeline import masks_used

        con.print(f"finding masks: {masks_used(data, config) or 0} of {len(data.splits['train'].y)} training images")
    train_with_progress(args.data, config, args.out, con, data_dir=args.data_dir, data=data, folds=args.folds,
                        recipe=recipe, init=args.init, unlabelled=args.unlabelled, distil=args.distil)
    if args.label_fractions:
        from medlite.train import label_efficiency
        from medlite.train.pretrain import DEFAULT_METHOD

        def config_for(n):
            return choose_recipe(load_config(args.config, family).updated(**overrides), n, args.config, family,
                                 overrides, side)

        def said(row):
            con.print(f"label efficiency: {row['labelled_images']} labelled images ({row['fraction']:g}), "
                      f"{label_efficiency.start(row)}: AUC "
                      f"{row['auc']:.4f} (95% CI {row['auc_ci95'][0]:.4f}-{row['auc_ci95'][1]:.4f}) on "
                      f"{row['split']}; {row['epochs']} epochs, {row['steps']} optimiser steps")

        encoder = Path(args.init or Path(args.out) / "encoder")
        if not encoder.is_dir():  # the recipe did not pretrain: an encoder for the curve's pretrained half
            from medlite.train.pipeline import pretrained_encoder

            method = config.pretrain if config.pretrain != "none" else DEFAULT_METHOD
            with epoch_progress(con, f"pretraining for the curve ({method})", config.pretrain_epochs) as on_epoch:
                encoder = pretrained_encoder(data, config.updated(pretrain=method), Path(args.out) /
                                             "label_efficiency", args.unlabelled,
                                             lambda e, n, loss: on_epoch(e, n, {"loss": loss}))
        rows = label_efficiency.curve(data, args.label_fractions, config_for, said, encoder)
        for path in label_efficiency.write(rows, Path(args.out), data.name):
            con.print(f"label efficiency: {path}")
    return EXIT_OK


def encoder_fields(init: str, overrides: dict) -> str:
    """Put the encoder's family, width options, image size and colour into ``overrides`` (a flag that says
    otherwise is a usage error); returns the family."""
    from medlite.edge.errors import DataError
    from medlite.train.pretrain import describe

    try:
        info = describe(init)
    except DataError as e:
        raise UsageError(f"--init: {e}") from None
    height, _, channels = info["input_shape"]
    fits = {"model": info["family"], "image_size": height, "color": "grey" if channels == 1 else "rgb"}
    for key, value in fits.items():
        if overrides.get(key) not in (None, value):
            raise UsageError(f"--init {init}: the encoder was pretrained with {key.replace('_', '-')} {value}, "
                             f"not {overrides[key]}")
    overrides.update(fits, model_options=info["model_options"], pretrain="none")
    return info["family"]


def choose_recipe(config, n_train: int, path, family, overrides, side: int | None = None) -> tuple:
    """The recipe's small-data fields over it when the training split is small, and the recipe's name and why;
    flags given on the command line still win. ``side`` (the input's side, given when no family, recipe or
    encoder was named): a small split of images of at least IMAGENET_FROM_PX takes EfficientNet-Lite0's recipe,
    fine-tuned from ImageNet weights, instead."""
    from medlite.train.config import IMAGENET_FROM_PX, SMALL_DATA_IMAGES, load_config
    from medlite.train.pretrain import IMAGENET_FAMILY

    source = path or f"{config.model} default"
    if n_train >= SMALL_DATA_IMAGES:
        return config, f"{source} (the training split has {n_train} images)"
    if side is not None and side >= IMAGENET_FROM_PX:
        return (load_config(None, IMAGENET_FAMILY).updated(**overrides, model=IMAGENET_FAMILY),
                f"{IMAGENET_FAMILY} default, from ImageNet weights (the training split has {n_train} images, under "
                f"{SMALL_DATA_IMAGES}, of {side} px, at least {IMAGENET_FROM_PX})")
    small = load_config(path, family, small_data=True).updated(**overrides)
    if small == config:
        return config, f"{source} (the training split has {n_train} images; the recipe has no small-data entry)"
    return small, f"{source}, small-data (the training split has {n_train} images, under {SMALL_DATA_IMAGES})"
