"""Typed errors of aes-train. Each is an aes_index AesIndexError: one line, one exit code.

The CLI prints `aes-train: <message>` and returns the exit code, exactly as aes-index does.
"""

from __future__ import annotations

from aes_index.errors import AesIndexError, ConfigError, ExitCode


class DatasetError(ConfigError):
    """AVA.txt, a split file or the image folder is missing or malformed."""


class CacheError(AesIndexError):
    """An embedding cache that can't be used: unreadable, or made with another backbone."""

    exit_code = ExitCode.USAGE


class TrainingDiverged(AesIndexError):
    """The loss became NaN or infinite: the learning rate is too high for these features."""

    exit_code = ExitCode.USAGE


class NotEnoughData(AesIndexError):
    """Too few labelled examples to train (or to measure) anything meaningful."""

    exit_code = ExitCode.USAGE
