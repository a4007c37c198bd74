"""``equiforce bench`` reports on made-up results: scaling fits, the table's wall and CPU
columns, the "current ratios" rows, the JSON round trip."""

from __future__ import annotations

import json

import pytest

from equiforce.workflows.bench.report import (
    RATIO_HEADER,
    format_table,
    ratio_rows,
    scaling_exponents,
    write_json,
)


def _box(atoms: int, ms: float, mb: float) -> dict:
    data = {"timing": {"median_ms": ms}, "memory": {"peak_minus_baseline_mb": mb}}
    return {"system": f"box-{atoms}", "n_atoms": atoms, "implementations": {"ours": data}}


def test_scaling_exponents_fit_log_log_slopes_over_boxes_only():
    molecule = {**_box(15, 1.0, 1.0), "system": "molecule"}
    results = [molecule, _box(1000, 10.0, 5.0), _box(10000, 100.0, 50.0), _box(100000, 1e4, 500.0)]
    slopes = scaling_exponents({"results": results})["ours"]
    # time: 1.0 then 2.0 decades per decade of atoms -> least-squares slope 1.5
    assert slopes == pytest.approx({"time": 1.5, "memory": 1.0, "n_boxes": 3})
    assert scaling_exponents({"results": [molecule, _box(1000, 10.0, 5.0)]}) == {}


def _impl(wall: float, cpu: float | None) -> dict:
    timing = {"median_ms": wall, **({} if cpu is None else {"median_cpu_ms": cpu})}
    memory = {"peak_minus_baseline_mb": 10.0, "peak_mb": 100.0}
    return {"timing": timing, "atom_steps_per_s": 15e3 / wall, "memory": memory}


def _report(cpu: bool = True) -> dict:
    ours, peer = _impl(8.0, 2.0 if cpu else None), _impl(12.0, 5.0 if cpu else None)
    ratio = {"time": 1.5, "memory": 1.0, **({"cpu_time": 2.5} if cpu else {})}
    result = {
        "system": "molecule",
        "n_atoms": 15,
        "n_edges": 150,
        "load_avg": [9.5, 9.0, 8.0],
        "implementations": {"equiforce": ours, "mace-torch": peer},
        "ratios": {"mace-torch": ratio},
    }
    settings = {"precision": "float32", "kind": "inference", "threads": 1, "device": "cpu"}
    machine = {"git_commit": "0123456789abcdef", "cpu_model": "EPYC", "cpus": 2}
    return {
        "date": "2026-12-02T08:00:00",
        "machine": machine,
        "settings": {**settings, "preset": "mace-128-l1", "model": None},
        "results": [result],
    }


def test_the_table_shows_wall_and_cpu_ms_and_both_ratios():
    lines = format_table(_report()).splitlines()
    header = lines[1].split()
    assert header[4:10] == ["ms/call", "cpu", "ms", "atom-steps/s", "peak", "MB"]
    assert ["x", "time", "x", "cpu", "x", "mem"] == header[10:16]
    ours, peer = (line.split() for line in lines[2:4])
    assert ours[3:6] == ["equiforce", "8.00", "2.00"] and ours[8:11] == ["n/a"] * 3
    assert peer[3:6] == ["mace-torch", "12.00", "5.00"] and peer[8:11] == ["1.50", "2.50", "1.00"]


def test_ratio_rows_carry_wall_and_cpu_times_and_ratios():
    (row,) = ratio_rows(_report(), "equiforce bench --peers")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == RATIO_HEADER.splitlines()[0].count("|") - 1
    assert cells[3:8] == ["9.5", "mace-128-l1", "float32", "inference", "molecule (15)"]
    assert cells[8:12] == ["8.0 / 2.0", "mace-torch", "12.0 / 5.0", "1.50 / **2.50**"]
    (old,) = ratio_rows(_report(cpu=False), "equiforce bench --peers")
    assert "| 8.0 | mace-torch | 12.0 | **1.50** |" in old


def test_the_json_report_round_trips_to_the_same_table_and_rows(tmp_path):
    report = _report()
    path = write_json(report, tmp_path / "bench.json")
    again = json.loads(path.read_text())
    assert again == report
    assert format_table(again) == format_table(report)
    assert ratio_rows(again, "cmd") == ratio_rows(report, "cmd")
