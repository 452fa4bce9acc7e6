"""MLflow around the stages: the temporary copy of a logged model (in a RAM file system when there is room for
it), and which training runs this store has."""

import tempfile

from flows.tracking import staged_in_memory


def test_the_temporary_copy_goes_to_memory_only_with_room_for_it_twice(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    with staged_in_memory(1000, shm) as in_memory:
        assert in_memory and tempfile.gettempdir() == str(shm)
    assert tempfile.gettempdir() != str(shm)  # put back afterwards
    with staged_in_memory(10**18, shm) as in_memory:
        assert not in_memory and tempfile.gettempdir() != str(shm)
    with staged_in_memory(1000, tmp_path / "absent") as in_memory:
        assert not in_memory


def test_a_training_run_from_another_mlflow_store_is_told_apart(tmp_path):
    """A clone that pulled models trained elsewhere: eval adds its numbers only to runs its store has."""
    import mlflow

    from flows.eval import known_run

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri()))
    assert known_run(client, run.info.run_id) and not known_run(client, "b11c0f4a75a4442abacfb7d7a068535d")
