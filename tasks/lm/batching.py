"""Turning records into token tensors: prompt/completion encoding, completion masks, padded batches.

Prompt and completion are tokenized separately and concatenated, so the prompt tokens a model was
trained on are exactly the ones the generation module later conditions on.
"""

from __future__ import annotations

import torch

from tasks.losses import IGNORE
from tasks.runtime.errors import PipelineError


def render_prompt(prompt, tok) -> str:
    """Plain prompts stay as they are; chat prompts (lists of messages) go through the chat template."""
    if isinstance(prompt, list):
        return tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return prompt


def require_chat_template(prompts, tok, where: str, model: str) -> None:
    """Conversational prompts (lists of messages) are rendered with the tokenizer's chat template: without
    one, one error line naming the data and the model, before any work."""
    if getattr(tok, "chat_template", None) or not any(isinstance(p, list) for p in prompts):
        return
    raise PipelineError(
        f"{where}: conversational records (lists of messages) need a chat template, and the tokenizer of "
        f"{model} has none: set base.chat_template (a Jinja template, or a path to a .jinja file) or use a "
        "chat model as base.model"
    )


def render_completion(completion) -> str:
    if isinstance(completion, list):
        return "".join(m["content"] for m in completion)
    return completion


def encode_prompt(prompt, tok, max_prompt_len: int | None = None) -> list[int]:
    ids = tok(render_prompt(prompt, tok), add_special_tokens=not isinstance(prompt, list))["input_ids"]
    return ids[-max_prompt_len:] if max_prompt_len else ids  # keep the prompt's end: it is what is continued


def encode_example(prompt, completion, tok, max_length: int) -> dict:
    """input_ids = prompt + completion + EOS, labels = -100 on the prompt.

    Too long: the prompt keeps at most half of max_length (its end) and the completion is cut; a cut
    completion gets no EOS, since the model must not learn to stop where the text did not.
    """
    p = encode_prompt(prompt, tok, max_length // 2)
    c = tok(render_completion(completion), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    c = c[: max_length - len(p)]
    return {"input_ids": p + c, "labels": [IGNORE] * len(p) + c}


def pad(seqs: list[list[int]], value: int, side: str = "right") -> torch.Tensor:
    n = max(len(s) for s in seqs)
    rows = [([value] * (n - len(s)) + s) if side == "left" else (s + [value] * (n - len(s))) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def collate(examples: list[dict], pad_id: int) -> dict:
    """Right-padded batch with attention_mask; labels padded with -100."""
    ids = [e["input_ids"] for e in examples]
    batch = {"input_ids": pad(ids, pad_id), "attention_mask": pad([[1] * len(s) for s in ids], 0)}
    if "labels" in examples[0]:
        batch["labels"] = pad([e["labels"] for e in examples], IGNORE)
    return batch


def regroup(flat: list, sizes: list[int]) -> list[list]:
    """A flat list cut back into consecutive groups of the given sizes (the inverse of flattening groups)."""
    out, start = [], 0
    for n in sizes:
        out.append(flat[start : start + n])
        start += n
    return out
