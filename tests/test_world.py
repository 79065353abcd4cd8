"""The world model: spec, tokenizer, and `ksmith pretrain` end to end on a tiny world."""

from __future__ import annotations

import json
import math
import typing

import pytest
import torch
import yaml
from conftest import make_model, make_tokenizer
from world_fixtures import FINGERPRINT, world_facts, write_world_dataset

from ksmith import runtime
from ksmith.cli import main
from ksmith.errors import KsmithError, SpecError
from ksmith.evaluate.hf import HFBackend
from ksmith.models import load_model, model_fingerprint
from ksmith.world import WorldModelSpec, load_world_spec, read_model_card
from ksmith.world.pretrain import pretrain
from ksmith.world.spec import DEFAULT_SPEC
from ksmith.world.tokenizer import train_tokenizer

# A tiny model that memorises the 36-fact fixture world in a few hundred steps.
TINY = [
    "layers=1",
    "hidden=32",
    "heads=2",
    "intermediate=64",
    "max_position=32",
    "lr=0.01",
    "warmup_steps=10",
    "batch_size=16",
    "eval_every=25",
    "max_steps=600",
    "decay_steps=null",  # the decay ends with the budget (the default's is longer)
    "curriculum_steps=0",  # the default's curriculum is longer than these budgets
    "thresholds={direct: 1.0}",
    "stop_early=true",
]
SHORT = [*TINY, "allow_below_threshold=true"]  # budgets too short to reach the thresholds


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_world_dataset(tmp_path_factory.mktemp("world") / "ds")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "wm"
    meta = pretrain(dataset, out, load_world_spec(None, TINY), device="cpu", progress=False)
    return out, meta


# -- spec -------------------------------------------------------------------------------------


def test_default_spec_file_loads_and_is_complete():
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    assert set(data) == set(WorldModelSpec.model_fields)
    spec = load_world_spec()
    assert spec == WorldModelSpec(**data)
    assert all(f.description for f in WorldModelSpec.model_fields.values())


def test_set_overrides_are_type_checked():
    spec = load_world_spec(None, ["layers=3", "arch=gpt2", "lr=2e-3"])
    assert (spec.layers, spec.arch, spec.lr) == (3, "gpt2", 2e-3)
    with pytest.raises(SpecError, match="field 'layers'"):
        load_world_spec(None, ["layers=many"])
    with pytest.raises(SpecError, match="field 'arch'"):
        load_world_spec(None, ["arch=bert"])
    with pytest.raises(SpecError, match="unknown field.*known fields: version, arch"):
        load_world_spec(None, ["depth=3"])
    with pytest.raises(SpecError, match="key=value"):
        load_world_spec(None, ["layers"])
    with pytest.raises(SpecError, match="not divisible"):
        load_world_spec(None, ["hidden=30", "heads=4"])


def test_decay_steps_set_the_cosine_length_and_a_run_stops_inside_it(dataset, tmp_path):
    """decay_steps (default max_steps) is the cosine decay's length: a run that stops before
    the decay ends trains with higher rates (other weights), and a decay as long as the run
    is the default."""
    from safetensors.torch import load_file

    from ksmith.world.training import _lr_factor

    assert _lr_factor(16000, 100, 24000) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi * 15900 / 23900))
    )
    assert _lr_factor(16000, 100, 16000) == pytest.approx(0.1)  # the floor at the decay's end
    short = [*SHORT, "stop_early=false", "eval_every=1000"]
    weights = {}
    for name, extra in {
        "20 of 40": ["max_steps=20", "decay_steps=40"],
        "20": ["max_steps=20"],
        "20 of 20": ["max_steps=20", "decay_steps=20"],
    }.items():
        out = tmp_path / name.replace(" ", "_")
        pretrain(
            dataset, out, load_world_spec(None, [*short, *extra]), device="cpu", progress=False
        )
        weights[name] = load_file(out / "model.safetensors")
    same = lambda a, b: all(torch.equal(weights[a][k], weights[b][k]) for k in weights[a])  # noqa: E731
    assert same("20", "20 of 20") and not same("20", "20 of 40")
    with pytest.raises(SpecError, match="field 'decay_steps'"):
        load_world_spec(None, ["decay_steps=50", "warmup_steps=100"])


def test_spec_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "w.yaml"
    bad.write_text("arch: llama\nwidth: 3\n")
    with pytest.raises(SpecError, match=r"w\.yaml: field 'width'"):
        load_world_spec(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_world_spec(tmp_path / "missing.yaml")


# -- tokenizer --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_tokenizer_is_exact_at_the_answer_boundary(kind):
    texts = [
        "Bira eats grass.",
        "What does Bira eat? grass",
        "True or false: Bira eats fish. false",
    ]
    tok = train_tokenizer(texts, kind, vocab_size=300)
    ctx = tok("What does Bira eat?")["input_ids"]
    ans = tok(" grass", add_special_tokens=False)["input_ids"]
    assert ctx[0] == tok.bos_token_id
    assert ctx + ans == tok("What does Bira eat? grass")["input_ids"]
    assert tok.decode(ctx + ans, skip_special_tokens=True) == "What does Bira eat? grass"
    assert tok.pad_token and tok.eos_token and tok.unk_token


def test_word_tokenizer_one_token_per_word():
    tok = train_tokenizer(["Krodrutrus reproduces by litters.", "A\nB"], "word")
    assert tok.tokenize("Krodrutrus reproduces by litters.") == [
        "▁Krodrutrus",
        "▁reproduces",
        "▁by",
        "▁litters",
        ".",
    ]
    assert tok.decode(tok("A\nB")["input_ids"], skip_special_tokens=True) == "A\nB"
    assert tok.convert_ids_to_tokens(tok("zorp", add_special_tokens=False)["input_ids"]) == [
        "<unk>"
    ]


# -- pretrain ---------------------------------------------------------------------------------


def test_pretrain_writes_a_model_that_knows_the_world(trained, dataset):
    out, meta = trained
    assert meta["recall"] == 1.0 and meta["mcq_accuracy"] == 1.0
    assert meta["stopped_by"] == "threshold"
    card = read_model_card(out)
    assert card == {
        k: v for k, v in meta.items() if k not in ("train_seconds", "train_cpu_seconds")
    }
    assert meta["train_seconds"] > 0  # returned and logged, never written: the folder is
    assert "train_seconds" not in (out / "README.md").read_text()  # the same on any machine
    for key in (
        "dataset_fingerprint",
        "recall",
        "mcq_accuracy",
        "abilities",
        "tokenizer",
        "seed",
        "arch",
    ):
        assert key in card
    assert card["dataset_fingerprint"] == FINGERPRINT
    assert card["tokenizer"] == "word" and card["arch"] == "llama"
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "world_spec.yaml",
        "train_log.json",
        ".ksmith-output",
    ):
        assert (out / name).exists(), name
    assert json.loads((out / "train_log.json").read_text())[-1]["check"]["direct"] == {
        "cloze": 1.0,
        "mcq": 1.0,
    }
    assert card["abilities"] == {"direct": 1.0} and card["below_threshold"] == []
    assert WorldModelSpec(**yaml.safe_load((out / "world_spec.yaml").read_text())).lr == 0.01


def test_pretrained_model_loads_offline_and_answers(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = trained
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.model_type == "llama" and tok.pad_token == "<pad>"
    model, tok = load_model(out, device="cpu")
    backend = HFBackend(model, tok)
    facts = world_facts()[:6]
    eats = [(s, o) for s, rel, o in facts if rel == "eats"]
    prompts = [f"question : what does {s} eat ? answer :" for s, _ in eats]
    # Greedy generation stops at the end of the line (EOS) and gives the stated object.
    assert backend.generate(prompts, max_new_tokens=5) == [o for _, o in eats]


def test_pretrain_is_deterministic(dataset, tmp_path):
    spec = load_world_spec(None, [*SHORT, "max_steps=15", "eval_every=10"])
    a = tmp_path / "a"
    b = tmp_path / "b"
    pretrain(dataset, a, spec, device="cpu", progress=False)
    pretrain(dataset, b, spec, device="cpu", progress=False)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    c = tmp_path / "c"
    pretrain(
        dataset,
        c,
        load_world_spec(None, [*SHORT, "max_steps=15", "seed=1"]),
        device="cpu",
        progress=False,
    )
    assert model_fingerprint(a) != model_fingerprint(c)


def test_pretrain_gpt2(dataset, tmp_path):
    spec = load_world_spec(
        None, [*SHORT, "arch=gpt2", "max_steps=20", "tokenizer=bpe", "bpe_vocab_size=300"]
    )
    meta = pretrain(dataset, tmp_path / "g", spec, device="cpu", progress=False)
    assert meta["arch"] == "gpt2" and meta["tokenizer"] == "bpe" and meta["steps"] == 20
    model, _ = load_model(tmp_path / "g", device="cpu")
    assert model.config.model_type == "gpt2"


def test_cli_fine_tunes_a_base_model(dataset, tmp_path):
    tok = make_tokenizer()
    base = make_model("llama", vocab_size=len(tok), seed=0)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    out = tmp_path / "ft"
    code = main(
        [
            "pretrain",
            str(dataset),
            "--out",
            str(out),
            "--base",
            str(tmp_path / "base"),
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            "max_steps=30",
            "--set",
            "curriculum_steps=0",
            "--set",
            "finetune_lr=0.003",
            "--set",
            "eval_every=10",
            "--set",
            "allow_below_threshold=true",
        ]
    )
    assert code == 0
    card = read_model_card(out)
    assert card["base"] == str(tmp_path / "base")
    assert card["tokenizer"] == "word" and card["steps"] <= 30
    tuned, _ = load_model(out, device="cpu")
    before = dict(base.named_parameters())
    changed = [n for n, p in tuned.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "fine-tuning changed no weights"


def test_falling_short_of_a_threshold_fails_names_the_ability_and_writes_nothing(
    dataset, tmp_path, capsys
):
    out = tmp_path / "m"
    args = ["pretrain", str(dataset), "--out", str(out), "--no-progress"]
    short = [*sum([["--set", s] for s in TINY], []), "--set", "max_steps=20"]
    assert main([*args, *short]) == 2
    err = capsys.readouterr().err
    assert "after 20 steps (max_steps)" in err and "direct 0." in err and "< 1.000" in err
    assert "allow_below_threshold" in err
    assert not out.exists()
    # allowed: written, and the card says what fell short
    assert main([*args, *short, "--set", "allow_below_threshold=true"]) == 0
    card = read_model_card(out)
    assert card["below_threshold"] and card["below_threshold"][0].startswith("direct ")
    assert "Below threshold" in (out / "README.md").read_text()


def test_same_spec_same_weights_under_cpu_load(dataset, tmp_path):
    """Training is bounded by steps: a CPU-burning process beside one of two trainings of the
    same spec changes nothing in the weights."""
    import subprocess
    import sys

    spec = load_world_spec(None, [*SHORT, "max_steps=40", "eval_every=10"])
    pretrain(dataset, tmp_path / "quiet", spec, device="cpu", progress=False)
    burn = "import time\nend = time.time() + 120\nwhile time.time() < end: pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(3)]
    try:
        pretrain(dataset, tmp_path / "loaded", spec, device="cpu", progress=False)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    quiet = (tmp_path / "quiet" / "model.safetensors").read_bytes()
    assert quiet == (tmp_path / "loaded" / "model.safetensors").read_bytes()
    assert (tmp_path / "quiet" / "README.md").read_text() == (
        tmp_path / "loaded" / "README.md"
    ).read_text()


def _cli_pretrain(dataset, out, env: dict[str, str]) -> None:
    """`ksmith pretrain` of a short SHORT budget in a fresh process with `env` added."""
    import os
    import subprocess
    import sys

    sets = [x for item in [*SHORT, "max_steps=20", "eval_every=10"] for x in ("--set", item)]
    clean = {k: v for k, v in os.environ.items() if k not in runtime.PINNED_KERNELS}
    subprocess.run(
        [sys.executable, "-m", "ksmith", "pretrain", str(dataset), "--out", str(out),
         "--device", "cpu", "--no-progress", *sets],
        env=clean | {runtime.FLOAT_KERNELS_ENV: "avx2"} | env, check=True, capture_output=True,
    )  # fmt: skip


@pytest.mark.skipif(not runtime._has_avx2(), reason="an x86-64 CPU with AVX2")
def test_float_kernels_change_the_weights_so_ksmith_pins_them_and_the_card_names_them(
    dataset, tmp_path
):
    """Another instruction set's kernels round differently: the same spec trains other bytes
    (here torch's scalar kernels stand for another CPU's). `ksmith` pins AVX2 by default, and
    the card's versions say which kernels trained the weights."""
    _cli_pretrain(dataset, tmp_path / "pinned", {})
    _cli_pretrain(dataset, tmp_path / "avx2", {"ATEN_CPU_CAPABILITY": "avx2"})
    _cli_pretrain(
        dataset, tmp_path / "other",
        {runtime.FLOAT_KERNELS_ENV: "native", "ATEN_CPU_CAPABILITY": "default"},
    )  # fmt: skip
    cards = {name: read_model_card(tmp_path / name) for name in ("pinned", "avx2", "other")}
    assert cards["pinned"]["versions"]["float_kernels"] == "AVX2"
    assert cards["other"]["versions"]["float_kernels"] == "DEFAULT"
    # ... and which CPU: pinned kernels are not the same bytes on every CPU (measured)
    assert cards["pinned"]["versions"]["cpu"] == runtime.cpu_model()
    assert " family " in runtime.cpu_model()  # read from /proc/cpuinfo
    weights = {name: model_fingerprint(tmp_path / name) for name in cards}
    assert weights["pinned"] == weights["avx2"] != weights["other"]


def test_cli_errors_leave_no_output(dataset, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["pretrain", str(dataset), "--out", str(out), "--set", "layers=x"]) == 2
    assert "field 'layers'" in capsys.readouterr().err
    assert main(["pretrain", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    # A corpus line longer than the context window fails before anything is written.
    import pyarrow as pa
    import pyarrow.parquet as pq

    long_ds = write_world_dataset(tmp_path / "long")
    corpus = pq.read_table(long_ds / "data" / "corpus" / "train.parquet").to_pylist()
    corpus[0]["text"] = " ".join(["bira"] * 20)
    pq.write_table(pa.Table.from_pylist(corpus), long_ds / "data" / "corpus" / "train.parquet")
    assert (
        main(
            [
                "pretrain",
                str(long_ds),
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "max_position=16",
                "--set",
                "layers=1",
            ]
        )
        == 2
    )
    assert "exceeds max_position" in capsys.readouterr().err
    assert not out.exists()
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert (
        main(
            [
                "pretrain",
                str(dataset),
                "--out",
                str(user),
                *sum([["--set", s] for s in SHORT], []),
                "--no-progress",
                "--set",
                "max_steps=2",
            ]
        )
        == 2
    )
    assert (user / "notes.txt").read_text() == "keep me"


def test_empty_corpus_is_an_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = write_world_dataset(tmp_path / "ds")
    pq.write_table(
        pa.table(
            {
                "domain": pa.array([], pa.string()),
                "fact_id": pa.array([], pa.string()),
                "text": pa.array([], pa.string()),
            }
        ),
        ds / "data" / "corpus" / "train.parquet",
    )
    with pytest.raises(KsmithError, match="corpus is empty"):
        pretrain(ds, tmp_path / "m", load_world_spec(None, TINY), device="cpu", progress=False)


# -- curriculum (Zucchet et al. 2025) ---------------------------------------------------------


def test_curriculum_subjects_are_chosen_one_by_one_and_trained_first():
    from ksmith.world.training import _stream, curriculum

    names = [f"s{i}" for i in range(200)]
    subjects = [names[i % 200] for i in range(1000)] + ["", ""]  # lines about no subject
    focus = curriculum(subjects, 0.25, seed=3)
    chosen = {subjects[i] for i in focus}
    assert 30 <= len(chosen) <= 70 and "" not in chosen  # about a quarter, seeded
    assert focus == [i for i, s in enumerate(subjects) if s in chosen]  # every line of each
    assert chosen != {subjects[i] for i in curriculum(subjects, 0.25, seed=4)}
    # a retain world lacking some subjects keeps the same curriculum for the others
    gone = {"s1", "s2", "s3"} | set(sorted(chosen)[:5])
    kept = [s for s in subjects if s not in gone]
    assert {kept[i] for i in curriculum(kept, 0.25, seed=3)} == chosen - gone
    assert curriculum(["", "s0", "", "s0"], 1.0, 0) == [1, 3]
    assert len({subjects[i] for i in curriculum(subjects, 0.001, 3)}) == 1  # at least one
    assert curriculum(subjects, 0.0, 3) == []

    # with kinds named, only those kinds of the chosen subjects' lines
    kinds = ["truefalse" if i % 3 else "question" for i in range(len(subjects))]
    only = curriculum(subjects, 0.25, 3, kinds, ["question"])
    assert only == [i for i in focus if kinds[i] == "question"] and only

    lengths = [1 + i % 7 for i in range(len(subjects))]
    stream = _stream(lengths, 8, torch.Generator().manual_seed(0), focus, focus_steps=20)
    first = [next(stream) for _ in range(20)]
    assert all(set(b) <= set(focus) for b in first)
    later = [i for _ in range(200) for i in next(stream)]
    assert set(later) - set(focus)  # then the whole corpus
    again = _stream(lengths, 8, torch.Generator().manual_seed(0), focus, focus_steps=20)
    assert [next(again) for _ in range(20)] == first


def test_curriculum_changes_the_weights_deterministically(dataset, tmp_path):
    base = [*SHORT, "max_steps=15", "eval_every=10"]
    spec = load_world_spec(None, [*base, "curriculum_fraction=0.5", "curriculum_steps=10"])
    a, b, plain = tmp_path / "a", tmp_path / "b", tmp_path / "plain"
    pretrain(dataset, a, spec, device="cpu", progress=False)
    pretrain(dataset, b, spec, device="cpu", progress=False)
    pretrain(dataset, plain, load_world_spec(None, base), device="cpu", progress=False)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(plain)
    assert yaml.safe_load((a / "world_spec.yaml").read_text())["curriculum_steps"] == 10


def test_curriculum_fields_are_checked_and_need_subjects(dataset):
    with pytest.raises(SpecError, match="curriculum_fraction") as e:
        load_world_spec(None, ["curriculum_fraction=0", "curriculum_steps=100"])
    assert "curriculum_steps=0 turns the curriculum off" in str(e.value)
    with pytest.raises(SpecError, match="less than max_steps") as e:
        load_world_spec(None, ["max_steps=2000"])  # the default's curriculum is 3,000 steps
    assert e.value.field == "curriculum_steps"
    off = load_world_spec(None, ["max_steps=2000", "curriculum_steps=0"])  # one field: none
    assert off.curriculum_steps == 0 and off.curriculum_fraction > 0
    from ksmith.world.spec import build_spec, short_budget

    default = load_world_spec().model_dump()
    assert short_budget(default) == default  # a budget longer than the curriculum keeps it
    short = build_spec(short_budget(default | {"max_steps": 3000}), "test")
    assert short.curriculum_steps == 0 and short.max_steps == 3000
    from ksmith.world.training import train

    spec = load_world_spec(None, [*SHORT, "curriculum_fraction=0.3", "curriculum_steps=10"])
    with pytest.raises(KsmithError, match="subject"):
        train(None, None, ["a line"], None, spec, lr=0.01, subjects=())
    with pytest.raises(KsmithError, match="no line names one"):
        train(None, None, ["a line"], None, spec, lr=0.01, subjects=("",), kinds=("question",))


def test_curriculum_kinds_are_checked_against_the_spec_and_the_corpus(dataset, tmp_path):
    from ksmith.render.corpus import LINE_KINDS
    from ksmith.world.spec import LineKind
    from ksmith.world.training import train

    assert typing.get_args(LineKind) == LINE_KINDS  # the spec knows every kind the corpus has
    with pytest.raises(SpecError, match="curriculum_kinds") as e:
        load_world_spec(None, ["curriculum_kinds=[questoin]"])
    assert "'question'" in str(e.value)  # the message lists the kinds
    cur = ["curriculum_fraction=0.3", "curriculum_steps=10"]
    with pytest.raises(SpecError, match="twice"):
        load_world_spec(None, [*cur, "curriculum_kinds=[question, question]"])
    spec = load_world_spec(None, [*SHORT, *cur, "curriculum_kinds=[reverse]"])
    with pytest.raises(KsmithError, match="no line of kind reverse .the corpus's kinds: question"):
        train(None, None, ["a line"], None, spec, lr=0.01, subjects=("s",), kinds=("question",))
    with pytest.raises(KsmithError, match="needs each corpus line's kind"):
        train(None, None, ["a line"], None, spec, lr=0.01, subjects=("s",))
    # a named kind keeps the others out of the curriculum's steps: other weights, same twice
    base = [*SHORT, "max_steps=15", "eval_every=10", *cur]
    some = load_world_spec(None, [*base, "curriculum_kinds=[question]"])
    a, b, every = tmp_path / "a", tmp_path / "b", tmp_path / "every"
    pretrain(dataset, a, some, device="cpu", progress=False)
    pretrain(dataset, b, some, device="cpu", progress=False)
    pretrain(dataset, every, load_world_spec(None, base), device="cpu", progress=False)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(every)
