"""The one place that samples text and scores it token by token (sample, PPO, RTO, DPO and eval use it).

Layout of a scored batch ("packed"): queries left-padded to P tokens, responses right-padded to L tokens,
so every row's response starts at column P and the logits that predict it are logits[:, P-1 : P+L-1].
Masks come from lengths, never from token ids: with EOS used as pad (SmolLM2 ships that way) a mask
built from `!= pad` would also drop the real EOS a response ends with.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from tasks.lm.batching import encode_prompt
from tasks.losses import token_logprobs
from tasks.runtime.context import SINGLE_PROCESS, RunContext


class InverseCDFDraw:
    """A logits processor that draws the next token and leaves only it (0 there, -inf elsewhere).

    Inverse-transform sampling: u ~ U(0, 1), token = the first index whose cumulative probability exceeds u.
    That is an exact draw from softmax(scores) with one uniform per row. torch.multinomial (what
    do_sample=True uses) draws one exponential per vocabulary entry on CPU, a visible share of a small
    model's sampling step with a 49k vocabulary (docs/results.md has the profile). The cumulative sum is
    float64 so that even a 1e-9-probability token keeps its share.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = scores.double().softmax(-1).cumsum(-1)
        u = torch.rand(scores.shape[0], 1, device=scores.device, dtype=torch.float64) * cdf[:, -1:]
        token = torch.searchsorted(cdf, u, right=True).clamp_max(scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)


def inverse_cdf_sampler(temperature: float, top_k: int = 0, top_p: float = 1.0):
    """Temperature, top-k and top-p as transformers applies them with do_sample=True, then the draw."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    procs = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    procs += [TopKLogitsWarper(top_k)] if top_k > 0 else []
    procs += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
    return LogitsProcessorList(procs + [InverseCDFDraw()])


def sample(
    model,
    tok,
    prompts: list,
    n_per_prompt: int,
    cfg,
    seed: int,
    ctx: RunContext = SINGLE_PROCESS,
    max_prompt_len: int = 64,
) -> list[dict]:
    """n_per_prompt responses for each prompt, seeded (cfg: a config.Generation).

    Returns one dict per response: prompt_index, query (token ids), response (token ids, cut after the
    first EOS, EOS included), text (decoded response without special tokens), ended (bool: ended on EOS).
    A temperature of 0 means greedy decoding.
    """
    queries = [encode_prompt(p, tok, max_prompt_len) for p in prompts]
    jobs = [(i, q) for i, q in enumerate(queries) for _ in range(n_per_prompt)]
    # Sampling runs as greedy decoding over logits that inverse_cdf_sampler has already reduced to the one
    # token it drew: generate() still does the KV cache, EOS and padding; only the draw is ours (see there).
    gen_kw = {
        "do_sample": False,
        "max_new_tokens": cfg.max_new_tokens,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "use_cache": True,
    }
    if cfg.temperature > 0:
        gen_kw["logits_processor"] = inverse_cdf_sampler(cfg.temperature, cfg.top_k, cfg.top_p)
    model.eval()
    out = []
    for b, start in enumerate(
        tqdm(range(0, len(jobs), cfg.batch_size), desc=f"sampling {n_per_prompt} x {len(prompts)}", dynamic_ncols=True)
    ):
        chunk = jobs[start : start + cfg.batch_size]
        P = max(len(q) for _, q in chunk)
        ids = torch.tensor([[tok.pad_token_id] * (P - len(q)) + q for _, q in chunk], device=ctx.device)
        mask = torch.tensor([[0] * (P - len(q)) + [1] * len(q) for _, q in chunk], device=ctx.device)
        torch.manual_seed(seed * 100_003 + b)  # per-batch seed: results do not depend on earlier batches
        with torch.no_grad(), ctx.autocast():
            gen = model.generate(input_ids=ids, attention_mask=mask, **gen_kw)[:, P:].tolist()
        for (i, q), resp in zip(chunk, gen):
            ended = tok.eos_token_id in resp
            resp = resp[: resp.index(tok.eos_token_id) + 1] if ended else resp
            out.append(
                {
                    "prompt_index": i,
                    "query": q,
                    "response": resp,
                    "ended": ended,
                    "text": tok.decode(resp, skip_special_tokens=True),
                }
            )
    return out


def pack(queries: list[list[int]], responses: list[list[int]], pad_id: int, device: str = "cpu") -> dict:
    """Left-pad queries, right-pad responses; position ids that ignore the left padding."""
    P, L = max(len(q) for q in queries), max(max(len(r) for r in responses), 1)
    ids, attn, rmask = [], [], []
    for q, r in zip(queries, responses):
        lp, rp = P - len(q), L - len(r)
        ids.append([pad_id] * lp + q + r + [pad_id] * rp)
        attn.append([0] * lp + [1] * (len(q) + len(r)) + [0] * rp)
        rmask.append([1] * len(r) + [0] * rp)
    attn_t = torch.tensor(attn, device=device)
    ids_t = torch.tensor(ids, device=device)
    return {
        "input_ids": ids_t,
        "attention_mask": attn_t,
        "position_ids": (attn_t.cumsum(-1) - 1).clamp_min(0),
        "response": ids_t[:, P:],
        "response_mask": torch.tensor(rmask, device=device, dtype=torch.float),
        "P": P,
    }


def response_logits(model, packed: dict) -> torch.Tensor:
    """Logits (B, L, V) that predict the response tokens.

    Only the last L + 1 positions go through the LM head (`logits_to_keep`): the prompt's logits are never
    used, and SmolLM2's head (49k vocabulary x 576) is 28M of its 134M weights, ~21 % of a token's FLOPs.
    """
    L = packed["response"].shape[1]
    kw = {key: packed[key] for key in ("input_ids", "attention_mask", "position_ids")}
    try:
        logits = model(**kw, logits_to_keep=L + 1).logits
    except TypeError as e:  # a model class without logits_to_keep: compute them all (any other error is real)
        if "logits_to_keep" not in str(e):
            raise
        logits = model(**kw).logits
    return logits[:, -(L + 1) : -1]  # positions P-1 .. P+L-2 predict the L response tokens


def response_logprobs(model, packed: dict, temperature: float = 1.0) -> torch.Tensor:
    """log π(y_t | x, y_<t) of each response token (B, L), 0 on padding; same temperature as sampling."""
    return token_logprobs(response_logits(model, packed), packed["response"], temperature) * packed["response_mask"]


@torch.no_grad()
def batched_logprobs(
    model,
    queries,
    responses,
    pad_id: int,
    temperature: float = 1.0,
    batch_size: int = 16,
    ctx: RunContext = SINGLE_PROCESS,
    desc: str | None = None,
) -> list[torch.Tensor]:
    """Per-token log-probs of many (query, response) pairs, forward-only; one 1-D tensor per pair."""
    out = []
    rng = range(0, len(queries), batch_size)
    for i in tqdm(rng, desc=desc, dynamic_ncols=True, leave=False) if desc else rng:
        packed = pack(queries[i : i + batch_size], responses[i : i + batch_size], pad_id, ctx.device)
        with ctx.autocast():
            lp = response_logprobs(model, packed, temperature).float().cpu()
        out += [row[: len(r)] for row, r in zip(lp, responses[i : i + batch_size])]
    return out
