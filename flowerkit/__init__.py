"""flowerkit: train and evaluate Vision Transformers on Oxford Flowers-102, with an auditable trail per run.

The library is plain Python (no Prefect needed); ``tasks/`` and ``flows/`` wrap it for Prefect.
"""

__version__ = "0.1.0"
