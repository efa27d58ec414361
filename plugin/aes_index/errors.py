"""Typed errors. Each carries the one line a user sees and the exit code the CLI returns.

The CLI turns any AesIndexError into `aes-index: <message>` and its exit code; anything
else is a bug and is reported as such (exit 1) with the traceback only under --debug.
"""

from __future__ import annotations


class ExitCode:
    OK = 0
    INTERNAL = 1  # a bug: please report
    USAGE = 2  # bad arguments or configuration
    FILE_ERRORS = 3  # the run finished, but some files could not be processed (recorded)
    WEIGHTS = 4  # model weights or head unavailable
    INDEX = 5  # index database missing, locked or damaged
    ALREADY_RUNNING = 6  # `review`: another review serves this index (its URL is printed)
    INTERRUPTED = 130


class AesIndexError(Exception):
    """Base of every error meant for the user: str(err) is a complete sentence."""

    exit_code = ExitCode.INTERNAL


class ConfigError(AesIndexError):
    exit_code = ExitCode.USAGE


class WeightsUnavailable(AesIndexError):
    """The backbone's weights can't be loaded (offline with no cache, bad file, unknown tag)."""

    exit_code = ExitCode.WEIGHTS


class HeadError(AesIndexError):
    """A head file is missing, malformed, or made for another backbone."""

    exit_code = ExitCode.WEIGHTS


class IndexUnavailable(AesIndexError):
    """The index database can't be opened, is locked, or is newer than this program."""

    exit_code = ExitCode.INDEX


class ReviewUnavailable(IndexUnavailable):
    """A review started in the background (the darktable plugin's) did not come up: its
    own last line says why."""


class NothingScored(IndexUnavailable):
    """The index holds no scores yet: every command that lists or rates says so alike."""

    def __init__(self, message: str = "nothing scored yet: run `aes-index rebuild` first"):
        super().__init__(message)


class DecodeError(AesIndexError):
    """A file could not be turned into pixels. Recorded per file; never stops a run.

    `code` is a short stable tag stored in the index (e.g. "corrupt", "unsupported") so
    that reports can group errors; the message says what happened in plain words.
    """

    exit_code = ExitCode.FILE_ERRORS
    code = "decode"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class EmptyFile(DecodeError):
    code = "empty"


class UnsupportedFormat(DecodeError):
    code = "unsupported"


class CorruptImage(DecodeError):
    code = "corrupt"


class DecompressionBomb(DecodeError):
    code = "too_large"


class NoPreview(DecodeError):
    """A RAW file with no usable embedded preview and no fallback decode."""

    code = "no_preview"


class Unreadable(DecodeError):
    """Permission denied, vanished while reading, I/O error."""

    code = "unreadable"


class SidecarError(AesIndexError):
    """An XMP sidecar we refuse to touch (hostile, malformed, too large). Recorded per file."""

    exit_code = ExitCode.FILE_ERRORS


def run_reporting_errors(prog: str, command, debug: bool = False) -> int:
    """Run a CLI command; turn what it raises into one line on stderr and an exit code.

    Shared by `aes-index` and `aes-train`: an AesIndexError is the user's error (its
    message and code), Ctrl-C keeps what finished, a closed pipe is no error, and
    anything else is a bug, shown with its traceback only under --debug.
    """
    import os
    import sys

    try:
        return command()
    except AesIndexError as exc:
        if debug:
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `aes-index top | head`: the reader left; that's fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is saved, run the command again to continue", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return ExitCode.INTERNAL
