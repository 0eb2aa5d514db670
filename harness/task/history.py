"""The evaluator side of a workspace: its history read safely, and each state of the submission folder copied out.

The workspace is untrusted. Git must not run in it (its config and hooks could run commands), so it is cloned
first with `git clone --no-local`, whose serving side ignores the repository's config and hooks, and every
later command reads the clone. States are written into folders of the evaluator's, never run in place: regular
files only (a symbolic link or a submodule makes the state ungradable, saying so), within a size limit.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LoopbenchError
from harness.task.snapshot import FOLDER_TRAILER, SNAPSHOT_TRAILER

MAX_FILES = 5000
MAX_BYTES = 256 * 1024 * 1024
"""A state larger than this is not graded (a submission is source code, not data)."""
SKIPPED = ("__pycache__",)
GIT_TIMEOUT = 300


class StateError(Exception):
    """A state that cannot be graded; the message says why in one line, and becomes its rejection."""


@dataclass(frozen=True)
class Snapshot:
    commit: str
    time: int
    """The commit's time as it states it (seconds since the epoch)."""


class Clone:
    """A bare clone of a workspace, in a folder of the evaluator's, with a git configuration of its own."""

    def __init__(self, workspace: Path, folder: Path):
        self.path = folder / "clone.git"
        config = folder / "gitconfig"
        # the workspace belongs to the attempt's user: allow reading it, and nothing of the machine's config
        config.write_text("[safe]\n\tdirectory = *\n", encoding="utf-8")
        self.env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": str(config),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }
        for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
            self.env.pop(name, None)
        done = self._run("clone", "--quiet", "--no-local", "--bare", "--", str(workspace), str(self.path), bare=False)
        if done.returncode != 0:
            last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise LoopbenchError(f"cannot read the history of {workspace}: {last}")

    def _run(self, *args: str, bare: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        where = ["--git-dir", str(self.path)] if bare else []
        return subprocess.run(
            ["git", *where, *args], input=stdin, capture_output=True, env=self.env, timeout=GIT_TIMEOUT, check=False
        )

    def text(self, *args: str) -> str | None:
        done = self._run(*args)
        return done.stdout.decode("utf-8", errors="replace") if done.returncode == 0 else None

    def first_commit(self) -> str:
        roots = self.text("rev-list", "--first-parent", "--max-parents=0", "HEAD")
        if not roots or not roots.split():
            raise LoopbenchError("the workspace's history has no commit (was it made by `loopbench task export`?)")
        return roots.split()[-1]

    def show(self, commit: str, path: str) -> str | None:
        return self.text("show", f"{commit}:{path}")

    def snapshots(self, folder: str) -> list[Snapshot]:
        """The snapshot commits of `folder` on the first-parent history of HEAD, oldest first."""
        log = self.text("log", "--first-parent", "--reverse", "--format=%H%x1f%ct%x1f%B%x1e", "HEAD") or ""
        found = []
        for entry in log.split("\x1e"):
            parts = entry.strip("\n").split("\x1f")
            if len(parts) != 3:
                continue
            commit, when, body = parts
            trailers = dict(re.findall(r"^([A-Za-z-]+): *(.*?) *$", body, flags=re.MULTILINE))
            if SNAPSHOT_TRAILER in trailers and trailers.get(FOLDER_TRAILER) == folder and when.isdigit():
                found.append(Snapshot(commit, int(when)))
        return found

    def extract(self, commit: str, folder: str, target: Path) -> None:
        """`folder` as it is in `commit`, written under `target` (created); StateError where it cannot be graded."""
        listing = self._run("ls-tree", "-r", "-l", "-z", "--full-tree", commit, "--", f"{folder}/")
        entries = [e for e in listing.stdout.decode("utf-8", errors="replace").split("\0") if e]
        if listing.returncode != 0 or not entries:
            raise StateError(f"the snapshot holds no {folder}/")
        files: list[tuple[str, str, str]] = []
        total = 0
        for entry in entries:
            meta, path = entry.split("\t", 1)
            mode, kind, blob, size = meta.split()
            relative = _inside(path[len(folder) + 1 :], folder)
            if kind != "blob" or mode == "120000":
                what = "a submodule" if kind == "commit" else "a symbolic link"
                raise StateError(f"the snapshot's {folder}/ holds {what}: {relative}")
            if not any(part in SKIPPED for part in Path(relative).parts):
                files.append((mode, blob, relative))
                total += int(size)
        _check_size(len(files), total, folder)
        batch = self._run("cat-file", "--batch", stdin="".join(f"{b}\n" for _, b, _ in files).encode())
        _write_blobs(batch.stdout, files, target, folder)


def _inside(relative: str, folder: str) -> str:
    """A path of a snapshot's tree, refused unless it names a place inside the folder."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StateError(f"the snapshot's {folder}/ holds a path that leads outside it: {relative!r}")
    return relative


def _check_size(count: int, size: int, folder: str) -> None:
    if count > MAX_FILES:
        raise StateError(f"{folder}/ holds more than {MAX_FILES} files")
    if size > MAX_BYTES:
        raise StateError(f"{folder}/ holds more than {MAX_BYTES // 2**20} MiB")


def _write_blobs(stream: bytes, files: list[tuple[str, str, str]], target: Path, folder: str) -> None:
    """The answer of `git cat-file --batch` (a header line, the bytes, a newline per blob) as the files."""
    offset = 0
    target.mkdir(parents=True)
    for mode, _, relative in files:
        end = stream.find(b"\n", offset)
        header = stream[offset:end].split()
        if end < 0 or len(header) != 3 or not header[2].isdigit():
            raise StateError(f"the snapshot's history is incomplete: {relative} cannot be read")
        size = int(header[2])
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(stream[end + 1 : end + 1 + size])
        path.chmod(0o755 if mode == "100755" else 0o644)
        offset = end + 2 + size


def copy_folder(source: Path, target: Path, folder: str) -> None:
    """The working tree's `folder` (at `source`) copied under `target`: regular files only, caches left out."""
    if source.is_symlink() or not source.is_dir():
        raise StateError(f"the workspace has no {folder}/ folder")
    try:
        _copy_files(source, target, folder)
    except OSError as err:
        raise StateError(f"cannot read {folder}/ of the workspace: {err.strerror or err}") from None


def _copy_files(source: Path, target: Path, folder: str) -> None:
    count, total = 0, 0
    target.mkdir(parents=True)
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for name in [*dirs, *names]:
            path = Path(root) / name
            info = path.lstat()
            relative = path.relative_to(source).as_posix()
            if stat.S_ISLNK(info.st_mode):
                raise StateError(f"{folder}/ holds a symbolic link: {relative}")
            if stat.S_ISDIR(info.st_mode):
                (target / relative).mkdir()
            elif stat.S_ISREG(info.st_mode):
                count, total = count + 1, total + info.st_size
                _check_size(count, total, folder)
                shutil.copyfile(path, target / relative, follow_symlinks=False)
                (target / relative).chmod(0o755 if info.st_mode & stat.S_IXUSR else 0o644)
            else:
                raise StateError(f"{folder}/ holds something that is not a file: {relative}")


def newest_change(folder: Path) -> float:
    """The latest modification time of anything in `folder` (seconds since the epoch; 0 where it cannot be read)."""
    try:
        times = [folder.lstat().st_mtime]
        for root, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if d not in SKIPPED]
            times += [(Path(root) / n).lstat().st_mtime for n in [*dirs, *names]]
    except OSError:
        return 0.0
    return max(times)


def content_hash(folder: Path) -> str:
    """SHA-256 over every file of `folder` (its path and the SHA-256 of its bytes), caches left out."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not set(relative.parts) & set(SKIPPED):
            digest.update(f"{relative.as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()
