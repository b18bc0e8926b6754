import pytest

from gptlab.files import atomic_directory, atomic_write, atomic_write_text, remove_temporaries


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


def dead_pid() -> int:
    """A pid no process has: one that just exited."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "deep" / "out"  # missing parents are made
    with pytest.raises(SystemExit):  # what a SIGTERM handler raises midway
        with atomic_directory(out) as partial:
            (partial / "half.bin").write_bytes(b"x")
            raise SystemExit(143)
    assert list((tmp_path / "deep").iterdir()) == []
    with atomic_directory(out) as partial:
        (partial / "a.json").write_text("{}")
    assert [p.name for p in out.iterdir()] == ["a.json"] and list((tmp_path / "deep").iterdir()) == [out]


def test_a_directory_may_replace_an_empty_one_and_takes_the_umasks_permissions(tmp_path):
    import os
    import stat
    (tmp_path / "out").mkdir()
    mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as partial:
            (partial / "weights").write_bytes(b"x")
            os.chmod(partial / "weights", 0o600)  # as safetensors writes its file
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "out" / "weights").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_what_dead_writers_left_is_removed_and_a_planted_link_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("precious")
    pid = dead_pid()
    (tmp_path / f".out.tmp{pid}-abc").mkdir()
    (tmp_path / f".out.tmp{pid}-abc" / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / f".out.tmp{pid}-lnk").symlink_to(victim)
    with atomic_directory(tmp_path / "out") as partial:
        (partial / "config.json").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim"]
    assert (victim / "config.json").read_text() == "precious" and (tmp_path / "out" / "config.json").read_text() == "new"
