"""The errors freelabel raises on purpose: their messages are meant for the user, without a traceback."""


class FreelabelError(Exception):
    """An error whose message explains what went wrong and how to fix it."""


class ConfigError(FreelabelError, ValueError):
    """A configuration value is out of range or unknown; raised before any model loads or any file is written."""
