"""gcf-trt: compile and stream Gated Clip Fusion action recognition.

The CLI is a thin layer over library calls.

Every subcommand lives in :mod:`gcf_trt.commands` as a module with ``register(subparsers)``;
the parser's ``func(args)`` does one library call and prints a short summary.  Errors the user
can fix (:class:`~gcf_trt.errors.GcfError`) are caught here, once: one line naming the problem,
one line with the fix, exit code 1, and a traceback only with ``--verbose``.

``-v/--verbose`` and ``-q/--quiet`` are accepted before or after the subcommand
(``gcf-trt run x.mp4 --engines E -v``): every subparser gets them too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from . import __version__
from .errors import GcfError

# Subcommand modules, imported lazily so `gcf-trt run` never imports torch.
COMMANDS = {
    "build": "gcf_trt.commands.build",
    "backbones": "gcf_trt.commands.build",
    "run": "gcf_trt.commands.run",
    "train": "gcf_trt.commands.train",
    "eval": "gcf_trt.commands.evaluate",
    "make-videos": "gcf_trt.commands.train",
    "demo": "gcf_trt.commands.demo",
    "bench": "gcf_trt.commands.bench",
    "export-triton": "gcf_trt.commands.triton",
}


def _add_verbosity(parser: argparse.ArgumentParser, top: bool) -> None:
    # On subparsers the default is SUPPRESS, so a flag given before the subcommand is not
    # reset by the subparser's default.
    default = {} if top else {"default": argparse.SUPPRESS}
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs", **default)
    group.add_argument("-q", "--quiet", action="store_true",
                       help="only results and errors: no progress lines or bars", **default)


def _parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gcf-trt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gcf-trt {__version__}")
    _add_verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Register only the requested module (fast, torch-free for `run`), or all for --help.
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    for subparser in sub.choices.values():
        _add_verbosity(subparser, top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    # Read before parsing, so that an error while parsing or registering obeys them too.
    verbose = "-v" in argv or "--verbose" in argv
    quiet = ("-q" in argv or "--quiet" in argv) and not verbose
    # Our own INFO messages are shown; third-party libraries (the ONNX exporter and its IR
    # passes, ORT's quantizer) log at INFO by the hundred, so they speak only with --verbose.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("gcf_trt").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    try:
        parser = _parser(command)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except GcfError as exc:
        if verbose:
            traceback.print_exc()
        print(f"error[{exc.kind}]: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
