"""Prompt/completion encoding: prompt masked, EOS appended, truncation never invents an EOS."""

import pytest

from tasks.base_model import tiny_tokenizer
from tasks.batching import collate, encode_example
from tasks.losses import IGNORE


def test_micro_batches_of_n_processes_are_the_single_process_slices():
    from tasks.train import my_micro_batches

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
