"""`corpus` stage (frozen, not part of the default run): write data/reviews.jsonl with the base model."""

from flows.paths import BASE_CACHE, PARAMS, ROOT
from tasks import config
from tasks.data.corpus import cleaned_reviews, generate
from tasks.lm.base_model import load_pretrained
from tasks.runtime.errors import die_cleanly
from tasks.runtime.files import write_jsonl


def main() -> None:
    params = config.read_params(PARAMS)
    cfg, base = config.load("corpus", params), config.load("base", params)
    if base.model == "tiny":
        raise config.ConfigError("corpus: needs a real base model (base.model is 'tiny')")
    out, partial = ROOT / cfg.output, ROOT / "data" / ".reviews.partial.jsonl"
    model, tok = load_pretrained(base.model, base.sha256, base.trust_remote_code, BASE_CACHE)
    generate(cfg, model, tok, partial)
    rows = cleaned_reviews(partial, cfg)
    write_jsonl(out, rows)
    partial.unlink()
    print(f"wrote {len(rows)} reviews to {out}")


if __name__ == "__main__":
    die_cleanly(main)
