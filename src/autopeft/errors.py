"""Errors that reach the user as a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input: the message names the problem and how to fix it."""
