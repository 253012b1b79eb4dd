"""Collections of files anywhere fsspec reaches (local folders, s3://, gs://, memory://): a job's
inputs listed as a stream, each with its output in a folder that mirrors the input tree; outputs that
appear only complete; and the receipts that let a rerun skip what is done.

An input is a folder (every file under it that is not hidden), a glob (`photos/**/*.jpg`), a list
file (a name ending in `.txt`: one path or URL a line, relative ones from the list's folder), or one
file. The job's own files live in `DEST/.aecodec-job/`: `receipts/` (one JSON per output, naming the
input's size and modification stamp, the options and the output's sha256) and `parts/` (outputs being
written, on filesystems that rename; emptied at the end of each run).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from dataclasses import dataclass
from typing import Iterator

JOB_DIR = ".aecodec-job"
# Object stores (and the in-process memory filesystem) write an object in one put: it appears whole
# or not at all. Elsewhere an output is written under parts/ and then moved.
_ONE_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}
# The fields of fsspec's info() that change when a file's content does, on the filesystems that have them
# ("created" only where there is no mtime: on a local disk it is the ctime, which chmod and rsync -a move).
_STAMPS = ("size", "mtime", "LastModified", "ETag", "etag", "generation", "md5Hash")


@dataclass(frozen=True)
class Item:
    """One input: its URL, and its output's path relative to the output folder (suffix not yet changed)."""

    src: str
    relative: str


def filesystem(url: str):
    """(the fsspec filesystem, the path on it) of a URL or a local path."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def _url(fs, path: str) -> str:
    """A URL that names `path` to every worker; on the local filesystem, the plain absolute path."""
    return path if "file" in _protocols(fs) else fs.unstrip_protocol(path)


def _visible(relative: str) -> bool:
    return not any(part.startswith(".") for part in relative.split("/"))


def _magic_root(path: str) -> str:
    """The folder of a glob pattern before its first wildcard."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return "/".join(parts[:i]) or "/"
    return posixpath.dirname(path) or "/"


def inputs(spec: str) -> Iterator[Item]:
    """The files that `spec` names, as they are listed (a folder walk is listed a folder at a time)."""
    for item in _listed(spec):
        if item.relative.startswith("../") or item.relative == "..":
            raise ValueError(f"{item.src} is outside {spec}")
        yield item


def _listed(spec: str) -> Iterator[Item]:
    fs, path = filesystem(spec)
    path = path.rstrip("/") or "/"
    if any(c in path for c in "*?["):
        root = _magic_root(path)
        for found in fs.glob(path):
            relative = posixpath.relpath(found, root)
            if _visible(relative) and fs.isfile(found):
                yield Item(_url(fs, found), relative)
    elif fs.isdir(path):
        for folder, dirs, files in fs.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # a walk in order, hidden folders pruned
            for name in sorted(files):
                relative = posixpath.relpath(posixpath.join(folder, name), path)
                if _visible(relative):
                    yield Item(_url(fs, posixpath.join(folder, name)), relative)
    elif path.endswith(".txt"):
        base = posixpath.dirname(path)
        with fs.open(path, "rt") as lines:
            for line in lines:
                if not line.strip():
                    continue
                entry_fs, entry = filesystem(line.strip()) if "://" in line else (fs, posixpath.join(base, line.strip()))
                entry = posixpath.normpath(entry)
                inside = entry_fs is fs and entry.startswith(base.rstrip("/") + "/")
                yield Item(_url(entry_fs, entry), posixpath.relpath(entry, base) if inside else posixpath.basename(entry))
    elif fs.isfile(path):
        yield Item(_url(fs, path), posixpath.basename(path))
    else:
        raise FileNotFoundError(f"{spec}: no such file, folder or matching files")


class Names:
    """Output paths listed so far, 8 bytes each (a 64-bit hash, in a sorted array merged now and then), so
    that two inputs with one output are caught as they are listed, in memory ten million names can afford."""

    MERGE = 1 << 16

    def __init__(self):
        import numpy as np

        self._np, self._sorted, self._recent = np, np.empty(0, np.uint64), set()

    def add(self, name: str) -> bool:
        """False if `name` was added before."""
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        at = int(self._np.searchsorted(self._sorted, self._np.uint64(key)))
        if key in self._recent or (at < len(self._sorted) and int(self._sorted[at]) == key):
            return False
        self._recent.add(key)
        if len(self._recent) >= self.MERGE:
            recent = self._np.fromiter(self._recent, self._np.uint64, len(self._recent))
            self._sorted, self._recent = self._np.union1d(self._sorted, recent), set()
        return True


def root(spec: str) -> str:
    """The URL of what a job's workers must see of `spec`: the folder a glob starts from, else `spec` itself."""
    fs, path = filesystem(spec)
    return _url(fs, _magic_root(path) if any(c in path for c in "*?[") else path.rstrip("/") or "/")


def with_suffix(relative: str, suffix: str) -> str:
    stem, dot, _ = relative.rpartition(".")
    return (stem if dot and "/" not in relative[len(stem):] else relative) + suffix


def stamp(info: dict) -> dict:
    """What identifies a version of a file: its size and its filesystem's modification stamps."""
    found = {k: str(info[k]) for k in _STAMPS if k in info}
    if found.keys() <= {"size"} and "created" in info:  # memory://: a rewrite makes a new file
        found["created"] = str(info["created"])
    return found


def digest(options: dict) -> str:
    """The hash of a job's options, as recorded in its receipts."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


class Output:
    """An output folder: where each output goes, its receipt, and writes that appear only complete."""

    def __init__(self, url: str):
        self.fs, self.root = filesystem(url)
        self.root = self.root.rstrip("/")
        self.url = url
        self.parts = posixpath.join(self.root, JOB_DIR, "parts")

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def receipt_path(self, relative: str) -> str:
        return posixpath.join(self.root, JOB_DIR, "receipts", relative + ".json")

    def receipt(self, relative: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.receipt_path(relative)))
        except (FileNotFoundError, ValueError):
            return None

    def verifies(self, receipt: dict | None, relative: str, source: dict, options: str) -> bool:
        """Whether the output is done: its receipt names the same input stamp and options, and its bytes
        have the receipt's size and sha256."""
        if receipt is None or receipt.get("source") != source or receipt.get("options") != options:
            return False
        try:
            data = self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            return False
        return len(data) == receipt.get("size") and hashlib.sha256(data).hexdigest() == receipt.get("sha256")

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def put(self, path: str, data: bytes) -> None:
        """`data` at `path`, appearing only complete."""
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        if set(_protocols(self.fs)) & _ONE_PUT:
            self.fs.pipe_file(path, data)
            return
        self.fs.makedirs(self.parts, exist_ok=True)
        part = posixpath.join(self.parts, uuid.uuid4().hex)
        try:
            self.fs.pipe_file(part, data)
            self.fs.mv(part, path)
        finally:
            if self.fs.exists(part):
                self.fs.rm_file(part)

    def record(self, relative: str, data: bytes, receipt: dict) -> None:
        """The receipt of `data`, then `data` as the output: a receipt without its output (a worker lost
        between the two) makes a rerun redo the file, and an output is never without its receipt."""
        self.put(self.receipt_path(relative), json.dumps(
            {**receipt, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}).encode())
        self.put(self.path(relative), data)

    def clean(self) -> None:
        """Remove what writers lost mid-file left under parts/."""
        if self.fs.exists(self.parts):
            self.fs.rm(self.parts, recursive=True)


def _protocols(fs) -> tuple:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
