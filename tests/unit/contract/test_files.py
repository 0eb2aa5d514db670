"""A submission folder is untrusted: no link out of it is followed, no special file is read, its size is capped
before anything is copied, its files are hashed in chunks, and a copy that fails leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from harness.contract.files import copy_files, scan
from harness.contract.submission import load_submission
from harness.errors import LoopbenchError
from harness.trial.folder import FOLDER_PREFIX, prepare_folder
from tests.helpers import HONEST, assert_one_line_error, invoke


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the honest float32 port: a small, valid submission to spoil."""
    target = tmp_path / "sub"
    shutil.copytree(HONEST, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def trial_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*")}


def test_a_link_out_of_the_folder_is_refused_in_one_line_before_anything_is_copied(folder):
    (folder / "etc").symlink_to("/etc")
    before = trial_folders()
    result = invoke("check", folder)
    assert_one_line_error(result, f"{folder / 'etc'} is a link to /etc, outside the submission folder")
    assert trial_folders() == before


@pytest.mark.parametrize("target", ["../elsewhere.py", "/etc/passwd", "inner/../../x"])
def test_every_way_out_is_a_link_out(folder, target):
    (folder / "inner").mkdir()
    (folder / "leak.py").symlink_to(target)
    with pytest.raises(LoopbenchError, match=r"leak\.py is a link to .*outside the submission folder"):
        load_submission(folder)


def test_a_fifo_or_a_socket_is_refused(folder):
    import socket

    os.mkfifo(folder / "pipe")
    with pytest.raises(LoopbenchError, match="pipe is a FIFO"):
        load_submission(folder)
    os.unlink(folder / "pipe")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(folder / "sock"))
        with pytest.raises(LoopbenchError, match="sock is a socket"):
            load_submission(folder)


def test_a_sparse_file_counts_at_its_full_size_and_the_cap_is_checked_before_reading(folder):
    with open(folder / "weights.bin", "wb") as f:
        f.truncate(2 * 2**30)  # 2 GiB that take no disk
    result = invoke("check", folder)
    assert_one_line_error(result, "holds more than 64 MiB of files", "weights.bin alone is 2 GiB", "--max-size")
    with pytest.raises(LoopbenchError, match="more than 1 MiB"):
        load_submission(folder, max_bytes=2**20)


def test_hashing_streams_in_chunks(folder):
    with open(folder / "big.bin", "wb") as f:
        f.truncate(256 * 2**20)
    tracemalloc.start()
    try:
        sub = load_submission(folder, max_bytes=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"hashing held {peak / 2**20:.0f} MiB at once"
    zeros = hashlib.sha256()
    for _ in range(256):
        zeros.update(bytes(2**20))
    assert sub.file_hashes()["big.bin"] == zeros.hexdigest()


def test_links_inside_the_folder_are_copied_as_links_and_hashed_as_what_they_lead_to(folder, tmp_path):
    (folder / "lib").mkdir()
    (folder / "lib" / "helper.py").write_text("X = 1\n")
    (folder / "helper.py").symlink_to("lib/helper.py")
    (folder / "also").symlink_to(folder / "lib")  # absolute, but inside: copied as a relative link
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"cache")
    sub = load_submission(folder)
    hashes = sub.file_hashes()
    assert hashes["helper.py"] == hashes["lib/helper.py"] == hashlib.sha256(b"X = 1\n").hexdigest()
    assert not any("__pycache__" in rel for rel in hashes)
    copy = tmp_path / "copy"
    copy_files(sub.path, sub.files, copy)
    assert os.readlink(copy / "helper.py") == "lib/helper.py"
    assert os.readlink(copy / "also") == "lib" and (copy / "also" / "helper.py").read_text() == "X = 1\n"
    assert not (copy / "__pycache__").exists()
    assert load_submission(copy).file_hashes() == hashes


def test_a_file_changed_after_loading_stops_the_copy_and_no_trial_folder_is_left(folder):
    sub = load_submission(folder)
    (folder / "train.py").write_text((folder / "train.py").read_text() + "\n# edited while scoring\n")
    before = trial_folders()
    with pytest.raises(LoopbenchError, match=r"train\.py changed while the submission was being read"):
        prepare_folder(sub)
    assert trial_folders() == before


def test_a_folder_swapped_for_a_link_after_loading_is_not_followed(folder, tmp_path):
    (folder / "lib").mkdir()
    (folder / "lib" / "helper.py").write_text("X = 1\n")
    sub = load_submission(folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "helper.py").write_text("X = 1\n")  # the very same bytes, elsewhere
    shutil.rmtree(folder / "lib")
    (folder / "lib").symlink_to(outside)
    with pytest.raises(LoopbenchError, match="changed while the submission was being read"):
        copy_files(sub.path, sub.files, tmp_path / "copy")


def test_a_folder_too_deep_to_remove_safely_is_refused(folder):
    deep = folder
    for _ in range(40):
        deep = deep / "d"
        deep.mkdir()
    with pytest.raises(LoopbenchError, match="more than 32 folders deep"):
        scan(folder)
    assert len(scan(folder / "d" / "d" / "d" / "d" / "d" / "d" / "d" / "d" / "d")) == 31


def test_init_from_a_folder_with_a_link_out_is_refused(folder, tmp_path):
    (folder / "secrets").symlink_to("/etc")
    result = invoke("init", "mine", "--from", folder, "--into", tmp_path / "subs")
    assert_one_line_error(result, "secrets is a link to /etc")
    assert not (tmp_path / "subs" / "mine").exists()


def test_a_packed_submission_travels_with_its_links_and_its_hashes(folder):
    from harness.scoring.cluster import pack, unpacked

    (folder / "lib").mkdir()
    (folder / "lib" / "helper.py").write_text("X = 1\n")
    (folder / "helper.py").symlink_to("lib/helper.py")
    sub = load_submission(folder)
    packed = pack(sub)
    assert set(packed["files"]) == {e.rel for e in sub.files if e.kind == "file"}
    with unpacked(packed) as there:
        assert there.file_hashes() == sub.file_hashes()
        assert os.readlink(there.path / "helper.py") == "lib/helper.py"
