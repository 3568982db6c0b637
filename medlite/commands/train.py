"""``medlite train``: train a CNN on labelled images and write a bundle."""

from __future__ import annotations

import argparse
import contextlib

from .shared import EXIT_OK, data_args, needs_train


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


def train_with_progress(source: str, config, out, console, *, data_dir=None, data=None):
    """Train with a progress bar and print the metrics; returns (bundle path, metrics). ``demo`` calls this too."""
    from medlite.train.pipeline import train_bundle

    with epoch_progress(console, f"training {config.model}", config.epochs) as on_epoch:
        bundle, metrics = train_bundle(source, config, out, data_dir=data_dir, data=data, progress=on_epoch)
    from medlite.edge.contract import IntendedUse

    use = IntendedUse(**metrics["intended_use"])
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


def run(args) -> int:
    needs_train()
    from medlite.train.config import DEFAULT_FAMILY, load_config

    from .shared import console

    family = args.model
    config = load_config(args.config, family or (None if args.config else DEFAULT_FAMILY))
    overrides = {f.name: getattr(args, f.name) for f in _config_fields()}
    if family:
        overrides["model"] = family
    config = config.updated(**overrides)
    train_with_progress(args.data, config, args.out, console(args), data_dir=args.data_dir)
    return EXIT_OK
