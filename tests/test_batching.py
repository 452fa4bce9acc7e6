"""Prompt/completion encoding: prompt masked, EOS appended, truncation never invents an EOS."""

import pytest

from tasks.lm.base_model import tiny_tokenizer
from tasks.lm.batching import collate, encode_example
from tasks.losses import IGNORE


def test_micro_batches_of_n_processes_are_the_single_process_slices():
    from tasks.train.loop import my_micro_batches

    batch = list(range(8))
    assert my_micro_batches(batch, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # 1 process, grad_accum 2
    assert [my_micro_batches(batch, 1, r, 2) for r in (0, 1)] == [[[0, 1, 2, 3]], [[4, 5, 6, 7]]]
    assert [my_micro_batches(batch, 2, r, 2) for r in (0, 1)] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(["the movie was great and the acting was superb"] * 10, vocab_size=300)


def test_prompt_tokens_are_masked_and_eos_appended(tok):
    ex = encode_example("The movie", " was great", tok, max_length=64)
    p = tok("The movie", add_special_tokens=True)["input_ids"]
    c = tok(" was great", add_special_tokens=False)["input_ids"]
    assert ex["input_ids"] == p + c + [tok.eos_token_id]
    assert ex["labels"] == [IGNORE] * len(p) + c + [tok.eos_token_id]


def test_truncated_completion_gets_no_eos(tok):
    ex = encode_example("The movie", " was great and the acting was superb" * 5, tok, max_length=12)
    assert len(ex["input_ids"]) == 12 and tok.eos_token_id not in ex["input_ids"]


def test_collate_pads_right_with_pad_id_and_ignored_labels(tok):
    a = encode_example("The", " movie", tok, 32)
    b = encode_example("The movie was", " great and superb", tok, 32)
    batch = collate([a, b], pad_id=tok.pad_token_id)
    n = len(a["input_ids"])
    assert batch["input_ids"][0, n:].eq(tok.pad_token_id).all()
    assert batch["labels"][0, n:].eq(IGNORE).all()
    assert batch["attention_mask"][0].sum().item() == n
    assert tok.pad_token_id != tok.eos_token_id


CHAT = [{"role": "user", "content": "The film"}]


def test_conversational_prompts_without_a_chat_template_are_refused_in_one_line(tok):
    from tasks.lm.batching import render_prompt, require_chat_template
    from tasks.runtime.errors import PipelineError

    assert not tok.chat_template
    require_chat_template(["The film", "A plot"], tok, "prefs.jsonl", "models/sft")  # plain prompts: fine
    with pytest.raises(PipelineError, match=r"^prefs.jsonl: conversational records .* models/sft has none"):
        require_chat_template(["The film", CHAT], tok, "prefs.jsonl", "models/sft")
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    try:
        require_chat_template([CHAT], tok, "prefs.jsonl", "models/sft")
        assert render_prompt(CHAT, tok) == "<user>The film<assistant>"
    finally:
        tok.chat_template = None


@pytest.mark.parametrize("as_file", [False, True])
def test_base_chat_template_is_given_to_the_saved_tokenizer(tmp_path, monkeypatch, as_file):
    from transformers import AutoTokenizer

    from flows.paths import ROOT
    from tasks.lm.base_model import build_base
    from tasks.sections.data import BaseConfig

    template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    monkeypatch.chdir(tmp_path)  # a relative .jinja path is read from the working directory (the project root)
    if as_file:
        (tmp_path / "chat.jinja").write_text(template)
    cfg = BaseConfig(model="tiny", chat_template="chat.jinja" if as_file else template)
    build_base(cfg, tmp_path / "base", ROOT / "data/reviews.jsonl", tmp_path / "cache")
    assert AutoTokenizer.from_pretrained(tmp_path / "base").chat_template == template
