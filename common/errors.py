"""Errors that reach the user as one clear line and a non-zero exit.

Anything raised as a ``UserError`` is a problem with what the user gave us (a
path, a file, a setting); the command line prints its message without a
traceback. Every other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message says what and where."""


class DataError(UserError):
    """A data file or folder is missing, unreadable or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(UserError):
    """A setting (make variable, command-line flag, config file) is invalid."""


class RunLockedError(UserError):
    """Another command holds the run folder's lock (``common.run_lock``).

    ``holder`` describes that command as its lock file tells it (pid, command,
    start time, host), or says it is unknown.
    """

    def __init__(self, run_dir, holder: str):
        self.run_dir = str(run_dir)
        self.holder = holder
        super().__init__(f"{self.run_dir}: in use by another command ({holder}); "
                         f"wait for it to finish, or use another RUN=")
