"""Errors meant for users: one line that says what was wrong and what to do."""


class UserError(Exception):
    """A problem with the user's input (file, image, option). `main.py` prints it without a traceback."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read, is of an unknown kind, or would need code execution to load."""


class NoFaceError(UserError):
    """An image in which no face was found."""


def report_errors(run, *args, interrupted: str = "interrupted") -> int:
    """Exit code of a command's body: a UserError becomes its one line on stderr (1) and Ctrl-C one line (130),
    so every entry point answers bad input the same way and never with a traceback."""
    import sys

    try:
        return int(run(*args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
