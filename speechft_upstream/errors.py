"""The one exception type users see as a single line instead of a traceback."""


class SpeechFTError(Exception):
    """A user-facing problem with input (a file, an option); the message names the file and the fault."""

    # Checked by name from the excepthook so it never needs to import this module.
    speechft_user_error = True
