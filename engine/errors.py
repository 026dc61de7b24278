"""Errors meant for users: one line that says what was wrong and what to do."""


class UserError(Exception):
    """A problem with the user's input (file, image, option). `main.py` prints it without a traceback."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read, is of an unknown kind, or would need code execution to load."""


class NoFaceError(UserError):
    """An image in which no face was found."""
