"""What the commands share: exit codes, the usage error, the console, and common arguments."""

from __future__ import annotations

import argparse

# Exit codes, documented in README ("Command line").
EXIT_OK = 0  # everything asked for was done
EXIT_FAILED = 1  # some inputs failed (their records say why), or nothing met a selection's constraints
EXIT_USAGE = 2  # the command line or its inputs are wrong: a bad flag, a missing data set or folder
EXIT_CANNOT_RUN = 3  # the model cannot run here: not a usable medlite model, or no backend that can run it
EXIT_INTERNAL = 4  # medlite itself failed unexpectedly: a bug to report (the traceback under --verbose)


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def console(args):
    """Where progress and notes go: standard error, silent under ``-q``."""
    from rich.console import Console

    return Console(stderr=True, quiet=getattr(args, "quiet", False))


def needs_train() -> None:
    try:
        import medlite.train.tf  # noqa: F401
    except ImportError:
        raise UsageError("this command needs TensorFlow, which the cart install leaves out: "
                         "pip install 'medlite[train]'") from None


def needs_ray():
    """medlite.cluster.ray_predict, or a usage error naming the extra to install."""
    try:
        import ray  # noqa: F401  (medlite.cluster imports it only when it runs)
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'medlite[ray]'") from None
    from medlite.cluster import ray_predict

    return ray_predict


def variants(text: str) -> list[str]:
    from medlite.convert.variants import parse_variants

    try:
        return parse_variants(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


def positive_int(text: str) -> int:
    return whole_number(1)(text)


def whole_number(low: int, high: int | None = None):
    """An argparse type: a whole number from ``low`` to ``high`` (no upper bound when None)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < low or (high is not None and n > high):
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {n}" if high is None else
                                             f"must be from {low} to {high}, got {n}")
        return n
    return parse


def writable_file(text: str) -> str:
    """An argparse type: an output file whose folder exists and can be written, checked before any work."""
    import os

    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text}: the folder {folder} does not exist")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"cannot write {text}: it is a folder")
    if not os.access(folder, os.W_OK) or (os.path.exists(text) and not os.access(text, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    return text


def frame_policy(text: str) -> str | int:
    """An argparse type: a multi-frame DICOM's frames, "all", "middle" or an index (negative from the end)."""
    if text in ("all", "middle"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected all, middle or a frame index, got {text!r}") from None


def edgetpu_device(text: str) -> str:
    from medlite.edge.backends.session import Options

    try:
        Options(device=text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def signing_key(text: str) -> str:
    """An argparse type: a PEM elliptic-curve private key without a password, which signs models."""
    from medlite.edge.signature import signing_key as check

    try:
        check(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def trusted_key(text: str):
    """An argparse type: a PEM public key whose signatures are trusted (``medlite.edge.signature.Key``)."""
    from medlite.edge.signature import public_key

    try:
        return public_key(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


TRUST_ENV = "MEDLITE_TRUST"  # the cart's setting: trusted public keys, separated like PATH


def trust_args(p) -> None:
    """--trust, repeatable; its default is the cart's MEDLITE_TRUST setting (read when the command starts)."""
    p.add_argument("--trust", type=trusted_key, action="append", metavar="PUBLIC.pem",
                   help="run only a model signed by this key (repeatable; default: the keys in $MEDLITE_TRUST, "
                        "separated by ':'); a model without a valid signature by one exits 3 before it is read")


def trusted(args) -> list:
    """The keys of ``trust_args``: the flags, else the MEDLITE_TRUST setting; none means signatures are not read."""
    import os

    if args.trust:
        return args.trust
    setting = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    try:
        return [trusted_key(p) for p in setting]
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"${TRUST_ENV}: {e}") from None


def model_args(p) -> None:
    """The model to run and where: what `predict` and `serve` take alike."""
    from medlite.edge.backends import NAMES as BACKENDS

    p.add_argument("model", help="a .tflite written by medlite (its contract is inside)")
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto", help="default auto: best one present")
    p.add_argument("--threads", type=positive_int, help="CPU interpreter threads")
    p.add_argument("--device", type=edgetpu_device, help="Edge TPU: usb, usb:N, pci, pci:N or :N")
    p.add_argument("--frames", type=frame_policy, help="multi-frame DICOM: all (one result per frame), middle or an "
                                                       "index (default: the contract's)")
    trust_args(p)


def load_model(args, **options):
    """The model of ``model_args``, loaded on its backend with the run ``options`` of ``medlite.edge.load``."""
    from medlite.edge import load

    return load(args.model, backend=args.backend, threads=args.threads, device=args.device, frames=args.frames,
                trust=trusted(args), **options)


def data_args(p, required: bool = True, default: str | None = None) -> None:
    p.add_argument("--data", required=required and default is None, default=default,
                   help="a MedMNIST name (pneumoniamnist), an .npz path or a class folder"
                        + (f" (default {default})" if default else ""))
    p.add_argument("--data-dir", help="folder to look in first for a named data set (then $MEDLITE_DATA_DIR, "
                                      "then the user cache)")


def common_parser() -> argparse.ArgumentParser:
    """-q/--quiet and --verbose, which every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress or notes, only results and errors")
    common.add_argument("--verbose", action="store_true", help="also show TensorFlow's own log lines")
    return common
