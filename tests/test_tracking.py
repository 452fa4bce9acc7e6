"""MLflow's temporary copy of a logged model: in a RAM file system when there is room for it."""

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
