"""Teacher labels are cached atomically: an interrupted labelling resumes, reruns reuse it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from equiforce.testing.structures import make_fcc_cu
from equiforce.workflows.distill.config import TeacherConfig
from equiforce.workflows.distill.data import labels_to_record
from equiforce.workflows.distill.store import RecordStore, fill_store, structure_key
from equiforce.workflows.distill.teacher import load_teacher

REPO = Path(__file__).resolve().parents[3]

# Labels 24 structures with a slow EMT (0.05 s per call), writing a chunk every 2 structures.
LABEL_SCRIPT = """
import sys
from equiforce.workflows.distill.config import TeacherConfig
from equiforce.workflows.distill.data import labels_to_record
from equiforce.workflows.distill.store import RecordStore, fill_store
from equiforce.workflows.distill.teacher import load_teacher
from equiforce.testing.structures import make_fcc_cu
structures = [make_fcc_cu(repeat=1, seed=s, rattle=0.1) for s in range(24)]
spec = TeacherConfig(
    calculator="tests.workflows.distill.calculators:SlowEMT", kwargs={"delay": 0.05}
)
teacher = load_teacher(spec, structures[0])
compute = lambda chunk: [labels_to_record(x) for x in teacher.label(chunk)]
fill_store(RecordStore(sys.argv[1]), structures, compute, 2, "labels", progress=False)
"""


def _structures(n: int = 24):
    return [make_fcc_cu(repeat=1, seed=s, rattle=0.1) for s in range(n)]


def _emt_compute():
    teacher = load_teacher(TeacherConfig(calculator="ase.calculators.emt:EMT"), _structures(1)[0])
    return lambda chunk: [labels_to_record(x) for x in teacher.label(chunk)]


def _assert_same_records(store: RecordStore, reference: RecordStore, structures) -> None:
    for atoms in structures:
        key = structure_key(atoms)
        for name, value in reference[key].items():
            np.testing.assert_array_equal(store[key][name], value)


def test_labelling_killed_by_sigkill_resumes_where_it_stopped(tmp_path):
    """Labelling killed by sigkill resumes where it stopped."""
    folder = tmp_path / "labels"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", LABEL_SCRIPT, str(folder)], env=env)
    deadline = time.monotonic() + 120
    while len(list(folder.glob("chunk-*.npz"))) < 2:
        assert process.poll() is None, "the labelling process ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = RecordStore(folder)
    n_saved = len(interrupted)
    assert 4 <= n_saved < 24 and n_saved % 2 == 0
    structures = _structures()
    computed = fill_store(interrupted, structures, _emt_compute(), 2, "labels", progress=False)
    assert computed == 24 - n_saved
    fresh = RecordStore(tmp_path / "fresh")
    fill_store(fresh, structures, _emt_compute(), 5, "labels", progress=False)
    _assert_same_records(RecordStore(folder), fresh, structures)


def test_labelling_interrupted_by_an_exception_keeps_finished_chunks(tmp_path):
    """Labelling interrupted by an exception keeps finished chunks."""
    structures = _structures(10)
    compute = _emt_compute()
    calls = []

    def failing(chunk):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return compute(chunk)

    with pytest.raises(KeyboardInterrupt):
        fill_store(RecordStore(tmp_path), structures, failing, 3, "labels", progress=False)
    reopened = RecordStore(tmp_path)
    assert len(reopened) == 6
    assert fill_store(reopened, structures, compute, 3, "labels", progress=False) == 4
    # A second student (a new process) reads everything from the cache.
    assert fill_store(RecordStore(tmp_path), structures, compute, 3, "labels", progress=False) == 0
    assert not list(tmp_path.glob(".*tmp"))
