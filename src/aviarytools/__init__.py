"""aviarytools: composable backup, restore and migration commands for Aviary."""
__version__ = "0.1.0"
