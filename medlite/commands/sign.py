"""``medlite sign``: sign models after the fact (an Edge TPU build, a model converted elsewhere)."""

from __future__ import annotations

from .shared import EXIT_OK, UsageError, console, signing_key


def register(sub, common) -> None:
    p = sub.add_parser("sign", parents=[common], help="sign .tflite models with a private key",
                       description="Write NAME.tflite.sig beside each model: OpenSSF model-signing's own format "
                                   "(its `model_signing verify key` checks it too), signed with a local "
                                   "elliptic-curve key. A cart run with --trust PUBLIC.pem runs only models "
                                   "signed by a key it trusts. Sign after the last change to the file: a model "
                                   "changed after signing is refused as altered.")
    p.add_argument("models", nargs="+", help=".tflite files, or folders of them (Edge TPU builds included)")
    p.add_argument("--key", required=True, type=signing_key, metavar="PRIVATE.pem",
                   help="PEM elliptic-curve private key (P-256, P-384 or P-521), without a password")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from medlite.edge.contract import read_contract
    from medlite.edge.signature import sign

    paths = []
    for m in args.models:
        path = Path(m)
        if path.is_dir():
            paths += sorted(path.glob("*.tflite"))
        elif path.is_file():
            paths.append(path)
        else:
            raise UsageError(f"{m}: no such model file or folder")
    if not paths:
        raise UsageError(f"no .tflite models in {' '.join(args.models)}")
    from medlite.edge.backends.edgetpu import is_build_path

    for path in paths:
        if not is_build_path(str(path)):  # a signature vouches for a whole medlite model: check it first
            read_contract(path.read_bytes(), str(path))
    con = console(args)
    for path in paths:
        key = sign(path, args.key)
        con.print(f"{path} signed: {path.name}.sig (key {key})")
    return EXIT_OK
