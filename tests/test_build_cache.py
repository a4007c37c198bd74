"""``equiforce.build_cache.cached_build``: one build per hash of the sources and settings, in
``$TORCH_EXTENSIONS_DIR``; a failed build leaves nothing that a later call would take for
finished."""

from __future__ import annotations

import os

import pytest

from equiforce.build_cache import cached_build, extension_cache


def test_a_build_runs_once_per_sources_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    assert extension_cache() == tmp_path / "cache"
    source = tmp_path / "a.cpp"
    source.write_text("int a;")
    built = []

    def build(target):
        built.append(target)
        scratch = target.with_suffix(".scratch")
        scratch.write_text(source.read_text())
        os.replace(scratch, target)

    def path(*settings):
        return cached_build("things", "thing-{hash}.so", [source], settings, build)

    first = path("-O2")
    assert first.parent == tmp_path / "cache" / "things" and first.read_text() == "int a;"
    assert path("-O2") == first and len(built) == 1  # cached
    assert path("-O3") != first and len(built) == 2  # other settings, another build
    source.write_text("int b;")
    edited = path("-O2")
    assert edited not in (first, built[1]) and edited.read_text() == "int b;"


def test_a_failed_build_is_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    source = tmp_path / "a.cpp"
    source.write_text("int a;")

    def fail(target):
        raise RuntimeError("the compiler failed")

    with pytest.raises(RuntimeError, match="the compiler failed"):
        cached_build("things", "thing-{hash}", [source], (), fail)
    assert [p.suffix for p in (tmp_path / "things").iterdir()] == [".lock"]
    target = cached_build("things", "thing-{hash}", [source], (), lambda t: t.write_text("ok"))
    assert target.read_text() == "ok"
