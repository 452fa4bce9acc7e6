"""The label store (tasks/label/store.py) on a real SQLite file: rankings to pairs by hand, refusals that write
nothing, undo, hand-outs that never give two people the same slot, overlap and agreement."""

import threading

import pytest

from tasks.label.store import LabelError, LabelStore, gold_agreement, ranking_pairs


def groups(n: int, k: int = 4) -> list[dict]:
    return [
        {
            "prompt_id": f"p{i}",
            "prompt": f"The film {i}",
            "completions": [{"text": f" c{i}.{j}", "ended": j != 0, "gold": float(j)} for j in range(k)],
        }
        for i in range(n)
    ]


@pytest.fixture()
def store(tmp_path):
    s = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    s.add_tasks(groups(3))
    return s


def test_ranking_pairs_hand_computed():
    assert ranking_pairs([2, 1, 3, 1]) == [(1, 0), (0, 2), (3, 0), (1, 2), (3, 2)]  # (1, 3) tie: no pair
    assert ranking_pairs([1, 2, 3]) == [(0, 1), (0, 2), (1, 2)]
    assert ranking_pairs([1, 1, 1]) == []


def test_a_ranking_becomes_its_pairs_with_annotator_and_time(store):
    task = store.next_task("ann")
    store.submit(task.id, "ann", ranks=[4, 1, 2, 2])
    pairs = store.export_pairs()
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        (" c0.1", " c0.0"),
        (" c0.2", " c0.0"),
        (" c0.3", " c0.0"),
        (" c0.1", " c0.2"),
        (" c0.1", " c0.3"),
    ]  # 2 vs 3 tied: 5 of 6 pairs
    assert all(p["annotator"] == "ann" and p["labeled_at"] and p["prompt"] == "The film 0" for p in pairs)
    assert pairs[0]["rejected_ended"] is False and pairs[0]["chosen_ended"] is True
    assert gold_agreement(pairs) == {"pairs": 5, "agreement": pytest.approx(3 / 5)}  # gold = index: 1≻2, 1≻3 disagree


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"task_id": 999, "ranks": [1, 2, 3, 4]}, "no task 999"),
        ({"ranks": [1, 2, 3, 5]}, "ranks must be 4 whole numbers from 1 to 4 (got [1, 2, 3, 5])"),
        ({"ranks": [1, 2, 3]}, "ranks must be 4 whole numbers"),
        ({"ranks": [1, 2, "3", 4]}, "ranks must be 4 whole numbers"),
        ({}, "give either a ranking or 'all bad'"),
        ({"ranks": [1, 2, 3, 4], "all_bad": True}, "give either a ranking or 'all bad'"),
        ({"ranks": [1, 2, 3, 4], "annotator": "other"}, "is not held by 'other'"),
        ({"ranks": [1, 2, 3, 4], "annotator": "  "}, "an annotator name"),
    ],
)
def test_a_bad_submission_is_refused_and_writes_nothing(store, kwargs, says):
    task = store.next_task("ann")
    args = {"task_id": task.id, "annotator": "ann", **kwargs}
    with pytest.raises(LabelError, match=None) as e:
        store.submit(**args)
    assert says in str(e.value)
    assert store.progress()["labeled"] == 0 and store.export_pairs() == []


def test_duplicate_submission_is_refused_until_undone(store):
    task = store.next_task("ann")
    store.submit(task.id, "ann", ranks=[1, 2, 3, 4])
    with pytest.raises(LabelError, match="already labeled"):
        store.submit(task.id, "ann", ranks=[4, 3, 2, 1])
    assert store.undo_last("ann") is not None
    assert store.next_task("ann").id == task.id  # the undone task comes back first
    store.submit(task.id, "ann", ranks=[4, 3, 2, 1])
    pairs = store.export_pairs()
    assert len(pairs) == 6 and pairs[0]["chosen"] == " c0.1" and pairs[0]["rejected"] == " c0.0"
    assert store.progress() == {"labeled": 1, "total": 3, "by_annotator": {"ann": 1}}


def test_all_bad_and_skip(store):
    t0 = store.next_task("ann")
    store.submit(t0.id, "ann", all_bad=True)
    t1 = store.next_task("ann")
    store.skip(t1.id, "ann")
    assert store.next_task("bob").id == t1.id  # the skipped slot went to someone else
    t2 = store.next_task("ann")
    assert t2.id not in (t0.id, t1.id)
    assert store.export_pairs() == [] and store.progress()["labeled"] == 1


def test_the_store_survives_a_reopen(tmp_path):
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    first = LabelStore(url)
    first.add_tasks(groups(2))
    task = first.next_task("ann")
    first.submit(task.id, "ann", ranks=[1, 2, 3, 4])
    first.engine.dispose()
    again = LabelStore(url)
    assert len(again.export_pairs()) == 6 and again.add_tasks(groups(2)) == 0  # known prompts are not re-added


def test_two_people_at_once_never_get_the_same_task(tmp_path):
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    store.add_tasks(groups(20))
    got: dict[str, list[int]] = {"ann": [], "bob": []}

    def work(name):
        while (task := store.next_task(name)) is not None:
            got[name].append(task.id)
            store.submit(task.id, name, ranks=[1, 2, 3, 4])

    threads = [threading.Thread(target=work, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got["ann"]) & set(got["bob"]) and len(got["ann"]) + len(got["bob"]) == 20


def test_overlap_hands_a_share_of_tasks_to_two_people_and_measures_agreement(tmp_path):
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    store.add_tasks(groups(40), overlap=0.25, seed=0)
    seen: dict[str, list[int]] = {"ann": [], "bob": []}
    for name, ranks in (("ann", [1, 2, 3, 4]), ("bob", [1, 3, 2, 4])):
        while (task := store.next_task(name)) is not None:
            seen[name].append(task.id)
            store.submit(task.id, name, ranks=ranks)
    both = set(seen["ann"]) & set(seen["bob"])
    assert 0 < len(both) < 40 and len(set(seen["ann"]) | set(seen["bob"])) == 40
    # per shared task 6 pairs, 5 ordered alike (only 1 vs 2 swapped)
    assert store.agreement() == {"overlap_tasks": len(both), "pairs": 6 * len(both), "agreement": pytest.approx(5 / 6)}


def test_a_relative_store_is_the_checkouts_also_in_an_experiments_temporary_copy(monkeypatch, tmp_path):
    from flows.paths import LABELS_HOME, ROOT, store_url

    monkeypatch.delenv(LABELS_HOME, raising=False)
    assert store_url("sqlite:///labels.db") == f"sqlite:///{ROOT}/labels.db"
    assert store_url("sqlite:////abs/labels.db") == "sqlite:////abs/labels.db"
    assert store_url("postgresql://u@h/db") == "postgresql://u@h/db"
    monkeypatch.setenv(LABELS_HOME, str(tmp_path))  # what flows/experiments.py gives queued experiments
    assert store_url("sqlite:///labels.db") == f"sqlite:///{tmp_path}/labels.db"


def test_an_invite_stores_only_the_token_s_hash_and_revoking_stops_it(tmp_path):
    from tasks.label import access

    db = tmp_path / "labels.db"
    store = LabelStore(f"sqlite:///{db}")
    assert not access.closed(store) and access.who(store, "anything") is None
    token = access.invite(store, "Alice Smith")
    assert access.closed(store) and access.who(store, token) == "Alice Smith"
    assert token.encode() not in db.read_bytes() and access.digest(token).encode() in db.read_bytes()
    assert access.who(store, token + "x") is None and access.who(store, None) is None
    with pytest.raises(LabelError, match="already invited"):
        access.invite(store, "Alice Smith")
    access.revoke(store, "Alice Smith")
    assert access.who(store, token) is None and access.closed(store)  # still closed: nobody else walks in
    fresh = access.invite(store, "Alice Smith")  # a revoked person can get a new link
    assert fresh != token and access.who(store, fresh) == "Alice Smith" and access.who(store, token) is None
    assert [(a["name"], a["revoked"]) for a in access.annotators(store)] == [("Alice Smith", None)]
    with pytest.raises(LabelError, match="no invited annotator 'Bob'"):
        access.revoke(store, "Bob")


def test_archive_restore_archive_gives_the_same_rankings(tmp_path):
    """Every kind of record a store holds — rankings with ties, all bad, a skip, an undone label, a task in two
    people's hands — survives an export and a restore into an empty store, and the pairs are the same."""
    from tasks.label.archive import archive, restore

    store = LabelStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_tasks(groups(5), overlap=0.5, seed=1)
    for name, action in [("ann", [2, 1, 1, 3]), ("bob", "all_bad"), ("ann", "skip"), ("cid", [1, 2, 3, 4])]:
        task = store.next_task(name)
        if action == "skip":
            store.skip(task.id, name)
        elif action == "all_bad":
            store.submit(task.id, name, all_bad=True)
        else:
            store.submit(task.id, name, ranks=action)
    store.undo_last("cid")
    store.submit(store.next_task("cid").id, "cid", ranks=[4, 3, 2, 1])
    first = archive(store)
    again = LabelStore(f"sqlite:///{tmp_path / 'b.db'}")
    assert restore(again, first) == {"tasks": 5, "labels": 4}
    assert archive(again) == first and again.export_pairs() == store.export_pairs()
    assert again.progress() == store.progress()
    assert again.next_task("ann").id == store.next_task("ann").id  # hand-outs and skips carried over too
    with pytest.raises(LabelError, match="restore into an empty store"):
        restore(again, first)


def test_a_new_sample_replaces_untouched_tasks_and_leaves_held_or_ranked_ones_as_people_saw_them(tmp_path):
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    store.add_tasks(groups(3))
    ranked = store.next_task("ann")
    store.submit(ranked.id, "ann", ranks=[1, 2, 3, 4])
    held = store.next_task("bob")  # handed out, not yet ranked
    resampled = [g | {"completions": [c | {"text": c["text"] + " (new)"} for c in g["completions"]]} for g in groups(3)]
    assert store.add_tasks(resampled, round=2) == 0
    assert sorted(store.kept_other_completions(resampled)) == sorted([ranked.prompt_id, held.prompt_id])
    free = store.next_task("cy")
    assert {free.prompt_id, ranked.prompt_id, held.prompt_id} == {"p0", "p1", "p2"}
    assert [c["text"] for c in free.completions] == [f" c{free.prompt_id[1]}.{j} (new)" for j in range(4)]
    assert free.round == 2
    assert {p["chosen"] for p in store.export_pairs()} <= {f" c{ranked.prompt_id[1]}.{j}" for j in range(4)}
    assert [c["text"] for c in store.next_task("bob").completions] == [c["text"] for c in held.completions]
