"""The one exception type bertkit raises for a user's mistake.

The command line prints its message on one line and exits with status 2; anything else that
escapes is a bug in bertkit and keeps its traceback.
"""


class BertkitError(Exception):
    """Bad input from the user: a missing file, an inconsistent config, a wrong option."""
