"""The configuration error every reader raises (re-exported as :class:`harness.config.ConfigError`). Its own module
so that the config package's submodules (:mod:`harness.config.backend`, :mod:`harness.config.released`) raise it
without importing the package, which imports them: no import cycle."""


class ConfigError(ValueError):
    """Bad configuration or input; the message is one line naming the valid choices."""
