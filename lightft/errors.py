"""The one exception type users see.

Anything raised as `LightftError` is a problem with the user's input (a file, a key, an option):
its message is a single line that names the culprit and the fix, and the CLI prints it without a
traceback. Internal invariants use `assert` instead, so a real bug still shows its stack.
"""


class LightftError(ValueError):
    """A user-facing error whose message is one line naming the file/key/option and the fix."""
