"""Errors a user can cause: the CLI turns each into one clear line and exit code 2."""


class UserError(Exception):
    """Bad input: a wrong flag value, a broken suite or baseline file, a model that will not load."""


class RunFailed(Exception):
    """A run could not finish (e.g. its loss diverged); the suite goes on without it."""
