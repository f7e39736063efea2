"""The errors freelabel raises on purpose: their messages are meant for the user, without a traceback."""


class FreelabelError(Exception):
    """An error whose message explains what went wrong and how to fix it."""


class ConfigError(FreelabelError, ValueError):
    """A configuration value is out of range or unknown; raised before any model loads or any file is written."""


class RunStoppedError(FreelabelError):
    """A run that had started stopped partway (training went non-finite, the run's own state could not be saved,
    its output folder vanished): one ``Error:`` line and exit code 1; what it saved before stays."""

    exit_code = 1
