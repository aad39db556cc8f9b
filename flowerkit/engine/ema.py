"""An exponential moving average of the weights (``--ema_decay``), with torch's ``AveragedModel``.

``ema = decay * ema + (1 - decay) * weights`` after every optimizer step (buffers too); the first update
copies the weights. Its ``state_dict`` (the averaged module and ``n_averaged``) is checkpointed with the run.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
