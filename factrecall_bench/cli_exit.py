"""How the `factrecall-bench` command ends: every way out of a command is one documented exit code
(exit_codes.py); an error a user can cause is one line, a bug one line and exit 5."""

from __future__ import annotations

import errno
import sys

import typer

from factrecall_bench import exit_codes
from factrecall_bench.errors import UserError


def exit_code_of(app: typer.Typer, debug: bool) -> int:
    """Run the Typer app; its exit code. Typer's standalone mode turns usage errors into exit 2,
    Ctrl-C into 130 and `typer.Exit` into its code (all as SystemExit); what else escapes a
    command is ours to report."""
    try:
        app(prog_name="factrecall-bench")
    except SystemExit as exit_:
        if exit_.code is None:
            return exit_codes.OK
        return exit_.code if isinstance(exit_.code, int) else exit_codes.USAGE
    except Exception as error:
        if debug:
            raise
        return _reported(error)
    return exit_codes.OK


# A disk that is full or will not take writes is the user's machine, not our bug.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _reported(error: Exception) -> int:
    """Print one line for an error that escaped a command; the exit code it stands for."""
    if isinstance(error, UserError):
        sys.stderr.write(f"error: {_one_line(error)}\n")
        return exit_codes.USAGE
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        sys.stderr.write(f"error: {error.strerror}{where}\n")
        return exit_codes.USAGE
    sys.stderr.write(f"internal error: {type(error).__name__}: {_one_line(error)}\n"
                     "this is a bug in factrecall-bench: rerun with --debug for the traceback "
                     "and report it\n")
    return exit_codes.INTERNAL


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
