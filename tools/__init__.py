"""Developer tools (not shipped with the package): ``make mutate``, ``make dashboard``."""
