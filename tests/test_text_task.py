"""``kind: text``: a corpus built at run time (nothing is downloaded), a BPE trained on its
training lines, a model that trains on it beside a rare task, and a saved model whose
tokenizer and weights ``from_pretrained`` reloads together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from optimix.core.space import build_space
from optimix.trial.tasks import build_tasks
from optimix.trial.train import run_trial

from conftest import tiny_space

ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "yak", "emu"]
VERBS = ["sees", "chases", "likes", "follows", "meets"]


def corpus(path, n: int = 600, seed: int = 0) -> list[str]:
    """Sentences of a small grammar: structure a model can learn, words a BPE can merge."""
    rng = np.random.default_rng(seed)
    lines = [f"the {rng.choice(ANIMALS)} {rng.choice(VERBS)} the {rng.choice(ANIMALS)} at dawn."
             for _ in range(n)]
    if path.suffix == ".txt":
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps({"body": line}) + "\n" for line in lines))
    return lines


def tree(path, **text) -> dict:
    return tiny_space("text",
                      tasks={"prose": {"kind": "text", "path": str(path), "vocab_size": 300, "max_tokens": 16,
                                       **text}, "facts": {}},
                      mixture={"rare_freq": 0.1}, model={"d_model": 32, "n_layer": 2},
                      train={"tokens": 60_000, "lr": 0.01, "device": "cpu"}, eval={"points": 1}, search=None)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_the_bpe_gives_the_model_its_ids_and_the_same_config_the_same_data(tmp_path, suffix):
    lines = corpus(tmp_path / f"c{suffix}")
    extra = {} if suffix == ".txt" else {"column": "body"}
    config = build_space(tree(tmp_path / f"c{suffix}", **extra)).base
    a, b = build_tasks(config), build_tasks(config)
    assert a.vocab.pieces and a.vocab.pieces == b.vocab.pieces  # deterministic BPE
    np.testing.assert_array_equal(a.tasks["prose"].eval_ids, b.tasks["prose"].eval_ids)
    tok = a.vocab.to_hf_tokenizer()
    assert tok.convert_ids_to_tokens(a.vocab.tag("prose")) == "<t:prose>"
    ids = tok(lines[0], add_special_tokens=False)["input_ids"]
    assert min(ids) >= a.vocab.size - len(a.vocab.pieces) and max(ids) < a.vocab.size
    assert tok.decode(ids) == lines[0]
    assert len(ids) < len(lines[0]) / 2  # merged into pieces, not bytes
    held = {tuple(r) for r in a.tasks["prose"].eval_ids.tolist()}
    trained = {tuple(r) for r in a.tasks["prose"].sample(np.random.default_rng(0), 4000)[0].tolist()}
    assert len(held - trained) >= 1  # evaluation lines are held out (repeated sentences aside)


def test_a_text_task_trains_saves_and_reloads_with_its_tokenizer(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lines = corpus(tmp_path / "c.txt")
    config = build_space(tree(tmp_path / "c.txt")).base
    result = run_trial(config, save_dir=tmp_path / "model")
    assert result.status == "ok"
    uniform = np.log(build_tasks(config).vocab.size)
    assert result.loss["prose"] < 0.5 * uniform  # it learned the grammar, not just the pieces
    assert 0.3 < result.accuracy["prose"] <= 1  # next-token accuracy on held-out lines
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    text = "<t:prose>" + lines[1]
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert loss < 0.5 * uniform


def test_a_missing_corpus_or_column_is_bad_input(tmp_path):
    from optimix.core.config import SpaceError

    corpus(tmp_path / "c.jsonl")
    with pytest.raises(SpaceError, match=r"^tasks\.prose\.column: no column 'text'"):
        build_tasks(build_space(tree(tmp_path / "c.jsonl")).base)
    with pytest.raises(SpaceError, match=r"^tasks\.prose\.path: no such file"):
        build_tasks(build_space(tree(tmp_path / "missing.txt")).base)


def test_a_null_line_in_a_json_corpus_is_refused_naming_its_row(tmp_path):
    from optimix.core.config import SpaceError

    lines = corpus(tmp_path / "c.jsonl", n=10)
    rows = [{"body": line} for line in lines[:3]] + [{"body": None}] + [{"body": line} for line in lines[3:]]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SpaceError, match=r"^tasks\.prose\.column: .*c\.jsonl row 4 is not text \(None\)$"):
        build_tasks(build_space(tree(tmp_path / "c.jsonl", column="body")).base)


def test_a_corpus_without_long_runs_trains_the_same_bpe_as_tokenizers_alone(tmp_path):
    """``BPE_RUN`` cuts only runs longer than it: an ordinary corpus's tokenizer is unchanged."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from optimix.trial.text_task import BPE_RUN, train_bpe

    lines = corpus(tmp_path / "c.txt", n=400) + ["x" * BPE_RUN + " and " + "-" * BPE_RUN]
    specials = ["<pad>", "<t:prose>"]
    ours = train_bpe(lines, specials, 300)
    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain.decoder = decoders.ByteLevel()
    plain.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=len(specials) + 300, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    assert ours.to_str() == plain.to_str()


def test_one_very_long_line_trains_in_seconds(tmp_path, capsys):
    """A 5 MB line without a space took hours (BPE learns merges inside a word in time
    quadratic in its length). BPE now reads no pre-token longer than ``BPE_RUN`` (its work is
    then linear in the corpus: checked on the pieces, not on a clock), and the corpus validates
    (seconds here; the old code did not finish)."""
    import re

    from optimix.cli import main as cli_main
    from optimix.trial.text_task import BPE_RUN, bpe_pieces

    lines = corpus(tmp_path / "c.txt", n=200)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    long_line = "".join(np.random.default_rng(0).choice(letters, 5_000_000))
    pieces = list(bpe_pieces("a b " + long_line + "  c"))
    assert "".join(pieces) == "a b " + long_line + "  c"  # nothing lost, only cut
    assert max(len(w) for p in pieces for w in re.findall(r"\S+|\s+", p)) <= BPE_RUN
    (tmp_path / "c.txt").write_text("\n".join(lines[:100] + [long_line] + lines[100:]) + "\n")
    space = tmp_path / "s.json"
    space.write_text(json.dumps(tree(tmp_path / "c.txt")))
    try:
        cli_main(["validate", str(space)])
    except SystemExit as done:
        assert done.code in (0, None), capsys.readouterr().err
    assert ": ok (text)" in capsys.readouterr().out
