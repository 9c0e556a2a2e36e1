"""The one exception type a user sees for bad input: a single message naming the file or value."""


class InputError(ValueError):
    """Bad input: a missing/corrupt file, an inconsistent grid, an unknown name, a bad value.

    The CLI prints ``str(err)`` alone (no traceback) and exits with status 2.
    """
