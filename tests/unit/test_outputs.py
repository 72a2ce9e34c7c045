"""Output paths: checked before the work, never lost after it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from profiler import outputs
from profiler.errors import OutputNotWritable


def test_check_accepts_a_new_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    assert outputs.check(tmp_path / "a.json") == tmp_path / "a.json"
    assert list(tmp_path.iterdir()) == []


def test_check_keeps_an_existing_file_as_it_is(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text("old")
    outputs.check(f)
    assert f.read_text() == "old"


@pytest.mark.parametrize("where", ["missing/a.json", "file/a.json", "dir"])
def test_check_refuses(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputNotWritable) as e:
        outputs.check(tmp_path / where)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "missing").exists()


def test_save_writes_next_to_the_file_when_it_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "result.json"
    target.mkdir()  # the file became a directory after the check: writing it fails
    written = outputs.save_text(target, json.dumps({"n": 23}))
    assert written.parent == tmp_path and written != target
    assert json.loads(written.read_text()) == {"n": 23}
    assert f"saved to {written} instead" in capsys.readouterr().err


def test_save_falls_back_to_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setenv("TMPDIR", str(spare))
    monkeypatch.setattr(outputs.tempfile, "tempdir", None)  # re-read TMPDIR
    out = gone / "result.json"
    outputs.check(out)
    shutil.rmtree(gone)  # removed while the capture ran
    written = outputs.save_text(out, "23\n")
    assert written.parent == spare and written.read_text() == "23\n"
    assert str(written) in capsys.readouterr().err


def test_save_says_so_when_nothing_can_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(_path: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputNotWritable, match="No space left on device"):
        outputs.save(tmp_path / "a.json", fail)
