"""Fixed splits written as byte-identical frame copies (``equiforce.data.frames``)."""

from __future__ import annotations

import pytest

from equiforce.data.extxyz import read_configurations
from equiforce.data.frames import fixed_split, frame_texts, write_frames


def _frame(k: int, n_atoms: int = 2) -> str:
    atoms = "".join(f"H {k}.0 {a}.5 0.0\n" for a in range(n_atoms))
    return f"{n_atoms}\nProperties=species:S:1:pos:R:3 energy={-k}.25 pbc=\"F F F\"\n{atoms}"


@pytest.fixture
def six_frames(write_text):
    # frames of different sizes, and a blank line between two of them
    text = _frame(0) + _frame(1, 3) + "\n" + _frame(2) + _frame(3) + _frame(4, 1) + _frame(5)
    return write_text(text)


def test_frame_texts_are_the_file_text(six_frames):
    texts = frame_texts(six_frames)
    assert len(texts) == 6
    assert texts[1] == _frame(1, 3) and texts[4] == _frame(4, 1)
    assert "".join(texts) == six_frames.read_text().replace("\n\n", "\n")


def test_fixed_split_takes_first_and_last_frames(six_frames, tmp_path):
    train, valid = fixed_split(six_frames, tmp_path / "split", n_train=3, n_valid=2)
    assert train.read_text() == _frame(0) + _frame(1, 3) + _frame(2)
    assert valid.read_text() == _frame(4, 1) + _frame(5)
    energies = [c.energy for c in read_configurations(valid)]
    assert energies == [-4.25, -5.25]


@pytest.mark.parametrize("n_train, n_valid", [(5, 2), (0, 2), (3, 0)])
def test_fixed_split_refuses_overlap_and_empty_sets(six_frames, tmp_path, n_train, n_valid):
    with pytest.raises(ValueError, match="without overlap"):
        fixed_split(six_frames, tmp_path, n_train, n_valid)


def test_write_frames_selection(six_frames, tmp_path):
    path = write_frames(six_frames, tmp_path / "head.xyz", slice(None, 2))
    assert path.read_text() == _frame(0) + _frame(1, 3)
    with pytest.raises(ValueError, match="no frames"):
        write_frames(six_frames, tmp_path / "none.xyz", slice(10, None))


def test_truncated_file_names_the_line(write_text):
    path = write_text(_frame(0) + "3\ncomment\nH 0 0 0\n", "cut.xyz")
    with pytest.raises(ValueError, match=r"cut.xyz:5: the file ends inside a frame"):
        frame_texts(path)
    with pytest.raises(ValueError, match="expected an atom count"):
        frame_texts(write_text("two\n", "bad.xyz"))
