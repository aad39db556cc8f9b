"""A line plot of one or more named series (textual-plotext), redrawn only when its data changes."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plotext import PlotextPlot

Series = tuple[str, Sequence[float], Sequence[float]]  # (label, x values, y values)


class MetricPlot(PlotextPlot):
    """A titled plot of step-indexed series; an empty plot says that nothing was logged yet."""

    def __init__(self, title: str, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.plot_title = title
        self._series: list[Series] = []
        self._drawn: list[Series] | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def set_series(self, series: list[Series]) -> None:
        self._series = [(label, list(xs), list(ys)) for label, xs, ys in series]
        if self._series != self._drawn:
            self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.plot_title if any(xs for _, xs, _ in self._series) else f"{self.plot_title}: no data yet")
        plt.xlabel("step")
        for label, xs, ys in self._series:
            if xs:
                plt.plot(xs, ys, label=label if len(self._series) > 1 else None, marker="braille")
        self._drawn = list(self._series)
        self.refresh()
