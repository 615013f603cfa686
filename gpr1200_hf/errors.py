"""Error types: each message names the problem and the fix."""


class InputError(ValueError):
    """Bad input to a metric or command."""


class DataError(InputError):
    """A GPR1200 source (zip, folder, category JSON) is not in the official format."""
