"""Torch modules, losses and metrics. Knows nothing of files or Prefect."""
