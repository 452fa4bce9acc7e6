"""`sample` stage: K completions per comparison prompt from models/sft, gold-scored and labeled -> data/samples.
With sample.labeler: people, the completions become labeling tasks in the label store instead. In a later round
(params.yaml: rounds) the previous round's champion writes them, on that round's fresh slice of policy prompts."""

from prefect import flow, task

from flows.common import finish, no_retry_on_user_error, read_params, run_stage, stage_run
from flows.paths import MODELS, OWN_DATA, ROOT, ROUND, SAMPLES, store_url
from flows.round_inputs import prompt_slice, sampler_dir
from flows.stages import check_prompt_lengths, prompts
from tasks import config
from tasks.data.splits import untracked_note
from tasks.label.export import groups_from_completions, send_to_people
from tasks.label.gold import load_scorer
from tasks.label.labelers import make_labeler
from tasks.label.sampling import run_sample
from tasks.label.store import LabelStore
from tasks.lm.batching import require_chat_template
from tasks.runtime.device import run_context
from tasks.runtime.files import atomic_path, read_jsonl


@task(name="sample-score-label", retries=1, retry_delay_seconds=5, retry_condition_fn=no_retry_on_user_error)
def sample_and_label(out_dir: str) -> dict:
    params = read_params()
    cfg, ctx = sample_config(params), run_context(config.load("compute", params), "sample")
    comparison_prompts = prompts("comparison") if ROUND == 1 else prompt_slice(prompts("policy"), params)
    metrics = run_sample(cfg, comparison_prompts, sampler_dir(params), out_dir, ctx, ROOT)
    if cfg.labeler == "people":  # written last: a failed sampling adds no tasks
        labels = config.load("labels", params)
        groups = groups_from_completions(read_jsonl(f"{out_dir}/completions.jsonl"))
        store = LabelStore(store_url(labels.store))
        metrics |= send_to_people(store, groups, labels.overlap, cfg.seed, ROUND)
        print(f"sample: {metrics['label_tasks']} labeling tasks in {labels.store}: label them with `make label`")
        if metrics["label_tasks_kept_other_completions"]:
            print(
                f"sample: {metrics['label_tasks_kept_other_completions']} of these prompts were already held or ranked"
                " with an earlier sample's completions: people see and label those, not this sample's"
            )
    return metrics


def sample_config(params: dict):
    """The sample section, its gold scorer kept only where it labels (the simulated annotators): a team's own
    completions are never scored by a default scorer that does not fit their task (eval scores its own samples
    with gold when eval.judges names it, and measures every judge against the people's labels)."""
    cfg = config.load("sample", params)
    return cfg if cfg.labeler == "simulated" else cfg.model_copy(update={"gold_scorer": None})


@flow(name="sample", log_prints=True)
def sample_flow() -> dict:
    with stage_run("sample", read_params()), atomic_path(SAMPLES) as staging:
        metrics = sample_and_label(str(staging))
        finish("sample", metrics)
    print(f"sample: {metrics}")
    return metrics


def check_inputs(params: dict) -> None:
    """Before any model loads: the labeler exists, its scorer imports, a preference file parses (and, when
    conversational, the tokenizer has a chat template to render it); a later round's prompts and sampler exist."""
    cfg = sample_config(params)
    if ROUND > 1:
        prompt_slice(prompts("policy"), params)
        sampler_dir(params)
    labeler = make_labeler(cfg, ROOT)
    if labeler.needs_samples:
        if cfg.gold_scorer:
            load_scorer(cfg.gold_scorer)
        return
    pairs = labeler.label()
    untracked_note("sample", [cfg.dataset], ROOT, OWN_DATA)
    if (MODELS / "sft").is_dir():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(MODELS / "sft")
        require_chat_template([p["prompt"] for p in pairs], tok, cfg.dataset, "models/sft")


if __name__ == "__main__":
    sections = ("sample", "labels", "compute", "tracking", "rounds")
    run_stage(sample_flow, sections, check_prompt_lengths("sample"), check_inputs)
