"""Errors the zoo raises for bad input; each message names the file, key or argument at fault."""


class ZooError(Exception):
    """Base class of the zoo's own errors (the CLI prints these without a traceback)."""


class WeightsUnavailableError(ZooError):
    """Weights cannot be obtained: offline with nothing cached, or nothing was published."""


class WeightsNotFoundError(ZooError):
    """The Hub repository, revision or file (or the URL) does not exist."""


class ChecksumError(ZooError):
    """A downloaded file's sha256 differs from the pinned one; the file was deleted."""


class DownloadError(ZooError):
    """A download broke off or returned something other than the file."""


class CheckpointError(ZooError):
    """A checkpoint is missing, unreadable, or of another model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's pickle references code that could run on load; it was refused."""


class StateDictMismatchError(CheckpointError):
    """A state dict's keys or shapes do not match the model; the message lists them."""


class InputError(ZooError, ValueError):
    """An input image, tensor or argument is malformed (wrong size, corrupt file ...)."""


class NonFiniteDescriptorError(InputError):
    """Descriptors hold NaN or inf; ``side`` names them (queries, database ...), ``rows`` lists the
    first affected rows and ``count`` how many there are."""

    def __init__(self, message: str, side: str = "", rows: list[int] | None = None, count: int = 0) -> None:
        super().__init__(message)
        self.side, self.rows, self.count = side, list(rows or []), count


class DatasetError(ZooError):
    """A data set folder or one of its files is missing or malformed."""


class UnknownNameError(ZooError, KeyError):
    """A name (model, variant, data set, protocol, task, recipe) that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class SelfCheckError(ZooError):
    """Converted weights fail the self-check: non-finite or unnormalised descriptors, or a copy
    whose descriptors of the sample images differ from the recorded fingerprint."""
