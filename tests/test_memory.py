"""kv_app.memory: the memory limit as cgroup v1 and v2 write it, and the room for a load
(against file systems laid out like the kernel's; real limits: tests/test_signals.py)."""

from __future__ import annotations

import pytest

from kv_app import memory
from kv_app.loader import LoadError

MB = 1_000_000


def write_files(directory, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


@pytest.fixture
def v2(tmp_path, monkeypatch):
    """A cgroup v2 hierarchy: this process in /kube/pod, limits on the pod and its parent."""
    root = tmp_path / "cgroup"
    write_files(root, {"cgroup.controllers": "cpu memory\n"})
    write_files(
        root / "kube",
        {
            "memory.max": f"{900 * MB}\n",
            "memory.current": f"{100 * MB}\n",
            "memory.stat": "inactive_file 0\n",
        },
    )
    write_files(
        root / "kube" / "pod",
        {
            "memory.max": f"{300 * MB}\n",
            "memory.current": f"{120 * MB}\n",
            "memory.stat": f"anon {60 * MB}\ninactive_file {40 * MB}\nactive_file 0\n",
        },
    )
    monkeypatch.setattr(memory, "CGROUP_FS", root)
    monkeypatch.setattr(memory, "_own", lambda controller: None if controller else "/kube/pod")
    return root


def test_v2_the_tightest_limit_less_reclaimable_cache(v2):
    limit = memory.cgroup_limit()
    assert limit == memory.Limit(str(v2 / "kube" / "pod" / "memory.max"), 300 * MB, 80 * MB)
    assert limit.free == 220 * MB


def test_v2_no_limit(v2):
    for directory in (v2 / "kube", v2 / "kube" / "pod"):
        (directory / "memory.max").write_text("max\n")
    assert memory.cgroup_limit() is None


def test_v1_the_hierarchical_limit(tmp_path, monkeypatch):
    root = tmp_path / "cgroup"
    write_files(
        root / "memory" / "docker" / "abc",
        {
            "memory.limit_in_bytes": str(2**63 - 4096),  # its own: none
            "memory.usage_in_bytes": str(90 * MB),
            "memory.stat": f"hierarchical_memory_limit {256 * MB}\ntotal_inactive_file {30 * MB}\n",
        },
    )
    monkeypatch.setattr(memory, "CGROUP_FS", root)
    monkeypatch.setattr(memory, "_own", lambda controller: "/docker/abc" if controller else None)
    limit = memory.cgroup_limit()
    assert (limit.limit, limit.used) == (256 * MB, 60 * MB)


def test_a_load_that_cannot_fit_is_refused_with_both_figures(v2, tmp_path):
    data = tmp_path / "d.data"
    data.write_text("0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a01 v\n" * 1000)
    memory.check_room("dict", 100, 1.0, str(data))  # 139 kB: fits
    with pytest.raises(LoadError) as refused:
        memory.check_room("dict", 200_000, 1.0, str(data))  # 200 MB + the text
    assert str(refused.value).startswith(
        f"{data}: a dict store of 1,000 lines needs about 200 MB, but the memory limit is "
        f"300 MB with 80 MB in use ({v2 / 'kube' / 'pod' / 'memory.max'})"
    )


def test_lines_are_counted_with_or_without_a_last_newline(tmp_path):
    for text, lines in (("", 0), ("a\n", 1), ("a\nb", 2), ("a\nb\n", 2)):
        (tmp_path / "f").write_text(text)
        assert memory.count_lines(tmp_path / "f") == lines
