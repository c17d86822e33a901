"""The ``dvis`` command. Each area registers its own sub-commands (``register(subparsers)``)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading

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


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt: ``except Exception`` blocks let it
    through, while ``with`` blocks and ``finally`` clauses run (spill folders, temporary files)."""


@contextlib.contextmanager
def sigterm_raises():
    """While the block runs, SIGTERM raises :class:`Terminated` in this process (forked children,
    such as data-loader workers, keep the default action). An ignored SIGTERM stays ignored."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    main_pid = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with sigterm_raises():
            return int(args.func(args) or 0)
    except DVISError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); temporary files were removed", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:  # the reader went away (`dvis models | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 128 + signal.SIGPIPE
    except OSError as err:
        if err.errno not in PATH_ERRORS:
            raise  # anything else is a bug and keeps its traceback
        print(f"error: {path_error(err)}", file=sys.stderr)
        return 2


# errno values that say a path given on the command line cannot be used as such
PATH_ERRORS = (errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.ELOOP, errno.EISDIR,
               errno.ENOENT, errno.EROFS)


def path_error(err: OSError) -> str:
    """``PATH: REASON`` of an OSError, with a long path cut short."""
    name = os.fsdecode(err.filename) if err.filename is not None else None
    if name is None:
        return err.strerror or str(err)
    shown = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]} ({len(name)} characters)"
    return f"{shown}: {err.strerror or err}"


if __name__ == "__main__":
    sys.exit(main())
