"""compute.precision: bf16 where the device computes it natively, fp32 heads under autocast."""

import pytest
import torch

from tasks.lm.models import FP32Linear, fp32_heads
from tasks.runtime.device import cpu_bf16_native, pick_device
from tasks.runtime.errors import PipelineError
from tasks.sections.run import ComputeConfig

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize("cpuinfo, native", [(AVX2, False), (ZEN4, True), (SAPPHIRE, True), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, native):
    assert cpu_bf16_native(cpuinfo) is native


@pytest.mark.parametrize(
    "precision, cpuinfo, dtype",
    [("auto", AVX2, torch.float32), ("auto", ZEN4, torch.bfloat16), ("auto", SAPPHIRE, torch.bfloat16)]
    + [("fp32", ZEN4, torch.float32), ("bf16", SAPPHIRE, torch.bfloat16)],
)
def test_auto_picks_bf16_only_on_native_cpus(precision, cpuinfo, dtype):
    assert pick_device(ComputeConfig(device="cpu", precision=precision), cpuinfo) == ("cpu", dtype)


def test_a_stage_in_fp32_stages_computes_in_fp32_where_the_others_use_bf16():
    compute = ComputeConfig(device="cpu", precision="auto")
    assert compute.fp32_stages == ["dpo"]  # params.yaml's default
    assert pick_device(compute, SAPPHIRE, stage="dpo") == ("cpu", torch.float32)
    assert pick_device(compute, SAPPHIRE, stage="ppo") == ("cpu", torch.bfloat16)
    assert pick_device(ComputeConfig(device="cpu", fp32_stages=[]), SAPPHIRE, stage="dpo")[1] == torch.bfloat16


def test_bf16_on_a_cpu_without_bf16_units_is_refused():
    with pytest.raises(PipelineError, match="no native bf16"):
        pick_device(ComputeConfig(device="cpu", precision="bf16"), AVX2)


def test_fp32_head_under_bf16_autocast():
    """The head's output is fp32 and equal to an fp32 matmul; the same layer as nn.Linear gives bf16."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 300, bias=False)
    x = torch.randn(4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(x)
        head.__class__ = FP32Linear
        high = head(x)
    assert low.dtype == torch.bfloat16 and high.dtype == torch.float32
    torch.testing.assert_close(high, x @ head.weight.T)
    assert (low.float() - high).abs().max() > 1e-3  # what bf16 would have cost


def test_fp32_heads_keeps_weight_names_and_ties():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    keys = set(model.state_dict())
    fp32_heads(model)
    assert type(model.lm_head) is FP32Linear and set(model.state_dict()) == keys
    assert model.lm_head.weight is model.model.embed_tokens.weight
