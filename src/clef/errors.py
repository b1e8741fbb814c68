"""The one exception type that means "the user asked for something that cannot be done".

The command line prints it as a single line (``clef: error: ...``) and exits with status 2; anything
else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a wrong argument, a malformed file, a missing path.

    The message must say what is wrong and, where it helps, name the file, the line and the valid
    choices.
    """
