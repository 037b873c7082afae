"""The errors sviflow raises for what a user gave it: importable from every module without
importing anything else of sviflow's (or jax)."""


class ConfigError(ValueError):
    """A config entry, or a file it names, that cannot be turned into what it names. The message
    starts with the config key (``fits.f.guide.name: ...``) or the file and line."""
