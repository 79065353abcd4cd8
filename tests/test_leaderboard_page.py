"""The built index.html in headless Chromium: it loads from file://, lists every submission,
sorts a table by a clicked column, and shows the scale curves, with no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from leaderboard_fixtures import CONFIGS, make_dataset, make_submission

from ksmith.leaderboard import BoardPaths, DatasetResolver, build_board

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


def _header(driver, table_id: str, text: str):
    for th in driver.find_elements("css selector", f"#{table_id} thead th"):
        if th.text.startswith(text):
            return th
    raise AssertionError(f"no header {text!r} in #{table_id}")


def test_page_loads_and_lists_every_submission(page, driver):
    driver.get(page.as_uri())
    assert driver.find_element("tag name", "body").get_attribute("data-ready") == "1"
    assert driver.title == "ksmith leaderboard"
    assert sorted(_column(driver, "submissions", 0)) == ["ft-good", "rome-weak", "zz-mid"]
    # the editing table ranks the complete submissions; zz-mid covers 2 cells, listed apart
    assert sorted(_column(driver, "t1", 1)) == ["ft-good", "rome-weak"]
    curves = driver.find_elements("css selector", "svg.curve")
    assert curves and all(c.size["width"] > 0 for c in curves)
    # nothing was fetched: the page is one self-contained file
    resources = driver.execute_script("return performance.getEntriesByType('resource').length")
    assert resources == 0


def test_clicking_a_header_sorts_the_table(page, driver):
    driver.get(page.as_uri())
    ranked = _column(driver, "t1", 1)
    composite = [float(x) for x in _column(driver, "t1", 5)]
    assert composite == sorted(composite, reverse=True)  # built ranked, best first

    _header(driver, "t1", "composite").click()  # ascending
    values = [float(x) for x in _column(driver, "t1", 5)]
    assert values == sorted(values)
    assert _column(driver, "t1", 1) == list(reversed(ranked))
    _header(driver, "t1", "composite").click()  # descending
    assert _column(driver, "t1", 1) == ranked

    _header(driver, "t1", "submission").click()  # a text column
    assert _column(driver, "t1", 1) == sorted(ranked)
    assert _header(driver, "t1", "submission").get_attribute("aria-sort") == "ascending"
