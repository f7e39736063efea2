"""The base of every error freelabel raises on purpose: its message is meant for the user, without a traceback."""


class FreelabelError(Exception):
    """An error whose message explains what went wrong and how to fix it."""
