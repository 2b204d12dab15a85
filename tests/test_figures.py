"""The report's figure layout check: overlapping text and duplicated legend entries are found
from the drawn artists' bounding boxes, and a clean figure passes."""

import logging

import numpy as np

from medaug.report.figures import layout_problems, pyplot, save


def test_overlapping_texts_and_a_legend_entry_listed_twice_are_found():
    plt = pyplot()
    figure, axes = plt.subplots(2, 1, figsize=(3, 2.2))
    axes[0].plot([0, 1], [0, 1], label="cnn")
    axes[0].plot([0, 1], [1, 0], label="cnn")
    axes[0].legend()
    # A long bottom axis label of the upper panel runs into the title of the lower one.
    axes[0].set_xlabel("synthetic images added\nto the training set")
    axes[1].set_title("pancreas: accuracy")
    problems = layout_problems(figure)
    assert "legend lists 'cnn' twice" in problems
    assert any("runs into panel 'pancreas: accuracy'" in problem for problem in problems)
    plt.close(figure)


def test_a_figure_laid_out_by_matplotlib_has_no_problems_and_hidden_axes_do_not_count(tmp_path, caplog):
    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(6, 4), layout="constrained")
    for index, axis in enumerate(axes.flat[:3]):
        axis.plot(np.arange(5), np.arange(5) * index, label=f"run {index}")
        axis.set_title(f"panel {index}")
        axis.set_xlabel("ratio")
        axis.legend()
    axes[1][1].imshow(np.zeros((4, 4)))
    axes[1][1].axis("off")  # its tick labels are not drawn, so they cannot overlap anything
    figure.suptitle("four panels")
    assert layout_problems(figure) == []
    with caplog.at_level(logging.WARNING, logger="medaug.report.figures"):
        save(figure, tmp_path / "clean.png")
    assert caplog.records == [] and (tmp_path / "clean.png").stat().st_size > 0


def test_saving_a_crowded_figure_warns_with_the_file_name(tmp_path, caplog):
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(2, 2))
    axis.text(0.5, 0.5, "first label")
    axis.text(0.5, 0.5, "second label")
    with caplog.at_level(logging.WARNING, logger="medaug.report.figures"):
        save(figure, tmp_path / "crowded.png")
    assert any("crowded.png" in r.message and "overlaps" in r.message for r in caplog.records)


def test_titles_say_stand_in_only_inside_a_stand_in_report(tmp_path):
    from medaug.report.captions import STAND_IN_MARK, stand_in_titles
    from medaug.report.tables import html_page

    plt = pyplot()
    titled, untitled, real = (plt.subplots(figsize=(3, 2), layout="constrained")[0] for _ in range(3))
    titled.suptitle("Dice vs ratio")
    with stand_in_titles(True):
        save(titled, tmp_path / "titled.png")
        save(untitled, tmp_path / "untitled.png")
        page = html_page("main table", "<table></table>")
    save(real, tmp_path / "real.png")
    assert titled.get_suptitle() == f"Dice vs ratio [{STAND_IN_MARK}]"
    assert untitled.get_suptitle() == f"[{STAND_IN_MARK}]"
    assert real.get_suptitle() == "" and STAND_IN_MARK not in html_page("main table", "")
    assert page.count(STAND_IN_MARK) == 2  # the page's title and its heading
    assert layout_problems(titled) == [] and layout_problems(untitled) == []
