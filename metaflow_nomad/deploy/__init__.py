"""Deployed flows: runner jobs, their runs and their life cycle."""
