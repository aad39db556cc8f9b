"""``LiveScreen``: a screen that re-reads its runs in a worker thread, whose results can outlive it."""

from __future__ import annotations

from textual.screen import Screen


class LiveScreen(Screen):
    """Escape can close the screen while a read is in flight; the result then arrives at a screen whose widgets
    are being removed (or are gone), and must be dropped: check ``closed`` first."""

    @property
    def closed(self) -> bool:
        """Popped: no longer on the app's screen stack (from that moment on, not only once it is detached)."""
        return self not in self.app.screen_stack
