"""Two saves of one folder at once (a reward model saved from two notebooks): the second never sweeps away the
first one's temporary folder as a crash's leftover; a real leftover (no one writing it) still goes."""

from rlhf_lab.core.files import SaveKind, atomic_directory

KIND = SaveKind("manifest.json", "a test save", "save")


def test_a_save_under_way_is_not_swept_by_another_save_of_the_same_folder(tmp_path):
    path = tmp_path / "save"
    leftover = tmp_path / ".save.tmp-0badc0de"  # a killed kernel's: nobody holds it
    leftover.mkdir()
    (leftover / "part.bin").write_bytes(b"half")
    with atomic_directory(path, kind=KIND) as first:  # the first kernel, still writing
        (first / "weights.bin").write_bytes(b"first")
        with atomic_directory(path, kind=KIND) as second:  # (a flock on its folder: the same from another process)
            (second / "weights.bin").write_bytes(b"second")
            (second / "manifest.json").write_text("second")
        assert not leftover.exists() and (first / "weights.bin").read_bytes() == b"first"
        (first / "manifest.json").write_text("first")
    assert (path / "manifest.json").read_text() == "first" and (path / "weights.bin").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["save"]
