"""Prefect flows composed from ``tasks``: ``train_flow``, ``eval_flow`` and ``predict_flow``."""
