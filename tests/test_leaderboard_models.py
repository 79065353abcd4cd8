"""The leaderboard's notes on each model: the capability profile its card records, carried by
the submission and shown next to the tables."""

from __future__ import annotations

import json

import pytest
import yaml
from leaderboard_fixtures import CONFIGS, make_dataset, make_results, make_update

from ksmith.leaderboard import (
    BoardPaths,
    DatasetResolver,
    SubmitOptions,
    build_board,
    write_submission,
)
from ksmith.leaderboard.schema import ModelInfo
from ksmith.world.card import render_card

ABILITIES = {"direct": 0.97, "paraphrase": 0.61, "in_context": 0.85, "fluency": 0.93}


def _world_model(folder):
    folder.mkdir(parents=True)
    meta = {
        "abilities": ABILITIES,
        "below_threshold": ["paraphrase 0.610 < 0.900"],
        "arch": "llama",
        "layers": 2,
        "hidden": 128,
        "tokenizer": "word",
        "dataset_fingerprint": "f" * 64,
        "steps": 100,
        "stopped_by": "max_steps",
        "seed": 0,
    }
    (folder / "README.md").write_text(render_card(meta))
    return folder


def test_submission_carries_the_model_profile_and_the_board_shows_it(tmp_path):
    ds = make_dataset(tmp_path / "dataset")
    model = _world_model(tmp_path / "wm")
    update = make_update(tmp_path / "upd", "ft")
    results = []
    for c in CONFIGS:
        res = make_results(tmp_path / f"res-{c}", ds, c, "ft", update=update)
        ev = json.loads((res / "eval.json").read_text())
        ev["model"]["path"] = str(model)
        (res / "eval.json").write_text(json.dumps(ev))
        results.append(res)
    board = tmp_path / "leaderboard"
    out = board / "submissions" / "ft-profiled"
    write_submission(results, out, SubmitOptions(model_id="ksmith-world-model",
                                                 method_url="https://example.org/paper"))  # fmt: skip
    sub = yaml.safe_load((out / "submission.yaml").read_text())
    assert sub["model"]["abilities"] == ABILITIES
    assert sub["model"]["below_threshold"] == ["paraphrase 0.610 < 0.900"]
    build_board(BoardPaths(board), DatasetResolver([ds]))
    text = (board / "README.md").read_text()
    assert "## Models: what each instrument could measure" in text
    row = next(line for line in text.splitlines() if line.startswith("| ksmith-world-model |"))
    assert "0.970" in row and "0.610" in row and "paraphrase 0.610 &lt; 0.900" in row
    assert "Models: what each instrument could measure" in (board / "index.html").read_text()


def test_abilities_out_of_range_are_refused():
    with pytest.raises(ValueError, match="ability 'direct'"):
        ModelInfo(id="m", abilities={"direct": float("nan")})
    with pytest.raises(ValueError, match="ability 'direct'"):
        ModelInfo(id="m", abilities={"direct": -1.0})
    assert ModelInfo(id="m", abilities={"fluency": 1.2}).abilities == {"fluency": 1.2}
