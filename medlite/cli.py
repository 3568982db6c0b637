"""The ``medlite`` command: the parser, the exit codes and one-line errors; each subcommand is a module of
``medlite.commands``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from medlite.commands import bench, convert, demo, env, predict, pretrain, report, select, serve, sign, train
from medlite.commands.shared import EXIT_CANNOT_RUN, EXIT_INTERNAL, EXIT_USAGE, UsageError, common_parser
from medlite.edge.version import __version__

COMMANDS = (demo, pretrain, train, convert, sign, predict, serve, bench, report, select, env)


class _Parser(argparse.ArgumentParser):
    """A bad flag or value is one line naming it and what it accepts (argparse's usage is under --help)."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medlite", description="Train, quantize and run medical-imaging CNNs on "
                                     "the cart's accelerator, with every variant's cost measured on the device.")
    parser.add_argument("--version", action="version", version=f"medlite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_parser()
    for command in COMMANDS:
        command.register(sub, common)
    return parser


def _quiet_tensorflow(verbose: bool) -> None:
    """TensorFlow reads its C++ log level once, when it is first imported: set it before any command runs."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that a run stops the same way (exit 143, not 130)."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code is 0, 1 (some inputs failed), 2 (usage), 3 (the model cannot run here) or
    4 (medlite failed unexpectedly: a bug, reported in one line, with its traceback under --verbose)."""
    from medlite.convert.errors import ConversionError
    from medlite.edge.errors import BackendUnavailable, MedliteError, ModelError

    args = build_parser().parse_args(argv)
    _quiet_tensorflow(args.verbose)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.run(args)
    except UsageError as e:
        print(f"medlite {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelError, BackendUnavailable, ConversionError) as e:
        print(f"medlite {args.command}: error: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except MedliteError as e:
        print(f"medlite {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print(f"medlite {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"medlite {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # the reader of standard output went away (`medlite predict ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's own flush at exit is quiet
        return 128 + signal.SIGPIPE
    except Exception as e:  # a bug in medlite, not a problem with the input: say so, and how to report it
        if args.verbose:
            traceback.print_exc()
        print(f"medlite {args.command}: internal error ({type(e).__name__}); please report it with the output "
              "of the same command run with --verbose", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
