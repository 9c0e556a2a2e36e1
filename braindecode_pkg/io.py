"""The one place that writes outputs: atomic files, checksums of inputs.

Every output is written to a temporary name in the destination folder and renamed only when
complete, so an interrupted or failed run never leaves a file a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Iterator

_HASH_BLOCK = 64 << 20  # large blocks: the hashing thread then rarely waits for the GIL


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (hashlib releases the GIL while it hashes a block)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_HASH_BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def default_hash_cache() -> Path | None:
    """``$BRAINDECODE_HASH_CACHE`` (``none`` disables), else ``$XDG_CACHE_HOME/braindecode_pkg/sha256``."""
    env = os.environ.get("BRAINDECODE_HASH_CACHE")
    if env is not None:
        return None if env.lower() in ("", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "braindecode_pkg" / "sha256"


def cached_sha256(path: str | os.PathLike, cache_dir: Path | None) -> str:
    """SHA-256 of ``path``, remembered under ``cache_dir`` keyed by its stat (like git's index).

    A 1 GB NSD beta file takes longer to hash than to read its ROI voxels; NSD inputs never
    change, so the digest is reused while the file's device, inode, size and mtime are the same.
    """
    path = Path(path).resolve()
    if cache_dir is None:
        return sha256_file(path)
    st = path.stat()
    key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    entry = Path(cache_dir) / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")
    try:
        rec = json.loads(entry.read_text())
        if rec.get("path") == str(path) and rec.get("stat") == key:
            return rec["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        with atomic_path(entry) as tmp:
            tmp.write_text(json.dumps({"path": str(path), "stat": key, "sha256": digest}))
    return digest


class BackgroundHashes:
    """SHA-256 of several files computed in a background thread while the caller works."""

    def __init__(self, paths: dict[str, str | os.PathLike], cache_dir: Path | None = None):
        """``paths`` maps a key (e.g. the path relative to the dataset root) to a file."""
        self._paths = dict(paths)
        self._cache = cache_dir
        self._result: dict[str, str] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for key, p in self._paths.items():
                self._result[key] = cached_sha256(p, self._cache)
        except BaseException as e:  # re-raised in result()
            self._error = e

    def result(self) -> dict[str, str]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._result)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: fill the yielded temporary folder; on success it
    replaces ``path`` (an old folder there is removed first), on failure it is removed."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
