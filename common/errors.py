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
