"""Errors the package raises for unusable files, so callers can report them in one line."""


class CheckpointError(ValueError):
    """A checkpoint, config or tokenizer file that cannot be used; the message names the file."""
