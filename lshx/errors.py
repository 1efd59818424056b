"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class LshxError(Exception):
    """A problem with the user's input (files, options, checkpoints), not a bug."""


class DataError(LshxError):
    pass


class CheckpointError(LshxError):
    pass


class ConfigError(LshxError):
    pass


class WriteError(LshxError):
    """A write that failed (permissions, a full disk, a locked DB): what was written before
    stays, and the run resumes from it."""
