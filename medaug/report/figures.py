"""Figure helpers: headless matplotlib, one seaborn theme, a layout check, saving that closes
what it saved."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from medaug.report.captions import STAND_IN_MARK, marked

log = logging.getLogger(__name__)

# One look for every statistical figure of every paper (image grids only use its fonts).
THEME = {"context": "paper", "style": "whitegrid"}


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (jobs run without a display), with the
    project's seaborn theme applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(**THEME)
    return plt


def _drawn_texts(figure) -> list:
    """The text artists that the saved figure shows: figure texts and titles, axes titles,
    labels and in-view tick labels of axes whose axis is on, legend texts and free texts."""
    texts = list(figure.texts)
    legends = list(figure.legends)
    for axes in figure.axes:
        if not axes.get_visible():
            continue
        texts += [axes.title, axes._left_title, axes._right_title, *axes.texts]
        if axes.axison:
            texts += [axes.xaxis.label, axes.yaxis.label]
            for axis, limits in ((axes.xaxis, axes.get_xlim()), (axes.yaxis, axes.get_ylim())):
                low, high = sorted(limits)
                span = (high - low) * 1e-6
                for label in axis.get_ticklabels():
                    position = label.get_position()[0 if axis is axes.xaxis else 1]
                    if low - span <= position <= high + span:
                        texts.append(label)
        if axes.get_legend() is not None:
            legends.append(axes.get_legend())
    for legend in legends:
        if legend.get_visible():
            texts += [legend.get_title(), *legend.get_texts()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _shrunk(box, pixels: float = 1.0):
    """``box`` less ``pixels`` on every side: boxes that only touch do not overlap."""
    from matplotlib.transforms import Bbox

    return Bbox.from_extents(box.x0 + pixels, box.y0 + pixels, box.x1 - pixels, box.y1 - pixels)


def layout_problems(figure) -> list[str]:
    """What a reader would trip over: drawn texts whose boxes overlap each other or run into a
    panel they do not belong to, and legends that list an entry twice. Empty when the figure
    is clean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # A figure that pyplot has closed keeps a bare canvas: draw it on Agg, as saving does.
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [(text, _shrunk(text.get_window_extent(renderer))) for text in _drawn_texts(figure)]
    texts = [(text, box) for text, box in texts if box.width > 0 and box.height > 0]
    problems = [
        f"text {a.get_text()!r} overlaps {b.get_text()!r}"
        for (a, box_a), (b, box_b) in itertools.combinations(texts, 2)
        if box_a.overlaps(box_b)
    ]
    panels = [axes for axes in figure.axes if axes.get_visible() and (axes.axison or axes.images)]
    for text, box in texts:
        for axes in panels:
            if text.axes is not axes and box.overlaps(axes.get_window_extent(renderer)):
                title = axes.get_title() or axes.get_title(loc="left") or f"panel {figure.axes.index(axes) + 1}"
                problems.append(f"text {text.get_text()!r} runs into panel {title!r}")
    legends = list(figure.legends) + [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]
    for legend in legends:
        entries = [text.get_text() for text in legend.get_texts()]
        problems += [f"legend lists {entry!r} twice" for entry in sorted({e for e in entries if entries.count(e) > 1})]
    return problems


def save(figure, *paths: str | Path, dpi: int = 150, tight: bool = True) -> None:
    """Write ``figure`` to each path (format from the suffix) and close it. Its title carries
    the stand-in mark where the job's data are stand-ins (``captions.stand_in_titles``); a
    layout problem (overlapping text, a legend entry listed twice) is logged as a warning
    naming the file."""
    title = figure.get_suptitle()
    if marked(title) != title and STAND_IN_MARK not in title:  # saved twice: marked once
        if figure._suptitle is not None:
            figure._suptitle.set_text(marked(title))
        else:
            figure.suptitle(marked(title), fontsize="medium")
    for problem in layout_problems(figure):
        log.warning("%s: %s", Path(paths[0]).name, problem)
    for path in paths:
        figure.savefig(path, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(figure)
