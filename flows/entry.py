"""`python -m flows.<stage>` of a policy stage: recorded as skipped before torch and Prefect load when
pipeline.algorithms leaves it out (seconds per skipped stage in every run and experiment), else its flow
(flows/policy.py) runs."""

from flows.common import skipped_early


def run_policy_stage(stage: str, train, knobs) -> None:
    if skipped_early(stage):
        return
    from flows.policy import main

    main(stage, train, knobs)
