"""fsutil: atomic directory and file outputs, including two processes writing one target."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gcf_trt.fsutil import atomic_file, atomic_output_dir

# One writer: enters the atomic dir, writes files named after itself, optionally waits for a
# signal file while inside (to force an overlap), then leaves.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gcf_trt.fsutil import atomic_output_dir
    target, me, wait_before, signal, wait_inside, rounds = sys.argv[1:7]
    def wait(path):
        deadline = time.time() + 60
        while not Path(path).exists():
            if time.time() > deadline:
                sys.exit(f"timed out waiting for {path}")
            time.sleep(0.01)
    if wait_before != "-":
        wait(wait_before)
    for r in range(int(rounds)):
        with atomic_output_dir(target) as tmp:
            (tmp / "who").write_text(me)
            (tmp / f"{me}.1").write_text("x" * 1000)
            if signal != "-":
                Path(signal).touch()
            if wait_inside != "-":
                wait(wait_inside)
            (tmp / f"{me}.2").write_text("y" * 1000)   # fails if another build deleted tmp
""")


def _writer(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _complete(target: Path) -> str:
    """The writer whose complete output is in target (and nothing of another writer)."""
    who = (target / "who").read_text()
    assert sorted(p.name for p in target.iterdir()) == sorted(["who", f"{who}.1", f"{who}.2"])
    return who


def test_a_second_build_does_not_delete_a_running_builds_temp_dir(tmp_path):
    """B starts while A is inside its temp dir: A's temp dir survives B's stale-temp clean-up."""
    target = str(tmp_path / "engines")
    a_in, b_done = str(tmp_path / "a_in"), str(tmp_path / "b_done")
    a = _writer(tmp_path, target, "A", "-", a_in, b_done, "1")
    b = _writer(tmp_path, target, "B", a_in, "-", "-", "1")
    _, b_err = b.communicate(timeout=120)
    Path(b_done).touch()
    _, a_err = a.communicate(timeout=120)
    assert b.returncode == 0, b_err
    assert a.returncode == 0, a_err
    assert _complete(tmp_path / "engines") == "A"  # A finished last
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_two_processes_swapping_into_one_target_never_crash(tmp_path):
    target = str(tmp_path / "engines")
    procs = [_writer(tmp_path, target, me, "-", "-", "-", "25") for me in ("A", "B")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert _complete(tmp_path / "engines") in ("A", "B")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stale_temp_dir_of_a_dead_build_is_removed(tmp_path):
    stale = tmp_path / ".engines.tmp-dead1234"
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"\0" * 10)
    old = tmp_path / ".engines.old-999-abcd"
    old.mkdir()
    with atomic_output_dir(tmp_path / "engines") as tmp:
        (tmp / "f").write_text("new")
    assert not stale.exists() and not old.exists()
    assert (tmp_path / "engines" / "f").read_text() == "new"


def test_failure_keeps_the_old_directory(tmp_path):
    target = tmp_path / "engines"
    target.mkdir()
    (target / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as tmp:
            (tmp / "f").write_text("new")
            raise RuntimeError("build failed")
    assert (target / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engines"]


def test_output_gets_umask_permissions(tmp_path):
    with atomic_output_dir(tmp_path / "engines") as tmp:
        (tmp / "f").write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "engines").stat().st_mode & 0o777 == 0o777 & ~umask


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise ValueError("writer failed")
    assert path.read_text() == "old"
    with atomic_file(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".json" and tmp != path
        tmp.write_text("new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
