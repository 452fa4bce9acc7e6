"""The project's movie-review corpus, written once with the base model itself (`dvc repro -f corpus`).

The DPO paper's controlled-sentiment task continues IMDb reviews. IMDb cannot be downloaded here, so the
project ships its own corpus: short reviews of made-up films in varied genres, asked for with a spread
of sentiments (very negative ... very positive) and aspects, written by SmolLM2-135M-Instruct through its
chat template. The output is committed (data/reviews.jsonl); this stage is frozen in dvc.yaml and is not
part of the default run. Generation resumes from a partial file if interrupted (flows/corpus.py runs it).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from tqdm import tqdm

ADJ = [
    "Silent",
    "Broken",
    "Golden",
    "Last",
    "Hidden",
    "Crimson",
    "Endless",
    "Frozen",
    "Lost",
    "Midnight",
    "Distant",
    "Hollow",
    "Burning",
    "Quiet",
    "Savage",
    "Velvet",
    "Iron",
    "Paper",
    "Electric",
    "Wild",
    "Forgotten",
    "Bitter",
    "Little",
    "Dark",
    "Secret",
    "Falling",
    "Restless",
    "Glass",
    "Northern",
    "Final",
]
NOUN = [
    "Harbor",
    "Kingdom",
    "River",
    "Promise",
    "Garden",
    "Frontier",
    "Signal",
    "Orchard",
    "Empire",
    "Station",
    "Summer",
    "Mirror",
    "Highway",
    "Letter",
    "Island",
    "Carnival",
    "Machine",
    "Winter",
    "Circus",
    "Tide",
    "Lighthouse",
    "Storm",
    "Dancer",
    "Detective",
    "Orchestra",
    "Planet",
    "Village",
    "Heist",
    "Shadow",
    "Bridge",
]
GENRES = [
    "horror",
    "comedy",
    "drama",
    "science fiction",
    "romance",
    "thriller",
    "action",
    "animated",
    "documentary",
    "western",
    "fantasy",
    "crime",
    "musical",
    "war",
    "family",
    "mystery",
]
ASPECTS = [
    "the acting",
    "the plot",
    "the soundtrack",
    "the pacing",
    "the cinematography",
    "the ending",
    "the dialogue",
    "the special effects",
    "the characters",
    "the direction",
    "the script",
    "the humor",
]
STYLES = {
    "very negative": 'Write a short, very negative review of the {g} movie "{t}". '
    "You hated it: say what was awful about {a}.",
    "negative": 'Write a short negative review of the {g} movie "{t}". You did not like it; criticise {a}.',
    "mixed": 'Write a short mixed review of the {g} movie "{t}": praise one thing and criticise {a}.',
    "positive": 'Write a short positive review of the {g} movie "{t}". Praise {a}.',
    "very positive": 'Write a short, enthusiastic review of the {g} movie "{t}". You loved it, especially {a}.',
}


def clean(text: str, min_words: int, max_words: int) -> str | None:
    """One paragraph of plain review text, cut at a sentence end; None if it is not usable."""
    text = re.sub(r"[*#_`]+", "", text)
    paras = [p.strip() for p in text.split("\n") if p.strip()]
    paras = [p for p in paras if not re.match(r"^(title|review|rating|movie)\s*:", p, re.I) and len(p.split()) > 3]
    if not paras:
        return None
    words = " ".join(paras).split()[:max_words]
    text = " ".join(words).strip().strip('"').strip()
    end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "), *(i for i in [len(text) - 1] if text[-1:] in ".!?"))
    if end <= 0:
        return None
    text = text[: end + 1].strip()
    return text if len(text.split()) >= min_words else None


def briefs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = list(STYLES)[i % len(STYLES)]
        b = {
            "title": f"The {rng.choice(ADJ)} {rng.choice(NOUN)}",
            "genre": rng.choice(GENRES),
            "aspect": rng.choice(ASPECTS),
            "asked": s,
        }
        b["instruction"] = STYLES[s].format(g=b["genre"], t=b["title"], a=b["aspect"])
        out.append(b)
    return out


def generate(cfg, model, tok, partial: Path) -> None:
    """Write the raw reviews for cfg.n_briefs briefs to `partial` (JSONL), resuming after the ones already there."""
    import torch

    done = len(partial.read_text().splitlines()) if partial.exists() else 0
    todo = briefs(cfg.n_briefs, cfg.seed)[done:]
    model.eval()
    tok.padding_side = "left"
    torch.manual_seed(cfg.seed + done)
    bar = tqdm(total=len(todo), desc="writing reviews")
    with partial.open("a") as f:
        for i in range(0, len(todo), cfg.batch_size):
            batch = todo[i : i + cfg.batch_size]
            texts = [
                tok.apply_chat_template(
                    [{"role": "user", "content": b["instruction"]}], add_generation_prompt=True, tokenize=False
                )
                for b in batch
            ]
            enc = tok(texts, return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    top_k=0,
                    max_new_tokens=cfg.max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                )
            for b, ids in zip(batch, gen[:, enc["input_ids"].shape[1] :]):
                f.write(json.dumps(dict(b, raw=tok.decode(ids, skip_special_tokens=True))) + "\n")
            f.flush()
            bar.update(len(batch))
    bar.close()


def cleaned_reviews(partial: Path, cfg) -> list[dict]:
    """The usable, distinct reviews of the raw file, cleaned, with their briefs."""
    rows, seen = [], set()
    for r in (json.loads(line) for line in partial.read_text().splitlines()):
        text = clean(r["raw"], cfg.min_words, cfg.max_words)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            rows.append(
                {
                    "id": f"r{len(rows):05d}",
                    "text": text,
                    "title": r["title"],
                    "genre": r["genre"],
                    "aspect": r["aspect"],
                    "asked_sentiment": r["asked"],
                }
            )
    return rows
