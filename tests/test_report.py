"""The evaluation picture: what a reader sees on its axes."""

from tasks.eval import report


def _policy(win: float, kl: float) -> dict:
    out = {"kl": kl, "kl_ci_low": kl - 0.1, "kl_ci_high": kl + 0.1}
    for judge in ("heldout_rm", "rm"):
        out |= {
            f"win_rate_{judge}": win,
            f"win_rate_{judge}_ci_low": win - 0.05,
            f"win_rate_{judge}_ci_high": win + 0.05,
        }
    return out | {"heldout_rm_score": win, "heldout_rm_score_ci_low": win - 0.1, "heldout_rm_score_ci_high": win + 0.1}


def test_the_win_rate_panel_names_its_policies_without_a_gate_too(tmp_path, monkeypatch):
    ticks = []
    save = report._save

    def observe(fig, png):
        ticks.append([t.get_text() for t in fig.axes[0].get_xticklabels()])
        save(fig, png)

    monkeypatch.setattr(report, "_save", observe)
    metrics = {"sft": _policy(0.5, 0.0), "ppo": _policy(0.8, 3.3), "dpo": _policy(0.56, 11.5)}
    report.eval_figure(metrics, tmp_path / "no_gate.png", None, 0.95, judge="heldout_rm")
    assert ticks == [["sft", "ppo", "dpo"]]
    assert (tmp_path / "no_gate.png").read_bytes()[:4] == b"\x89PNG"
