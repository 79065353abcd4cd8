"""The built index.html in headless Chromium: it loads from file://, lists every submission,
sorts a table by a clicked column, filters by kind, level, scale and model, and draws the
scale curves and the trade-off plot (checked on screenshots) in each method's own colour, with
no network."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from leaderboard_fixtures import CONFIGS, make_dataset, make_results, make_submission, make_update

from ksmith.leaderboard import BoardPaths, DatasetResolver, SubmitOptions, build_board
from ksmith.leaderboard.svg import METHOD_COLORS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver (apt-get install -y chromium chromium-driver)",
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    ds = make_dataset(tmp / "dataset")
    board = tmp / "leaderboard"
    make_submission(tmp, ds, "ft-good", "ft", skill=0.85, board=board)
    make_submission(tmp, ds, "rome-weak", "rome", skill=0.55, configs=CONFIGS[:3], board=board)
    make_submission(tmp, ds, "zz-mid", "memit", skill=0.7, configs=CONFIGS[:2], board=board)
    make_submission(tmp, ds, "world-none", "none", skill=0.3, board=board)  # the baseline
    # rome again, on another model that was submitted by its local path
    from ksmith.leaderboard import write_submission

    update = make_update(tmp / "upd-llama", "rome")
    results = [
        make_results(tmp / f"res-llama-{c}", ds, c, "rome", skill=0.7, update=update)
        for c in CONFIGS
    ]
    options = SubmitOptions(model_id="/home/someone/models/tiny-llama")
    write_submission(results, board / "submissions" / "rome-llama", options)
    build_board(BoardPaths(board), DatasetResolver([ds]))
    return board / "index.html"


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def _column(driver, table_id: str, col: int) -> list[str]:
    rows = driver.find_elements("css selector", f"#{table_id} tbody tr")
    return [r.find_elements("css selector", "td")[col].text for r in rows]


def _numbers(texts: list[str]) -> list[float]:
    """A numeric column's values (a composite is followed by its interval)."""
    return [float(t.split()[0]) for t in texts]


def _header(driver, table_id: str, text: str):
    for th in driver.find_elements("css selector", f"#{table_id} thead th"):
        if th.text.startswith(text):
            return th
    raise AssertionError(f"no header {text!r} in #{table_id}")


def test_page_loads_and_lists_every_submission(page, driver):
    driver.get(page.as_uri())
    assert driver.find_element("tag name", "body").get_attribute("data-ready") == "1"
    assert driver.title == "ksmith leaderboard"
    subs = sorted(_column(driver, "submissions", 0))
    assert subs == ["ft-good", "rome-llama", "rome-weak", "world-none", "zz-mid"]
    # the editing table ranks the complete submissions; zz-mid covers 2 cells, listed apart
    ranked = ["ft-good", "rome-llama", "rome-weak", "world-none"]
    assert sorted(_column(driver, "t1", 1)) == ranked
    curves = driver.find_elements("css selector", "svg.curve")
    assert curves and all(c.size["width"] > 0 for c in curves)
    # nothing was fetched: the page is one self-contained file
    resources = driver.execute_script("return performance.getEntriesByType('resource').length")
    assert resources == 0


def test_clicking_a_header_sorts_the_table(page, driver):
    driver.get(page.as_uri())
    ranked = _column(driver, "t1", 1)
    composite = _numbers(_column(driver, "t1", 5))
    assert composite == sorted(composite, reverse=True)  # built ranked, best first

    _header(driver, "t1", "composite").click()  # ascending
    values = _numbers(_column(driver, "t1", 5))
    assert values == sorted(values)
    assert _column(driver, "t1", 1) == list(reversed(ranked))
    _header(driver, "t1", "composite").click()  # descending
    assert _column(driver, "t1", 1) == ranked

    _header(driver, "t1", "submission").click()  # a text column
    assert _column(driver, "t1", 1) == sorted(ranked)
    assert _header(driver, "t1", "submission").get_attribute("aria-sort") == "ascending"


def _visible_rows(driver, table_id: str) -> list[str]:
    rows = driver.find_elements("css selector", f"#{table_id} tbody tr")
    return [r.find_elements("css selector", "td")[1].text for r in rows if r.is_displayed()]


def _select(driver, name: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("css selector", f'select[data-filter="{name}"]')).select_by_value(
        value
    )


def test_models_are_ids_and_methods_link_their_paper_and_code(page, driver):
    driver.get(page.as_uri())
    assert "/home/someone" not in driver.page_source
    models = set(_column(driver, "t1", 3))
    assert models == {"models/world", "tiny-llama"}
    row = next(
        r
        for r in driver.find_elements("css selector", "#submissions tbody tr")
        if r.find_element("css selector", "td").text == "rome-weak"
    )
    links = {a.text: a.get_attribute("href") for a in row.find_elements("css selector", "a")}
    assert links["paper"] == "https://arxiv.org/abs/2202.05262"  # ROME, from the registry
    assert links["code"].startswith("https://github.com/")
    assert links["url"] == "https://example.org/paper"  # the submitted one stays first


def test_filters_by_kind_level_scale_and_model(page, driver):
    driver.get(page.as_uri())
    boards = driver.find_elements("css selector", "section.board")
    assert {b.get_attribute("data-kind") for b in boards} == {"edit", "unlearn"}
    _select(driver, "kind", "edit")
    assert [b.is_displayed() for b in boards] == [
        b.get_attribute("data-kind") == "edit" for b in boards
    ]
    _select(driver, "level", "leaf")
    shown = [
        d.get_attribute("data-slice")
        for d in driver.find_elements("css selector", "section.board div.slice")
        if d.is_displayed()
    ]
    assert shown == ["level=leaf"]
    _select(driver, "level", "")
    _select(driver, "scale", "4")
    shown = [
        d.get_attribute("data-slice")
        for d in driver.find_elements("css selector", "section.board div.slice")
        if d.is_displayed()
    ]
    assert shown == ["scale=4"]
    _select(driver, "scale", "")
    _select(driver, "model", "tiny-llama")
    assert _visible_rows(driver, "t1") == ["rome-llama"]
    _select(driver, "model", "")
    assert sorted(_visible_rows(driver, "t1")) == [
        "ft-good",
        "rome-llama",
        "rome-weak",
        "world-none",
    ]


def test_composites_carry_intervals_and_plots_error_bars(page, driver):
    driver.get(page.as_uri())
    for text in _column(driver, "t1", 5):
        value, lo, hi = (float(x.strip("[],")) for x in text.split())
        assert lo <= value <= hi
    curve = driver.find_elements("css selector", "svg.curve")[0]
    assert curve.find_elements("css selector", "line.err")
    (trade,) = driver.find_elements("css selector", "section.board[data-kind=edit] svg.tradeoff")
    dots = trade.find_elements("css selector", "circle")
    assert sorted(d.get_attribute("data-series") for d in dots) == [
        "ft-good", "rome-llama", "rome-weak", "world-none"
    ]  # fmt: skip


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))


def _pixels_near(png: bytes, color: tuple[int, int, int], tol: int = 40) -> int:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    return int((np.abs(img - np.array(color)).max(axis=-1) <= tol).sum())


def test_screenshots_show_the_plots_in_each_methods_colour(page, driver, tmp_path):
    driver.set_window_size(1300, 1000)
    driver.get(page.as_uri())
    rome = _rgb(METHOD_COLORS["rome"])
    edit = "section.board[data-kind=edit]"
    for svg in driver.find_elements("css selector", f"{edit} svg.curve, {edit} svg.tradeoff"):
        driver.execute_script("arguments[0].scrollIntoView()", svg)
        png = svg.screenshot_as_png
        (tmp_path / f"{svg.get_attribute('data-metric')}.png").write_bytes(png)
        # rome's two submissions are drawn (lines, markers, error bars) in rome's colour
        assert _pixels_near(png, rome) > 30, svg.get_attribute("data-metric")
    # the colour is the method's, whatever else is on the board
    strokes = {
        p.get_attribute("data-series"): p.get_attribute("stroke")
        for p in driver.find_elements("css selector", f"{edit} svg.curve polyline")
    }
    assert strokes["rome-weak"] == strokes["rome-llama"] == METHOD_COLORS["rome"]
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)  # never repeated


def test_a_submission_drills_down_to_its_example_predictions(page, driver):
    driver.get(page.as_uri())
    details = driver.find_element("id", "ex-rome-weak")
    assert details.get_attribute("open") is None  # collapsed until asked for
    link = next(a for a in driver.find_elements("css selector", "#t1 a") if a.text == "rome-weak")
    link.click()
    assert details.get_attribute("open") == "true"
    rows = details.find_elements("css selector", "tbody tr")
    cells = [[td.text for td in r.find_elements("css selector", "td")] for r in rows]
    direct = next(c for c in cells if c[0] == "zoo.edit.leaf.k1" and c[1].startswith("direct"))
    assert direct[3] == "bira eats"  # the prompt, from the released dataset
    assert direct[4] == "grass → meat" and direct[5] == "grass"  # expected; before the update
    assert direct[7] in ("✓", "✗")
    driver.get(page.as_uri() + "#ex-ft-good")  # a link from elsewhere opens it too
    details = driver.find_element("id", "ex-ft-good")
    assert details.get_attribute("open") == "true"
    rows = details.find_elements("css selector", "tbody tr")
    cells = [[td.text for td in r.find_elements("css selector", "td")] for r in rows]
    unlearn = next(c for c in cells if c[0] == "zoo.unlearn.leaf.k1" and c[1].startswith("direct"))
    assert unlearn[4].endswith("→ not grass")  # unlearning: anything but the old answer


def test_the_no_update_baseline_is_a_reference_row(page, driver):
    driver.get(page.as_uri())
    ranks = dict(zip(_column(driver, "t1", 1), _column(driver, "t1", 0), strict=True))
    assert ranks["world-none"] == "ref"
    assert sorted(r for s, r in ranks.items() if s != "world-none") == ["1", "2", "3"]
    (row,) = driver.find_elements("css selector", "#t1 tbody tr[data-ref]")
    assert row.find_elements("css selector", "td")[1].text == "world-none"
    assert row.value_of_css_property("font-style") == "italic"


def test_reasoned_examples_show_where_the_model_writes_its_recall():
    from ksmith.leaderboard.examples import shown_prompt

    tf = {"prompt": "True or false: Rile eats meat.", "cue": "Answer:"}
    assert shown_prompt(tf) == "True or false: Rile eats meat. … Answer:"
    assert shown_prompt({"prompt": "Rile eats", "cue": ""}) == "Rile eats"
    assert shown_prompt({"prompt": "Rile eats"}) == "Rile eats"  # format-4 rows have no cue
