"""The training and evaluation engine: plain PyTorch, no Prefect."""
