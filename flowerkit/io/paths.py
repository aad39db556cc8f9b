"""Where flowerkit keeps what it can rebuild: decoded-pixel caches and the synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``FLOWERKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/flowerkit``, else ``~/.cache/flowerkit``."""
    if env := os.environ.get("FLOWERKIT_CACHE_DIR"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "flowerkit"
