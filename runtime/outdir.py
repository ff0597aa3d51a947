"""Output directories and files written atomically, and never over anything fastsam2 did not write.

A run writes into ``.<name>.partial-<host>-<pid>-<n>`` beside ``out`` and renames it to ``out`` when it
completes, so a failed or interrupted run leaves nothing at ``out``. Every completed directory holds a
marker file (:data:`MARKER`); ``--overwrite`` replaces only a directory that has it, and never one
that is or contains the working directory or an input of the run. Partial directories of processes
that no longer run (killed with SIGKILL, a power cut) are removed by the next run at the same path.
Stdlib only.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import UserError

MARKER = ".fastsam2-output"
_HOST = socket.gethostname().replace("-", "_") or "host"
_KINDS = ("partial", "old", "tmp")


class OutputError(UserError, OSError):
    """An output path that cannot or must not be written; the message names the user's path."""


_SERIAL = itertools.count()


def _scratch(out: Path, kind: str) -> Path:
    # host and pid tell a later run whether the owner still runs; the serial keeps two outputs
    # written at once by one process (threads, nested runs) apart
    return out.parent / f".{out.name}.{kind}-{_HOST}-{os.getpid()}-{next(_SERIAL)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove scratch entries beside ``out`` left by dead processes of this host; returns them."""
    removed = []
    prefix = f".{out.name}."
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        kind, _, owner = entry.name[len(prefix):].partition("-")
        host, _, rest = owner.partition("-")
        pid = rest.partition("-")[0]
        if kind not in _KINDS or host != _HOST or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _existing_ancestor(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return Path(path.anchor)


def _paths(items: Iterable[str | Path | None]) -> list[str | Path]:
    """The items of ``protect`` that name files (not None, a camera index or a stream URL)."""
    return [i for i in items if i is not None and not str(i).isdigit() and "://" not in str(i)]


def check_output_dir(out: str | Path, *, overwrite: bool, protect: Iterable[str | Path | None] = ()) -> Path:
    """Refuse ``out`` now (before any heavy work) unless the run may write it; returns it as a Path.

    Refused: an existing path without ``overwrite``; with ``overwrite``, a symbolic link, a file, a
    directory without fastsam2's marker, the working directory or one of its parents, a directory
    holding one of ``protect`` (the run's inputs); and a place where no directory can be created.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputError(f"{out} already exists (pass --overwrite to replace a previous fastsam2 output)")
        if out.is_symlink():
            raise OutputError(f"--overwrite: {out} is a symbolic link; give the directory itself")
        if not out.is_dir():
            raise OutputError(f"--overwrite: {out} is a file, not a fastsam2 output directory")
        real = out.resolve()
        if _is_within(Path.cwd().resolve(), real):
            raise OutputError(f"--overwrite: {out} is the working directory or one of its parents")
        for item in _paths(protect):
            if _is_within(Path(item).resolve(), real):
                raise OutputError(f"--overwrite: {out} holds the input {item}; choose another output directory")
        if not (out / MARKER).is_file():
            raise OutputError(
                f"--overwrite: {out} was not written by fastsam2 (no {MARKER} in it); remove it yourself "
                "or choose another output directory"
            )
    ancestor = _existing_ancestor(out.parent.resolve() if out.parent.exists() else out.parent)
    if not ancestor.is_dir():
        raise OutputError(f"cannot create {out}: {ancestor} is not a directory")
    try:  # the only reliable writability test (root ignores permission bits, not read-only mounts)
        Path(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=ancestor)).rmdir()
    except OSError as e:
        raise OutputError(f"cannot create {out}: {ancestor}: {e.strerror or e}") from None
    return out


def check_resumable_dir(out: str | Path, *, overwrite: bool, protect: Iterable[str | Path | None] = ()) -> Path:
    """For runs that commit one item at a time (``eval --run``, ``label``): ``out`` may be absent,
    empty, or a previous fastsam2 output that this run resumes; with ``overwrite`` the checks of
    :func:`check_output_dir` apply and :func:`open_resumable_dir` replaces it."""
    out = Path(out)
    if not overwrite and out.is_dir() and not out.is_symlink():
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise OutputError(
                f"{out} exists and was not written by fastsam2 (no {MARKER} in it); choose another output directory"
            )
        return out
    return check_output_dir(out, overwrite=overwrite, protect=protect)


def open_resumable_dir(out: Path, *, kind: str, overwrite: bool) -> Path:
    """Create ``out`` with the marker; a previous output is resumed, or removed first with ``overwrite``."""
    try:
        if overwrite and (out.exists() or out.is_symlink()):
            remove_output_dir(out)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MARKER).is_file():
            _write_marker(out, kind)
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"cannot create {out}: {e.strerror or e}") from None
    return out


def _holds_results(folder: Path) -> bool:
    """Whether ``folder`` holds anything but empty folders and hidden scratch entries."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return True
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() or not entry.is_dir() or _holds_results(entry):
            return True
    return False


def discard_if_unused(out: Path) -> None:
    """After a failed or interrupted run: remove ``out`` if nothing was committed to it (only the
    marker, empty folders such as a ``keep_1/`` made for results that never came, hidden scratch)."""
    if (out / MARKER).is_file() and not _holds_results(out):
        shutil.rmtree(out, ignore_errors=True)


def _write_marker(directory: Path, kind: str) -> None:
    from .manifest import fastsam2_version

    (directory / MARKER).write_text(json.dumps({"kind": kind, "fastsam2_version": fastsam2_version()}) + "\n")


def _rename_messages(e: BaseException, tmp: Path, out: Path) -> str:
    return str(e).replace(str(tmp), str(out))


@contextmanager
def atomic_output_dir(
    out: str | Path, *, overwrite: bool, kind: str, protect: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Yield an empty scratch directory that becomes ``out`` (with the marker) if the block completes.

    The checks of :func:`check_output_dir` run first. An OSError inside the block (disk full, a file
    that cannot be written) becomes an :class:`OutputError` naming ``out``, not the scratch path.
    """
    out = check_output_dir(out, overwrite=overwrite, protect=protect)
    created = [d for d in out.parents if not d.exists()]  # folders this run makes, innermost first
    tmp = _scratch(out, "partial")
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        _undo(tmp, created)
        raise OutputError(f"cannot create {out}: {e.strerror or e}") from None
    try:
        yield tmp
        _write_marker(tmp, kind)
        publish(tmp, out, overwrite=overwrite)
    except OutputError as e:
        _undo(tmp, created)
        raise OutputError(_rename_messages(e, tmp, out)) from None
    except OSError as e:
        _undo(tmp, created)
        raise OutputError(f"cannot write {out}: {_rename_messages(e, tmp, out)}") from None
    except BaseException:
        _undo(tmp, created)
        raise


def _undo(tmp: Path, created: list[Path]) -> None:
    """Remove the scratch directory and the (empty) parent folders a failed run created."""
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2():
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it (glibc < 2.28)
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_RENAMEAT2 = _renameat2()


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` only if nothing is at ``dst``: FileExistsError otherwise, and never a
    window in which something created at ``dst`` by another process could be replaced.

    Linux ``renameat2(RENAME_NOREPLACE)`` where the kernel and file system have it; elsewhere ``dst``
    is first claimed with ``mkdir`` (atomic, fails if anything is there) and ``src`` renamed over that
    empty directory, which a rename replaces only while it is still empty."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    os.mkdir(dst)  # FileExistsError when something is there
    try:
        os.rename(src, dst)
    except BaseException:
        try:
            os.rmdir(dst)
        except OSError:
            pass
        raise


def remove_output_dir(out: Path) -> None:
    """Remove the fastsam2 output directory ``out``: moved aside first and checked there (marker, a
    real directory), so a folder that replaced it since it was written is put back, never deleted."""
    old = _scratch(out, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out, old)
    if old.is_symlink() or not old.is_dir() or not (old / MARKER).is_file():
        try:
            rename_no_replace(old, out)
        except OSError:
            raise OutputError(f"{out} changed during the run and is not a fastsam2 output; it was left at "
                              f"{old}") from None
        raise OutputError(f"{out} changed during the run and is not a fastsam2 output; nothing was replaced")
    shutil.rmtree(old, ignore_errors=True)


def publish(tmp: Path, out: Path, *, overwrite: bool = False) -> None:
    """Rename the finished ``tmp`` to ``out``. Without ``overwrite`` nothing may be at ``out``; with
    it, only a fastsam2 output (checked after it was moved aside). Whatever appeared at ``out`` after
    the run's first checks (another run, another program) is never replaced: an :class:`OutputError`."""
    if overwrite and (out.exists() or out.is_symlink()):
        remove_output_dir(out)
    try:
        rename_no_replace(tmp, out)
    except FileExistsError:
        raise OutputError(
            f"{out} appeared while this run was writing (another run or program created it); it was left "
            "as it is and this run's output was discarded"
        ) from None


def check_output_file(path: str | Path, *, create_parent: bool = False,
                      protect: Iterable[str | Path | None] = ()) -> Path:
    """Refuse a file path that cannot be written (a directory, a missing or read-only folder), now.

    ``protect``: the run's inputs; the file may not be one of them nor lie inside an input folder
    (outputs never overwrite inputs). ``create_parent``: make missing parent folders (refused where a
    file stands in the way)."""
    path = Path(path)
    real = path.resolve()
    for item in _paths(protect):
        src = Path(item).resolve()
        if real == src or (src.is_dir() and _is_within(real, src)):
            raise OutputError(f"{path} is {'the' if real == src else 'inside the'} input {item}; "
                              "write the output elsewhere")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name")
    if create_parent and not path.parent.exists():
        ancestor = _existing_ancestor(path.parent)
        if not ancestor.is_dir():
            raise OutputError(f"cannot write {path}: {ancestor} is not a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: {path.parent} is not a directory")
    try:
        Path(tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=path.parent)).rmdir()
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to the file ``path`` through a scratch file (fsynced) and a rename, so a crash
    never leaves a truncated file that a later run would trust (engines, caches, reports).
    Missing parent folders are made."""
    path = check_output_file(path, create_parent=True)
    remove_stale(path)
    tmp = _scratch(path, "tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_bytes_atomic` for text (UTF-8)."""
    return write_bytes_atomic(path, text.encode())
