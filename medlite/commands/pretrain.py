"""``medlite pretrain``: self-supervised pretraining of a model family's encoder on unlabelled images."""

from __future__ import annotations

from .shared import EXIT_OK, UsageError, needs_train, whole_number


def register(sub, common) -> None:
    p = sub.add_parser("pretrain", parents=[common], help="pretrain an encoder on unlabelled images",
                       description="Teach a model family's convolutional layers on images without labels (any "
                                   "folders of images or DICOMs, searched recursively), for `medlite train "
                                   "--init`. The small-data recipe pretrains on its own training images by "
                                   "default; this command is for pretraining once on a larger unlabelled archive.")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="folders of unlabelled images or DICOMs")
    p.add_argument("--out", required=True, help="encoder folder to write (encoder.weights.h5, encoder.json)")
    p.add_argument("--model", default="small_cnn", help="model family: small_cnn, mobilenet_v2, resnet (default "
                                                        "small_cnn, with its default recipe's width options)")
    p.add_argument("--image-size", type=whole_number(8), default=128,
                   help="input side in pixels, as `medlite train` will use it (default 128)")
    p.add_argument("--color", choices=("grey", "rgb"), default="grey", help="the model's colour (default grey)")
    p.add_argument("--method", help="simclr (contrastive views) or restore (masked and denoising autoencoding); "
                                    "default: the better one in medlite's measurements")
    p.add_argument("--epochs", type=whole_number(1), default=100, help="passes over the images (default 100)")
    p.add_argument("--batch-size", type=whole_number(4), default=64, help="images per step (default 64)")
    p.add_argument("--seed", type=int, default=0, help="fixes weights and views")
    p.set_defaults(run=run)


def run(args) -> int:
    needs_train()
    from medlite.edge.contract import InputSpec, Preprocess
    from medlite.train.config import load_config
    from medlite.train.data import unlabelled_images
    from medlite.train.pretrain import DEFAULT_METHOD, METHODS, encoder_for

    from .shared import console
    from .train import epoch_progress

    args.method = args.method or DEFAULT_METHOD
    if args.method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {args.method!r}")
    try:
        config = load_config(family=args.model).updated(model=args.model, pretrain=args.method,
                                                        pretrain_epochs=args.epochs, batch_size=args.batch_size,
                                                        seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    con = console(args)
    spec = InputSpec(height=args.image_size, width=args.image_size, channels=1 if args.color == "grey" else 3)
    x, skipped = unlabelled_images(args.data, spec, Preprocess(color=args.color))
    con.print(f"{len(x)} unlabelled images" + (f"; {len(skipped)} file(s) could not be read" if skipped else ""))
    for problem in skipped[:5]:
        con.print(f"  [yellow]{problem}")
    with epoch_progress(con, f"pretraining {args.model} ({args.method})", args.epochs) as on_epoch:
        out = encoder_for(x, config, args.out, lambda e, n, loss: on_epoch(e, n, {"loss": loss}))
    con.print(f"encoder: {out} (train from it with `medlite train --init {out} --model {args.model} "
              f"--image-size {args.image_size}`)")
    return EXIT_OK
