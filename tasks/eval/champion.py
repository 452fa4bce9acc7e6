"""The champion gate: which evaluated policy version gets the registry alias. It reads each policy's headline win
rate vs SFT (`win_rate`: champion.judge's, with its interval) and KL, and the metrics recorded on the version
that holds the alias now."""

from __future__ import annotations

from tasks.eval import stats


def choose_champion(
    results: dict[str, dict], max_kl: float, min_win_rate: float, incumbent: dict | None = None
) -> tuple[str | None, str]:
    """The champion gate. Candidates: policies with mean KL ≤ max_kl whose win-rate interval vs SFT has its
    lower end ≥ min_win_rate; the best is the highest win rate (ties: lower KL). It replaces the incumbent
    (its recorded metrics: version, policy, win_rate_ci_low/high) only when their intervals do not
    overlap; otherwise the incumbent stays. Returns (name or None, why)."""

    def iv(m):
        return f"{m['win_rate']:.1%} [{m['win_rate_ci_low']:.1%}, {m['win_rate_ci_high']:.1%}]"

    policies = {n: m for n, m in results.items() if n != "sft"}
    ok = {n: m for n, m in policies.items() if m["kl"] <= max_kl}
    if not ok:
        return None, f"no policy has KL <= {max_kl} (" + ", ".join(
            f"{n}: {m['kl']:.2f}" for n, m in policies.items()
        ) + ")"
    cleared = {n: m for n, m in ok.items() if m["win_rate_ci_low"] >= min_win_rate}
    if not cleared:
        top = max(ok, key=lambda n: ok[n]["win_rate_ci_low"])
        return None, (
            f"no policy's win-rate interval clears {min_win_rate:.1%}: the best, {top}, wins {iv(ok[top])} vs SFT"
        )
    best = max(cleared, key=lambda n: (cleared[n]["win_rate"], -cleared[n]["kl"]))
    m = cleared[best]
    why = f"{best} wins {iv(m)} vs SFT (lower end >= {min_win_rate:.1%}) at KL {m['kl']:.2f} <= {max_kl}"
    band = (m["win_rate_ci_low"], m["win_rate_ci_high"])
    ties = [
        n
        for n, o in cleared.items()
        if n != best and stats.overlap(band, (o["win_rate_ci_low"], o["win_rate_ci_high"]))
    ]
    if ties:
        why += f"; not significantly better than {', '.join(f'{n} {iv(cleared[n])}' for n in ties)}"
    if incumbent and incumbent.get("win_rate_ci_low") is not None and incumbent.get("version") != m.get("version"):
        held = (incumbent["win_rate_ci_low"], incumbent["win_rate_ci_high"])
        who = incumbent.get("label") or f"{incumbent.get('policy', '?')} version {incumbent['version']}"
        if stats.overlap(band, held):
            return (
                None,
                f"{why}; but its interval overlaps the incumbent's ({who}: {iv(incumbent)}), so the incumbent stays",
            )
        why += f"; the incumbent ({who}: {iv(incumbent)}) is beaten"
    return best, why


def incumbent_of(registry, name: str, alias: str) -> dict | None:
    """The version holding `alias` with the eval metrics recorded on it when it was promoted (tags eval_*)."""
    held = registry.alias_tags(name, alias)
    if held is None:
        return None
    version, tags = held
    m = {k.removeprefix("eval_"): float(v) for k, v in tags.items() if k.startswith("eval_")}
    if "win_rate" not in m:
        return {"version": version}
    return {"version": version, "policy": tags.get("stage", "?"), "judge": tags.get("champion_judge", "gold"), **m}


def untrusted(judge: str, agreement: dict, floor: float | None) -> str | None:
    """Why the gate may not promote on this judge: its agreement with the held-out labels (judges.json's
    label_agreement_<judge>, with its interval) does not clear the floor; None when it does, or is not checked."""
    key = f"label_agreement_{judge}"
    if floor is None or key not in agreement:
        return None
    if agreement[f"{key}_ci_low"] > floor:
        return None
    lo, hi, n = agreement[f"{key}_ci_low"], agreement[f"{key}_ci_high"], agreement.get(f"n_pairs_{judge}", "?")
    return (
        f"judge {judge} agrees with the held-out labels on {agreement[key]:.1%} [{lo:.1%}, {hi:.1%}] of {n} pairs, "
        f"not above {floor:.1%} (champion.min_judge_agreement): no promotion on a judge no better than that"
    )


def champion_gate(
    metrics: dict[str, dict],
    run_infos: dict[str, dict],
    cfg,
    policy_model: str,
    registry,
    judge: str = "gold",
    agreement: dict | None = None,
) -> dict:
    """Apply the gate (cfg: the champion section) to the eval metrics {policy: metrics}, whose `win_rate` is `judge`'s:
    set cfg.alias on the winner's registered version of `policy_model` (its run_infos entry names the version),
    or leave the alias where it is and say so. registry: promote(name, version, alias, tags) and
    alias_tags(name, alias) -> (version, tags) or None. An incumbent another judge measured is not compared (its
    numbers mean something else); agreement: metrics/eval/judges.json, whose judge must clear
    cfg.min_judge_agreement. Returns the decision written to metrics/champion.json."""
    incumbent = incumbent_of(registry, policy_model, cfg.alias)
    note = ""
    if incumbent and "win_rate" in incumbent and incumbent.get("judge") != judge:
        note = f"; the incumbent was judged by {incumbent['judge']}, not {judge}: not compared"
        incumbent = {"version": incumbent["version"], "policy": incumbent["policy"]}
    versions = {n: {**m, "version": str(run_infos.get(n, {}).get("version"))} for n, m in metrics.items()}
    best, why = choose_champion(versions, cfg.max_kl, cfg.min_win_rate, incumbent)
    doubt = untrusted(judge, agreement or {}, cfg.min_judge_agreement)
    if best and doubt:
        best, why = None, f"{why}; but {doubt}"
    why = f"judge {judge}: {why}{note}"
    decision = {"promoted": 0, "reason": why, "judge": judge}
    info = run_infos.get(best, {}) if best else {}
    if best and not info.get("version"):
        decision["reason"] = f"{why}; but {best} has no registered version (tracking.register_models is off)"
    elif best:
        name, version = info["registered_model"], str(info["version"])
        tags = {f"eval_{k}": f"{v:.6g}" for k, v in metrics[best].items()}
        tags |= {"champion_reason": why, "champion_judge": judge}
        registry.promote(name, version, cfg.alias, tags)
        decision.update(promoted=1, policy=best, model=f"models:/{name}@{cfg.alias}", version=int(version))
    if not decision["promoted"]:
        decision["reason"] += (
            f"; {cfg.alias} stays on version {incumbent['version']}"
            if incumbent
            else f"; no version has the {cfg.alias} alias"
        )
    return decision


def run_standing(
    metrics: dict[str, dict], this_round: int, before: dict | None, cfg, judge: str, agreement: dict | None = None
) -> tuple[dict, str]:
    """Which of this run's policies stands after round `this_round` (the next round samples from it): the round's best
    by the gate's bars (KL cap, win-rate floor, a judge that agrees with the held-out labels), unless its interval
    overlaps the one standing from an earlier round of this run, which then stays; none has cleared: {} (SFT
    samples). before: {"policy", "round", **its eval metrics} or None. The registry's alias takes no part: it may
    sit on another run's model (another seed's, last month's), and a run's rounds read only its own DVC outputs, so
    that they reproduce. Returns ({standing_policy, standing_round} or {}, why)."""
    name = f"{before['policy']} r{before['round']}" if before else None
    held = {**before, "version": name, "label": f"{name}, standing in this run"} if before else None
    candidates = {n: {**m, "version": f"{n} r{this_round}"} for n, m in metrics.items()}
    best, why = choose_champion(candidates, cfg.max_kl, cfg.min_win_rate, held)
    doubt = untrusted(judge, agreement or {}, cfg.min_judge_agreement)
    if best and not doubt:
        return {"standing_policy": best, "standing_round": this_round}, why
    why = f"{why}; but {doubt}" if best else why
    if before:
        return {"standing_policy": before["policy"], "standing_round": before["round"]}, why
    return {}, f"{why}; SFT samples the next round"
