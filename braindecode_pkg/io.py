"""The one place that writes outputs: atomic files, checksums of inputs.

Every output is written to a temporary name in the destination folder and renamed only when
complete, so an interrupted or failed run never leaves a file a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

_HASH_BLOCK = 64 << 20  # large blocks: the hashing thread then rarely waits for the GIL
_HOST = socket.gethostname().replace("/", "_").replace("-", "_") or "host"


def tmp_name(path: Path) -> Path:
    """The temporary sibling ``.NAME.tmp-HOST-PID`` a writer of ``path`` fills before renaming."""
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(path: Path) -> list[Path]:
    """Remove temporaries of ``path`` left by killed writers on this host (their PID is gone).

    A temporary is never read (only renamed by its own writer), so a leftover is only clutter —
    but on a full disk it is clutter that matters. Writers on other hosts of a shared file system
    are left alone: their PIDs cannot be checked from here.
    """
    import shutil

    removed = []
    prefix = f".{path.name}.tmp-{_HOST}-"
    with contextlib.suppress(OSError):
        for p in path.parent.iterdir():
            pid = p.name[len(prefix):]
            if p.name.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                removed.append(p)
    return removed


_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process at the named point when ``$BRAINDECODE_FAULT`` is
    ``NAME`` (first time reached) or ``NAME:N`` (the N-th time). A no-op otherwise."""
    fault = os.environ.get("BRAINDECODE_FAULT")
    if not fault:
        return
    want, _, nth = fault.partition(":")
    if want != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] == (int(nth) if nth else 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A failed block (an exception, e.g. a full disk) removes the temporary; a killed process
    leaves it, and the next writer of ``path`` on this host removes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    tmp = tmp_name(path)
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
    return remembered_by_stat(path, cache_dir, "sha256", sha256_file)


def weights_record(files: dict) -> dict:
    """``{name: {"path", "sha256"}}`` of weight files (digests remembered by file stat, so a
    multi-GB checkpoint is hashed once per machine): what a stage records of the models it ran."""
    cache = default_hash_cache()
    return {name: {"path": str(f), "sha256": cached_sha256(f, cache)} for name, f in files.items()}


def remembered_by_stat(path: str | os.PathLike, cache_dir: Path | None, kind: str, compute) -> str:
    """``compute(path)`` (a string), remembered under ``cache_dir`` keyed by the file's stat.

    ``kind`` names what is remembered (one entry per file and kind). An entry is reused while
    the file's device, inode, size and mtime are unchanged and the entry's own checksum holds;
    ``compute`` raising leaves nothing remembered. Processes asking at the same time (the
    data-parallel processes of one training job) compute it once: the others wait on a lock.
    """
    path = Path(path).resolve()
    if cache_dir is None:
        return compute(path)
    name = hashlib.sha1(str(path).encode()).hexdigest() + ("" if kind == "sha256" else f".{kind}")
    entry = Path(cache_dir) / (name + ".json")
    with lock_beside(entry):
        return _remembered(path, entry, compute)


@contextlib.contextmanager
def lock_beside(entry: Path):
    """Hold an exclusive lock on ``ENTRY.lock`` (none where it cannot be created: read-only)."""
    import fcntl

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fh = open(entry.with_name(entry.name + ".lock"), "a")
    except OSError:  # a read-only cache: no lock, each process computes
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _remembered(path: Path, entry: Path, compute) -> str:
    st = path.stat()
    key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    try:
        rec = json.loads(entry.read_text())
        if rec.get("path") == str(path) and rec.get("stat") == key:
            if rec.get("check") == _entry_check(str(path), key, rec.get("sha256")):
                return rec["sha256"]
            # an entry altered on disk (or truncated by another tool): not trusted, rebuilt below
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    value = compute(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        with atomic_path(entry) as tmp:
            tmp.write_text(json.dumps({"path": str(path), "stat": key, "sha256": value,
                                       "check": _entry_check(str(path), key, value)}))
    return value


def write_digest_sidecar(path) -> None:
    """Write ``PATH.sha256`` (``sha256sum`` format) for a cache file just written, atomically."""
    path = Path(path)
    with atomic_path(path.with_name(path.name + ".sha256")) as tmp:
        tmp.write_text(f"{sha256_file(path)}  {path.name}\n")


def sidecar_intact(path) -> bool:
    """Whether cache file ``path`` matches its ``PATH.sha256`` (False if either is missing: rebuild)."""
    path = Path(path)
    side = path.with_name(path.name + ".sha256")
    try:
        want = side.read_text().split()[0]
        return path.is_file() and sha256_file(path) == want
    except (OSError, IndexError):
        return False


def _entry_check(path: str, key: list, digest) -> str:
    """Checksum of a hash-cache entry: an entry edited or damaged on disk is recomputed."""
    return hashlib.sha256(json.dumps([path, key, digest]).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ content checksums of HDF5
CONTENT_ATTR = "content_sha256"
CONTENT_NAMES_ATTR = "content_sha256_datasets"
_DIGEST_BLOCK = 32 << 20


class ContentDigest:
    """SHA-256 over named arrays, each fed in C order in one or more blocks of rows (the digest
    does not depend on the block sizes): what an HDF5 output records of its datasets."""

    def __init__(self):
        self._h = hashlib.sha256()

    def start(self, name: str, dtype, shape) -> None:
        import numpy as np

        self._h.update(json.dumps([name, np.dtype(dtype).str, [int(n) for n in shape]]).encode())

    def update(self, block) -> None:
        import numpy as np

        self._h.update(np.ascontiguousarray(block).view(np.uint8).reshape(-1).data)

    def add(self, name: str, arr) -> None:
        self.start(name, arr.dtype, arr.shape)
        self.update(arr)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def h5_content_digest(f, names) -> str:
    """The :class:`ContentDigest` of datasets ``names`` of an open h5py file, read in ~32 MB blocks."""
    import numpy as np

    d = ContentDigest()
    for name in names:
        ds = f[name]
        d.start(name, ds.dtype, ds.shape)
        if ds.ndim == 0 or ds.shape[0] == 0:
            d.update(np.asarray(ds[()]))
            continue
        row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
        step = max(1, _DIGEST_BLOCK // row)
        for a in range(0, ds.shape[0], step):
            d.update(ds[a:a + step])
    return d.hexdigest()


def write_content_digest(f, digest: ContentDigest, names) -> None:
    """Record ``digest`` (fed with datasets ``names``, in that order) in the file's attributes."""
    f.attrs[CONTENT_ATTR] = digest.hexdigest()
    f.attrs[CONTENT_NAMES_ATTR] = json.dumps(list(names))


def verify_content(path, f=None) -> bool:
    """Check an HDF5 output against the content checksum it was written with.

    Returns False for a file written without one (older outputs: not verifiable); raises
    :class:`~braindecode_pkg.errors.InputError` naming the file if its datasets changed on disk
    since. Costs one read of the datasets (about 0.5 s per GB from the page cache).
    """
    from .errors import InputError

    if f is None:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return verify_content(path, f)
        except OSError as e:
            raise InputError(f"{path}: cannot open HDF5 ({e}); truncated or corrupt? delete it and rerun "
                             "the stage that writes it") from None
    want = f.attrs.get(CONTENT_ATTR)
    if want is None:
        return False
    names = json.loads(f.attrs[CONTENT_NAMES_ATTR])
    missing = [n for n in names if n not in f]
    have = None if missing else h5_content_digest(f, names)
    if have != (want.decode() if isinstance(want, bytes) else str(want)):
        raise InputError(
            f"{path}: contents do not match the checksum recorded when it was written "
            f"({'missing ' + ', '.join(missing) if missing else 'altered or corrupt on disk since'}); "
            f"delete it and rerun the stage that writes it (snakemake rebuilds it)")
    return True


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
    remove_stale_tmp(path)
    tmp = tmp_name(path)
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
