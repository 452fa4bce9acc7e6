"""Datasets: the `prepare` stage's splits, and loading any split from the corpus, a JSONL or the HF hub.

Formats are the ones TRL / HF datasets users already have:
  prompt/completion   {"prompt": str, "completion": str}                 (SFT demonstrations)
  prompt              {"prompt": str}                                    (sampling, policy, eval prompts)
  text                {"text": str}                                      (pretraining text, perplexity)
  conversational      {"messages": [{"role", "content"}, ...]}            (any of the above, chat style)
Chat records are rendered with the tokenizer's chat template when tokenized (tasks/lm/batching.py).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from tasks.runtime.errors import PipelineError
from tasks.runtime.files import atomic_path, read_jsonl, write_jsonl

FIELDS = {
    "sft": "prompt_completion",
    "sft_val": "prompt_completion",
    "comparison": "prompt",
    "policy": "prompt",
    "pretrain": "text",
    "eval": "prompt",
    "tune": "prompt",  # carved from the policy split (prepare.tune_prompts), not a share of the corpus
}
SHARED = ("sft", "sft_val", "comparison", "policy", "pretrain", "eval")  # the splits that take a share


def local_file(source: str, base_dir: Path) -> Path | None:
    """The file a params value names (a .jsonl, or any path that exists; relative to base_dir), or None for a
    Hugging Face dataset id."""
    path = Path(source) if Path(source).is_absolute() else base_dir / source
    return path if source.endswith(".jsonl") or path.exists() else None


def untracked_note(stage: str, sources: list[str | None], root: Path, own_data: Path) -> list[str]:
    """The local files among these params values that lie outside own_data (DVC's dep: data/own/), each with
    one line saying that a change to it will not rerun the stage; hub dataset ids are not files."""
    files = {source: local_file(source, root) for source in filter(None, sources)}
    outside = [s for s, path in files.items() if path and not path.resolve().is_relative_to(own_data.resolve())]
    for source in outside:
        print(f"{stage}: {source} is outside data/own/, so dvc repro cannot see it change: move it to data/own/")
    return outside


def load_records(source: str, base_dir: Path) -> tuple[list[dict], str]:
    """(records, where) from a local JSONL (relative paths are read from base_dir) or a Hugging Face dataset
    id ('id' or 'id:split')."""
    if path := local_file(source, base_dir):
        return read_jsonl(path), str(path)
    name, _, split = source.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # datasets raises many kinds; all mean "cannot read that source"
        raise PipelineError(f"{source}: cannot load dataset ({str(e).splitlines()[0]})") from None
    if len(ds) == 0:
        raise PipelineError(f"{source}: no records")
    return [dict(r) for r in ds], source


def normalize(rec: dict, kind: str, where: str, n: int) -> dict:
    """One record in the canonical shape for `kind`; a clear error naming file and record otherwise."""

    def need(key, typ=str):
        v = rec.get(key)
        if not isinstance(v, typ) or (isinstance(v, (str, list)) and not v):
            raise PipelineError(f"{where}:{n}: missing or empty '{key}' (expected {typ.__name__})")
        return v

    if "messages" in rec:
        msgs = need("messages", list)
        if kind == "text":
            return {"text": "\n".join(m["content"] for m in msgs)}
        if kind == "prompt_completion":
            if msgs[-1].get("role") != "assistant":
                raise PipelineError(f"{where}:{n}: the last message must be the assistant's completion")
            return {"prompt": msgs[:-1], "completion": msgs[-1:]}
        return {"prompt": msgs if msgs[-1].get("role") != "assistant" else msgs[:-1]}
    if kind == "text":
        return {"text": need("text")}
    if kind == "prompt_completion":
        return {"prompt": need("prompt", (str, list)), "completion": need("completion", (str, list))}
    return {"prompt": need("prompt", (str, list))}


def load_split(prepared_dir: Path, name: str) -> list[dict]:
    """A prepared split (<prepared_dir>/<name>.jsonl), as written by `prepare`."""
    path = Path(prepared_dir) / f"{name}.jsonl"
    rows = read_jsonl(path)
    return [
        dict(normalize(r, FIELDS[name], str(path), i + 1), id=r.get("id", f"{name}-{i}")) for i, r in enumerate(rows)
    ]


def review_prompt(text: str, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
    """Split a review into (first 2-8 words, rest): the DPO paper's IMDb prompt construction."""
    words = text.split(" ")
    k = min(rng.randint(lo, hi), max(1, len(words) - 3))  # always leave a real continuation
    return " ".join(words[:k]), " " + " ".join(words[k:])


# held-out split -> the training splits it must not share an example with (prompt splits: the prompt;
# demonstration splits: prompt and completion -- two reviews may open with the same two words)
HELD_OUT = {"eval": ("comparison", "policy"), "sft_val": ("sft",)}


def _text(value) -> str:
    """A prompt or completion as one string: itself, or a chat's messages as JSON (lists cannot be keys)."""
    return value if isinstance(value, str) or value is None else json.dumps(value, sort_keys=True)


def _key(r: dict):
    return (_text(r["prompt"]), _text(r.get("completion")))


def check_disjoint(splits: dict[str, list[dict]], cfg) -> None:
    """A prompt split from a source may not repeat a prompt, and a held-out split may not share an example
    with a split that trains (it would not be held out): one error naming the splits and an example."""
    for name, rows in splits.items():
        if FIELDS[name] != "prompt" or not getattr(cfg.sources, name, None):
            continue
        seen = {}
        for i, r in enumerate(rows, 1):
            prompt = _text(r["prompt"])
            if prompt in seen:
                raise PipelineError(
                    f"{getattr(cfg.sources, name)}:{i}: duplicate prompt {prompt[:60]!r} "
                    f"(first at record {seen[prompt]}) in the {name} split"
                )
            seen[prompt] = i
    for held, others in HELD_OUT.items():
        keys = {_key(r) for r in splits[held]}
        for other in others:
            shared = keys & {_key(r) for r in splits[other]}
            if shared:
                raise PipelineError(
                    f"prepare: {len(shared)} example(s) of the {held} split also appear in the {other} "
                    f"split (e.g. prompt {sorted(shared)[0][0][:60]!r}): {held} would not be held out"
                )


def prepare(cfg, base_dir: Path, out_dir: Path | None) -> dict:
    """Write <out_dir>/<split>.jsonl for every split; return the split sizes. With out_dir None, only build
    and check the splits (the stage's preflight: every data error surfaces before any work). Relative paths
    of the corpus and of split sources are read from base_dir."""
    reviews = read_jsonl(base_dir / cfg.corpus)
    for i, r in enumerate(reviews, 1):
        if not isinstance(r.get("text"), str) or not r["text"].strip():
            raise PipelineError(f"{cfg.corpus}:{i}: missing or empty 'text'")
    if cfg.max_reviews:
        reviews = reviews[: cfg.max_reviews]
    rng = random.Random(cfg.seed)
    order = list(range(len(reviews)))
    rng.shuffle(order)

    splits: dict[str, list[dict]] = {}
    start, seen_prompts = 0, set()
    for name in SHARED:
        n = int(getattr(cfg.splits, name) * len(reviews))
        idx, start = order[start : start + n], start + n
        source = getattr(cfg.sources, name)
        if source:
            recs, where = load_records(source, base_dir)
            splits[name] = [
                dict(normalize(r, FIELDS[name], where, i + 1), id=f"{name}-{i}") for i, r in enumerate(recs)
            ]
            continue
        rows = []
        for i in idx:
            r = reviews[i]
            if FIELDS[name] == "text":
                rows.append({"id": r.get("id", str(i)), "text": r["text"]})
                continue
            prompt, completion = review_prompt(r["text"], rng, cfg.min_prompt_words, cfg.max_prompt_words)
            if FIELDS[name] == "prompt":
                # Prompt-only splits must not share a prompt string with any other split (no leakage
                # of evaluation prompts into training); the few collisions of 2-word openings are dropped.
                if prompt in seen_prompts:
                    continue
                seen_prompts.add(prompt)
                rows.append({"id": r.get("id", str(i)), "prompt": prompt})
            else:
                rows.append({"id": r.get("id", str(i)), "prompt": prompt, "completion": completion})
        if not rows:
            raise PipelineError(f"prepare.splits.{name}: the split is empty; raise its share or use more reviews")
        splits[name] = rows

    check_disjoint(splits, cfg)  # the tune split comes out of the policy split: it is held out as that one is
    if cfg.tune_prompts >= len(splits["policy"]):
        raise PipelineError(
            f"prepare.tune_prompts={cfg.tune_prompts} leaves no policy prompts (the policy split has "
            f"{len(splits['policy'])}); lower it or raise prepare.splits.policy"
        )
    n_policy = len(splits["policy"]) - cfg.tune_prompts
    splits["policy"], splits["tune"] = splits["policy"][:n_policy], splits["policy"][n_policy:]
    if out_dir is None:
        return {name: len(rows) for name, rows in splits.items()}
    with atomic_path(out_dir) as tmp:  # all splits appear together, or none does
        tmp.mkdir()
        for name, rows in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", rows)
    return {name: len(rows) for name, rows in splits.items()}


def is_heldout(prompt_id: str, frac: float, salt: str = "") -> bool:
    """The prompt is in the held-out fraction: a hash of (salt, prompt id), so that draws with different salts
    are independent (the judges' share and the RM's validation prompts inside it)."""
    return int(hashlib.sha1((salt + prompt_id).encode()).hexdigest(), 16) % 10_000 < frac * 10_000


JUDGE_SALT = "heldout-judge:"


def split_for_judges(pairs: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    """Labeled pairs -> (the pairs rm and dpo train on, the held-out judges' pairs), by prompt: no prompt in
    both, about `share` of the prompts held out."""
    held = [is_heldout(p["prompt_id"], share, JUDGE_SALT) for p in pairs]
    return [p for p, h in zip(pairs, held) if not h], [p for p, h in zip(pairs, held) if h]
