"""Synthetic cohorts, partitioners and experiment runners for research on one machine."""

__all__: list[str] = []
