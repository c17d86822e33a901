"""The ``dvis`` command. Each area registers its own sub-commands (``register(subparsers)``)."""

from __future__ import annotations

import argparse
import importlib
import sys

from dvis.errors import DVISError

# Modules that define ``register(subparsers)``; each adds one or more sub-commands.
COMMAND_MODULES = [
    "dvis.data.commands",
    "dvis.evaluation.commands",
    "dvis.inference.commands",
    "dvis.training.commands",
]


def build_parser() -> argparse.ArgumentParser:
    from dvis import __version__

    parser = argparse.ArgumentParser(prog="dvis", description="Decoupled Video Instance Segmentation")
    parser.add_argument("--version", action="version", version=f"dvis {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DVISError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
