"""The generation module: its log-probs are the sampled distribution's, whatever the padding."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tasks.lm.base_model import tiny_tokenizer
from tasks.lm.generation import InverseCDFDraw, batched_logprobs, inverse_cdf_sampler, sample
from tasks.sections.data import Generation as SamplingConfig

TEXTS = [
    "the movie was great and the acting was superb",
    "a dull plot, a boring ending and bad jokes",
    "I loved the music but the story was thin",
] * 20


def tiny_llama(hidden: int, initializer_range: float = 0.02):
    """(a random 2-layer Llama, its BPE tokenizer trained on TEXTS), seeded."""
    tok = tiny_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        initializer_range=initializer_range,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    return LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(32)


PROMPTS = ["the movie", "a dull plot, a boring", "I loved"]  # different lengths -> left padding


def plain_logprobs(model, query, response, temperature):
    ids = torch.tensor([query + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(query) - 1 : -1] / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_a_plain_forward_pass(lm, temperature):
    model, tok = lm
    cfg = SamplingConfig(max_new_tokens=12, temperature=temperature, batch_size=4)
    samples = sample(model, tok, PROMPTS, 3, cfg, seed=1)
    assert len(samples) == 9 and len({len(s["response"]) for s in samples}) >= 1
    got = batched_logprobs(
        model,
        [s["query"] for s in samples],
        [s["response"] for s in samples],
        tok.pad_token_id,
        temperature=temperature,
        batch_size=5,
    )
    for s, lp in zip(samples, got):
        assert torch.allclose(lp, plain_logprobs(model, s["query"], s["response"], temperature), atol=1e-5)


class NoKeepArg(torch.nn.Module):
    """A causal LM whose forward has no logits_to_keep (older or custom model classes)."""

    def __init__(self, model, calls):
        super().__init__()
        self.model, self.calls = model, calls

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        self.calls.append(input_ids.shape)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


def test_logprobs_are_the_same_for_a_model_without_logits_to_keep(lm):
    model, tok = lm
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, batch_size=4)
    s = sample(model, tok, PROMPTS, 2, cfg, seed=2)
    q, r = [x["query"] for x in s], [x["response"] for x in s]
    calls = []
    got = batched_logprobs(NoKeepArg(model, calls), q, r, tok.pad_token_id, batch_size=6)
    want = batched_logprobs(model, q, r, tok.pad_token_id, batch_size=6)
    assert len(calls) == 1  # one batch, one forward: the failed logits_to_keep call ran nothing
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_type_error_inside_the_model_is_not_swallowed(lm):
    model, tok = lm

    calls = []

    class Broken(torch.nn.Module):
        def forward(self, **kw):
            calls.append(kw)
            raise TypeError("bad dtype in attention")

    with pytest.raises(TypeError, match="bad dtype"):
        batched_logprobs(Broken(), [tok("the movie")["input_ids"]], [[5, 6]], tok.pad_token_id)
    assert len(calls) == 1  # raised at once, not retried as a full forward pass


def test_logprobs_match_the_scores_generate_sampled_from(lm):
    model, tok = lm
    q = tok("the movie")["input_ids"]
    torch.manual_seed(3)
    out = model.generate(
        input_ids=torch.tensor([q]),
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        max_new_tokens=6,
        min_new_tokens=6,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=None,
    )
    resp = out.sequences[0, len(q) :].tolist()
    ref = torch.stack([torch.log_softmax(s[0], -1)[t] for s, t in zip(out.scores, resp)])
    got = batched_logprobs(model, [q], [resp], tok.pad_token_id, temperature=0.7)[0]
    assert torch.allclose(got, ref, atol=1e-5)


def draw_frequencies(procs, logits: torch.Tensor, n: int = 40_000) -> torch.Tensor:
    torch.manual_seed(0)
    out = procs(None, logits.repeat(n, 1))
    assert ((out == 0).sum(1) == 1).all() and (out[out != 0] == float("-inf")).all()  # one token left per row
    return torch.bincount(out.argmax(1), minlength=logits.shape[-1]).double() / n


def test_the_inverse_cdf_draw_is_an_exact_sample_of_the_softmax():
    # probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625, 0 (hand-computed from the log-probs below)
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0]]))
    freq = draw_frequencies(InverseCDFDraw(), logits)
    p = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0], dtype=torch.float64)
    sd = (p * (1 - p) / 40_000).sqrt()
    assert ((freq - p).abs() <= 4 * sd + 1e-12).all(), freq  # within 4 standard errors, token by token
    assert freq[-1] == 0  # a zero-probability token is never drawn


def test_temperature_and_top_k_apply_before_the_draw():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    freq = draw_frequencies(inverse_cdf_sampler(temperature=0.5, top_k=2), logits)
    p = torch.softmax(torch.tensor([2.0, 1.0]) / 0.5, -1).double()  # e^4 / (e^4 + e^2) = 0.881
    assert freq[2:].sum() == 0 and abs(freq[0] - p[0]) < 4 * (p[0] * p[1] / 40_000).sqrt()
    top_p = draw_frequencies(inverse_cdf_sampler(1.0, top_p=0.5), logits)
    assert top_p[0] == 1  # p = 0.64, 0.24, ...: the nucleus of mass 0.5 is the first token alone


def test_sampling_is_seeded_and_stops_at_eos(lm):
    model, tok = lm
    cfg = SamplingConfig(max_new_tokens=10, batch_size=8)
    a = sample(model, tok, PROMPTS, 2, cfg, seed=5)
    b = sample(model, tok, PROMPTS, 2, cfg, seed=5)
    assert [s["response"] for s in a] == [s["response"] for s in b]
    for s in a:
        eos = tok.eos_token_id
        assert (s["response"][-1] == eos) == s["ended"] and s["response"].count(eos) <= 1
        assert len(s["response"]) <= 10


def test_sequence_rewards_last_token_and_mean_pooling_ignore_padding():
    """r(x, y) = head(h_last) or mean_t head(h_t) over response tokens: equal to one unpadded sequence's."""
    from transformers import LlamaForSequenceClassification

    from tasks.lm.generation import pack
    from tasks.train.reward_model import sequence_rewards, token_scalars

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=0,
    )
    rm = LlamaForSequenceClassification(cfg).eval()
    queries, responses = [[5, 6], [7, 8, 9, 10]], [[11, 12, 13], [14]]
    with torch.no_grad():
        packed = pack(queries, responses, pad_id=0)
        last, mean = sequence_rewards(rm, packed, "last"), sequence_rewards(rm, packed, "mean")
        for i, (q, r) in enumerate(zip(queries, responses)):
            alone = pack([q], [r], pad_id=0)
            s = token_scalars(rm, alone)[0, len(q) : len(q) + len(r)]  # head at each response token
            assert last[i].item() == pytest.approx(s[-1].item(), abs=1e-5)
            assert mean[i].item() == pytest.approx(s.mean().item(), abs=1e-5)


def test_grouped_dpo_step_equals_the_pairwise_loss_and_gradients(lm):
    """The speed-up in our DPO step (each completion once, all K-choose-2 pairs indexed into it; bench/dpo.py)
    gives the loss and the gradients of the usual layout (every pair's chosen and rejected rows, as TRL
    batches them) to float32 rounding (1e-6 relative)."""
    import itertools

    from tasks.lm.generation import pack, response_logprobs
    from tasks.losses import dpo_loss
    from tasks.sections.training import DPOConfig
    from tasks.train.comparisons import ComparisonGroup, Pair
    from tasks.train.dpo import collate_dpo, dpo_step

    model, tok = lm
    samples = sample(model, tok, PROMPTS, 4, SamplingConfig(max_new_tokens=10, batch_size=12), seed=3)
    groups = []
    for i in range(len(PROMPTS)):
        resp = [s["response"] for s in samples if s["prompt_index"] == i]
        pairs = [
            Pair(a, b, 0.0, None, None) if (a + b + i) % 2 else Pair(b, a, 0.0, None, None)
            for a, b in itertools.combinations(range(4), 2)
        ]
        ref = [-1.5 * len(r) for r in resp]
        groups.append(ComparisonGroup(str(i), samples[4 * i]["query"], resp, pairs, ref))
    cfg = DPOConfig()
    model.train()
    loss, stats = dpo_step(model, collate_dpo(groups, tok.pad_token_id), cfg)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert stats["pairs"] == 18 and stats["sequences"] == 12
    q, ch, rj, ref_c, ref_r = [], [], [], [], []
    for g in groups:
        for pair in g.pairs:
            q.append(g.query)
            ch.append(g.responses[pair.chosen])
            rj.append(g.responses[pair.rejected])
            ref_c.append(g.ref[pair.chosen])
            ref_r.append(g.ref[pair.rejected])
    seq = response_logprobs(model, pack(q + q, ch + rj, tok.pad_token_id)).sum(1)  # 36 rows
    want, _, _ = dpo_loss(seq[:18], seq[18:], torch.tensor(ref_c), torch.tensor(ref_r), cfg.kl_coef)
    want_grads = torch.autograd.grad(want, list(model.parameters()))
    model.eval()
    assert torch.allclose(loss, want, rtol=1e-6, atol=0)
    for g, w in zip(grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def peaked_lm():
    """A tiny random Llama with larger weights, so its next-token distributions are far from uniform."""
    from tasks.lm.models import fp32_heads

    model, tok = tiny_llama(64, initializer_range=0.2)
    return fp32_heads(model), tok


def mean_token_kl(model, other, packed) -> float:
    """Mean over response tokens of KL(model's next-token distribution || other's)."""
    from tasks.lm.generation import response_logits

    with torch.no_grad():
        lp = response_logits(model, packed).float().log_softmax(-1)
        lq = response_logits(other, packed).float().log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return float((kl * packed["response_mask"]).sum() / packed["response_mask"].sum())


@pytest.mark.parametrize("precision, bound", [("bf16", 0.002), ("int8", 0.005)])
def test_sampling_copy_stays_close_to_the_policy(peaked_lm, precision, bound):
    """The rollout copy's next-token distributions on a fixed batch are within `bound` nats/token of the
    fp32 policy's; a different model of the same shape is far outside it (so the bound can fail)."""
    from tasks.lm.generation import pack, response_logits
    from tasks.lm.models import fp32_heads, sampling_copy

    model, tok = peaked_lm
    ids = [tok(t)["input_ids"] for t in TEXTS[:6]]
    packed = pack([i[:3] for i in ids], [i[3:] for i in ids], tok.pad_token_id)
    with torch.no_grad():
        logp = response_logits(model, packed).log_softmax(-1)
    entropy = float(-(logp.exp() * logp).sum(-1).mean())
    assert entropy < torch.log(torch.tensor(float(len(tok)))) - 1.0  # peaked, far from uniform
    copy = sampling_copy(model, precision)
    assert copy is not model and all(p.dtype == torch.float32 for p in model.parameters())
    assert 0 < mean_token_kl(model, copy, packed) < bound
    torch.manual_seed(1)
    stranger = fp32_heads(LlamaForCausalLM(model.config).eval())
    assert mean_token_kl(model, stranger, packed) > 20 * bound
    assert sampling_copy(model, "fp32") is model


def test_int8_per_channel_matches_hand_computed_values():
    from tasks.lm.models import int8_per_channel

    w = torch.tensor([[0.5, -1.27, 0.01], [2.54, 0.0, -0.3]])
    q, scale = int8_per_channel(w)
    assert torch.allclose(scale, torch.tensor([0.01, 0.02]))  # max |W_ij| / 127 per row
    assert q.dtype == torch.int8 and q.tolist() == [[50, -127, 1], [127, 0, -15]]
    assert torch.all((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7)


@pytest.mark.parametrize("width", [64, 40])  # the CPU int8 kernel (multiple of 16) and the dequantized path
def test_int8_linear_computes_the_dequantized_product(width):
    from tasks.lm.models import Int8WeightLinear, int8_per_channel

    torch.manual_seed(0)
    linear = torch.nn.Linear(width, 24)
    x = torch.randn(3, 5, width)
    q, scale = int8_per_channel(linear.weight.detach())
    want = x @ (q.float() * scale[:, None]).T + linear.bias.detach()
    got = Int8WeightLinear(linear)(x)
    assert got.shape == (3, 5, 24) and got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want, rtol=0.02, atol=0.02)  # bf16 activations and scale


def test_a_sampling_copy_of_a_lora_policy_leaves_its_adapters_in_place(lm):
    from peft import LoraConfig, get_peft_model

    from tasks.lm.models import sampling_copy

    model, _ = tiny_llama(32)
    policy = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    adapters = sum("lora_" in name for name, _ in policy.named_parameters())
    copy = sampling_copy(policy, "int8")
    assert adapters > 0 and sum("lora_" in name for name, _ in policy.named_parameters()) == adapters
    assert not any("lora_" in name for name, _ in copy.named_modules())
