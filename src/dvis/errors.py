"""Typed errors. Every error a user can cause derives from :class:`DVISError`.

The command line prints ``error: <message>`` for these and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class DVISError(Exception):
    """Base class of all user-facing errors of this package."""


class InputError(DVISError, ValueError):
    """A tensor, frame or argument has the wrong type, rank, size or value."""


class CheckpointError(DVISError):
    """A checkpoint file cannot be loaded into the requested model."""


class ConfigError(DVISError, KeyError):
    """A config file or override names a key that does not exist or has a bad value."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class DataError(DVISError, ValueError):
    """A dataset, annotation or video file is malformed or missing."""


class OutputWriteError(DataError, OSError):
    """An output file could not be written (disk full, permissions); still an OSError for callers
    that catch those, and a DVISError for the command line's clear ``error:`` line."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) tuples
        return str(self.args[0]) if self.args else ""
