"""A submission folder's files, read safely: what they are, what they hash to, and copies of them.

A submission folder is untrusted (SPEC §10). It is walked without following any link: a link that
points outside the folder, a FIFO, a device or a socket is refused in one line naming it, and the
folder's real size (a sparse file counts at its full length) is checked against a cap before anything
is copied. Every file is hashed as it is read, in chunks, so no file is ever held in memory whole; a
copy re-reads each file and checks that it still hashes to what the folder was loaded with, so the
record's hashes are those of the code that ran in every trial.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LoopbenchError

DEFAULT_MAX_BYTES = 64 * 2**20
"""The default cap on a submission folder's files: the largest shipped submission holds about 23 KB."""
MAX_FILES = 10_000
"""Files and folders a submission may hold: a folder of a million empty files is no training loop."""
MAX_DEPTH = 32
"""Folders within folders: deeper nests would outrun the recursion of tools that remove a copy (shutil.rmtree)."""
CHUNK = 2**20
SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc",)
_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FileEntry:
    """One entry of a submission folder, by its path relative to the folder ('/'-separated)."""

    rel: str
    kind: str
    """'file', 'dir' or 'link' (a symbolic link to somewhere inside the folder)."""
    size: int = 0
    sha256: str = ""
    """Of the file's bytes; of the bytes a link leads to, when it leads to a file."""
    target: str = ""
    """A link's target, relative to the link's own folder and inside the submission folder."""


def size_text(n: float) -> str:
    """Bytes as people read them: 512 B, 3.1 KiB, 64 MiB, 2 GiB."""
    units, value, i = ("B", "KiB", "MiB", "GiB", "TiB"), float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{value:.0f} {units[i]}" if i == 0 or value == int(value) else f"{value:.1f} {units[i]}"


def _skipped(name: str, is_dir: bool) -> bool:
    return name in SKIPPED_DIRS if is_dir else name.endswith(SKIPPED_SUFFIXES)


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a character device" if stat.S_ISCHR(mode) else "not a regular file"


class _Walk:
    """One walk of a folder: its entries, checked against the cap as they are found."""

    def __init__(self, root: Path, max_bytes: int | None):
        self.root, self.real_root = root, Path(os.path.realpath(root))
        self.max_bytes = max_bytes
        self.total = 0
        self.entries: list[FileEntry] = []
        self.leads_to: dict[str, str] = {}
        """Each link's real path, relative to the folder."""

    def refuse(self, rel: str, why: str) -> LoopbenchError:
        return LoopbenchError(f"{self.root / rel} {why}")

    def count(self, entry: FileEntry) -> None:
        self.entries.append(entry)
        if len(self.entries) > MAX_FILES:
            raise LoopbenchError(f"{self.root} holds more than {MAX_FILES} files and folders: not a submission folder")

    def add_size(self, rel: str, size: int) -> None:
        self.total += size
        if self.max_bytes is not None and self.total > self.max_bytes:
            raise LoopbenchError(
                f"{self.root} holds more than {size_text(self.max_bytes)} of files ({rel} alone is "
                f"{size_text(size)}): a submission folder holds its code; --max-size raises the cap"
            )

    def link(self, rel: str, path: Path) -> FileEntry:
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.real_root):
            raise self.refuse(rel, f"is a link to {os.readlink(path)}, outside the submission folder: refused")
        self.leads_to[rel] = real.relative_to(self.real_root).as_posix()
        return FileEntry(rel, "link", target=_relative(real, path.parent))

    def walk(self) -> None:
        """Every entry, parents before children, in name order (a stack, so no depth exhausts the recursion)."""
        todo = [""]
        while todo:
            rel_dir = todo.pop()
            todo.extend(reversed(self.folder(rel_dir)))

    def folder(self, rel_dir: str) -> list[str]:
        """The entries of one folder; its subfolders, to walk next."""
        here = self.root / rel_dir if rel_dir else self.root
        try:
            with os.scandir(here) as found:
                items = sorted(found, key=lambda e: e.name)
        except OSError as err:
            raise LoopbenchError(f"cannot read {here}: {err.strerror or err}") from None
        subfolders = []
        for item in items:
            rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
            try:
                rel.encode("utf-8")
                info = item.stat(follow_symlinks=False)
            except UnicodeEncodeError:
                raise self.refuse(rel, "has a name that is not UTF-8 text: rename it") from None
            except OSError as err:
                raise LoopbenchError(f"cannot read {here / item.name}: {err.strerror or err}") from None
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                self.count(self.link(rel, Path(item.path)))
            elif stat.S_ISDIR(mode):
                if not _skipped(item.name, True):
                    if rel.count("/") >= MAX_DEPTH:
                        raise self.refuse(rel, f"is more than {MAX_DEPTH} folders deep: not a submission folder")
                    self.count(FileEntry(rel, "dir"))
                    subfolders.append(rel)
            elif stat.S_ISREG(mode):
                if not _skipped(item.name, False):
                    self.add_size(rel, info.st_size)
                    self.count(FileEntry(rel, "file", info.st_size))
            else:
                raise self.refuse(rel, f"is {_kind_of(mode)}: a submission folder holds files, folders and links only")
        return subfolders


def scan(root: str | Path, max_bytes: int | None = DEFAULT_MAX_BYTES) -> tuple[FileEntry, ...]:
    """Every file, folder and inner link of `root` (caches left out), checked, then hashed in chunks."""
    walk = _Walk(Path(root), max_bytes)
    walk.walk()
    hashed: dict[str, str] = {}
    for e in walk.entries:
        if e.kind == "file":
            digest = hashlib.sha256()
            for chunk in _read(Path(root), e):
                digest.update(chunk)
            hashed[e.rel] = digest.hexdigest()
    entries = []
    for e in walk.entries:
        if e.kind == "file":
            e = FileEntry(e.rel, e.kind, e.size, hashed[e.rel])
        elif e.kind == "link":  # the digest of the file it leads to, if it leads to one
            e = FileEntry(e.rel, e.kind, 0, hashed.get(walk.leads_to[e.rel], ""), e.target)
        entries.append(e)
    return tuple(entries)


def _relative(real: Path, folder: Path) -> str:
    """The link target that leads from `folder` (a real folder of the walk) to `real`, as a relative path."""
    return os.path.relpath(real, os.path.realpath(folder))


def _open_inside(root: Path, rel: str) -> int:
    """A file of the folder opened through every component without following a link: a folder swapped for a
    link since the walk cannot lead the read elsewhere."""
    parts = rel.split("/")
    fd = os.open(root, _NO_FOLLOW | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, _NO_FOLLOW | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], _NO_FOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def _changed(root: Path, entry: FileEntry) -> LoopbenchError:
    return LoopbenchError(
        f"{root / entry.rel} changed while the submission was being read: a submission folder must stay as it is "
        "while it is checked or scored"
    )


def _read(root: Path, entry: FileEntry) -> Iterator[bytes]:
    """The bytes of one file entry, in chunks; a LoopbenchError if it is no longer the file that was walked."""
    changed = _changed(root, entry)
    try:
        fd = _open_inside(root, entry.rel)
    except OSError:
        raise changed from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
            raise changed
        left = entry.size
        while left > 0:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise changed
            left -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def copy_files(root: str | Path, entries: tuple[FileEntry, ...], target: Path, skip: tuple[str, ...] = ()) -> None:
    """The entries of `root` into the new folder `target`, each file checked against its hash as it is copied."""
    root = Path(root)
    target.mkdir()
    for e in entries:
        if e.rel in skip:
            continue
        dest = target / e.rel
        if e.kind == "dir":
            dest.mkdir()
        elif e.kind == "link":
            os.symlink(e.target, dest)
        else:
            digest = hashlib.sha256()
            with open(dest, "xb") as out:
                for chunk in _read(root, e):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != e.sha256:
                raise _changed(root, e)


def read_files(root: str | Path, entries: tuple[FileEntry, ...]) -> dict[str, bytes]:
    """The bytes of every file entry, checked against its hash: what travels to another machine."""
    out = {}
    for e in entries:
        if e.kind == "file":
            body = b"".join(_read(Path(root), e))
            if hashlib.sha256(body).hexdigest() != e.sha256:
                raise _changed(Path(root), e)
            out[e.rel] = body
    return out
