import pytest

from gptlab.files import atomic_write, atomic_write_text, remove_temporaries


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def half_then_fail(f):
        f.write(b"new but unfin")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_temporaries_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    for name in (".model_00010.pt.tmp123-abcd1234", ".model_00010.pt.sha256.tmp9-ff", "model_00010.pt", ".other.tmp1"):
        (tmp_path / name).write_text("x")
    remove_temporaries(tmp_path, "model_*.pt*")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp1", "model_00010.pt"]
