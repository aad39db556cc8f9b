"""Prefect flows composed from ``tasks``: ``train_flow`` and ``eval_flow``."""
