"""Atomic file writes: nothing is ever half-written, nothing but the output is touched; and the one check
that a path to read is a regular file.

Every writer of this package goes through :func:`atomic_path` (directly, or via :func:`atomic_write`): the
bytes go to a hidden temp file in the target's own folder (same filesystem, so the rename is atomic), are
fsync'ed, and only then replace the target with ``os.replace``. A failure or a kill leaves the previous file
as it was; a failure also removes the temp file (a kill cannot: the next write to the same path removes it,
as :func:`atomic_folder` removes a killed write's staging folder; a write under way holds a lock on its temp
file or folder and is never removed).
A target that is a symlink to a regular file is written through, as a shell's ``>`` does: the file it points at
is replaced atomically and the link stays (a dangling link is refused: the write would create its target, wherever
that is). Only a regular file is ever replaced: a target that is a folder, device, FIFO or socket is refused
(:func:`check_output_file`, which CLIs also call on their arguments before any work), as is a place that
cannot be written (:class:`OutputPathError`, one line). Every file written gets the mode ``open(path, 'w')``
leaves: a replaced file's own, a new one 0o666 minus the umask (0o644 under the usual umask 022), whatever the
writer inside the block did.

Readers of a single path call :func:`check_regular_file` (or :func:`open_regular_file`) first: opening a FIFO
blocks forever and a device streams without end; :func:`read_capped` reads a whole file within a size cap.
:func:`file_digest` is the one chunked hash of a file's bytes; :func:`file_identity` the one key of "these bytes"
that reads none of them.
"""
import contextlib
import ctypes
import errno
import functools
import glob
import hashlib
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

from .errors import UsageError, check_not_interrupted

try:
    import fcntl
except ImportError:  # not POSIX: no writer locks, stale temp files are removed by name only
    fcntl = None

__all__ = ['atomic_path', 'atomic_write', 'atomic_folder', 'temp_pattern', 'remove_stale_temp_files',
           'file_kind', 'not_regular_reason', 'not_folder_reason', 'check_regular_file', 'open_regular_file',
           'read_capped', 'OutputPathError', 'check_path_given', 'check_output_file', 'check_output_folder',
           'HeldFolder', 'locked_folder', 'file_digest', 'FileIdentity', 'file_identity', 'staging_folder',
           'EARLIER_RUN_ASIDE', 'earlier_run_note', 'cache_write_errno']

#: Where the trainer's ``--overwrite`` keeps the replaced run's files until the new run's first checkpoint: a hidden
#: folder in the run folder, so it is under the run's lock and on its filesystem (putting them back is a rename).
EARLIER_RUN_ASIDE = '.overwritten-run'


def earlier_run_note(folder: str) -> str:
    """For a message about a run folder lacking its files: where they are when an ``--overwrite`` run stopped before
    its first checkpoint (a kill, a full disk) left the earlier run aside, and how it comes back; else ''."""
    aside = os.path.join(folder or '.', EARLIER_RUN_ASIDE)
    if not os.path.isdir(aside) or os.path.islink(aside):
        return ''
    return (f' (an earlier run of this folder is in {aside}: an --overwrite run was stopped before its first '
            f'checkpoint; the next timm-cra-train with this folder as its run folder puts it back)')

_TMP_SUFFIX = '.tmp'
#: Bytes in one file name (ext4, xfs, btrfs, tmpfs: 255), and in the random part of a temp name.
_NAME_MAX, _RANDOM_LEN = 255, 8


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words (``'a FIFO'``, ``'a folder'``, ...), for one-line errors."""
    for test, kind in ((stat.S_ISREG, 'a regular file'), (stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return kind
    return 'a special file'


def not_regular_reason(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``path`` is not a readable regular file (``'is a FIFO, not a file'``), or None when it is one.

    Only ``stat`` is used (symlinks followed): nothing is opened, so asking never blocks.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return 'is a dangling symlink, not a file' if os.path.islink(path) else 'does not exist'
    except OSError as e:  # symlink loop, permission denied on a parent, name too long
        return f'cannot be read ({e.strerror})'
    return None if stat.S_ISREG(mode) else f'is {file_kind(mode)}, not a file'


def not_folder_reason(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``path`` is not a folder (``'is a FIFO, not a folder'``, ``'does not exist'``), or None when it is one;
    :func:`not_regular_reason` for folders (``stat`` only, symlinks followed)."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return 'is a dangling symlink, not a folder' if os.path.islink(path) else 'does not exist'
    except OSError as e:  # symlink loop, permission denied on a parent, a file on the way
        return f'cannot be read ({e.strerror})'
    return None if stat.S_ISDIR(mode) else f'is {file_kind(mode)}, not a folder'


def check_regular_file(path: Union[str, os.PathLike], what: str = 'file') -> None:
    """Raise a one-line :class:`UsageError` unless ``path`` is a regular file (symlinks followed).

    Checked with ``stat`` before anything opens it: opening a FIFO blocks forever and a device streams
    without end, so a reader must never ``open`` what it has not checked. ``what`` names the input
    (``'checkpoint'``, ``'config'``).
    """
    reason = not_regular_reason(path)
    if reason:
        raise UsageError(f'{what} {os.fspath(path)} {reason}; pass the path of a regular file.')


def open_regular_file(path: Union[str, os.PathLike], what: str = 'file') -> IO[bytes]:
    """``open(path, 'rb')`` for a regular file only (:func:`check_regular_file`), never blocking.

    The open itself is non-blocking and the opened file is checked again (``fstat``), so a path swapped for a
    FIFO between the check and the open is refused too, instead of blocking the reader.
    """
    check_regular_file(path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f'{what} {os.fspath(path)} is {file_kind(mode)}, not a file; pass the path of a '
                             f'regular file.')
        os.set_blocking(fd, True)
        f = os.fdopen(fd, 'rb')
        f.raw.name = os.fspath(path)  # not the descriptor number: readers (YAML's marks) name the file by it
        return f
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Union[str, os.PathLike], what: str, max_bytes: int, holds: str, fix: str = '') -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular_file`), at most ``max_bytes``: a larger file is one
    :class:`UsageError` line (``holds``: what no real file of its kind exceeds; ``fix``: what to do), checked on the
    opened file's size before any byte is read, and the read stops past the cap (a file growing meanwhile), so a
    sparse 5 GB file (no bytes on disk) is never read whole: it was a ``MemoryError``."""
    with open_regular_file(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(max_bytes + 1) if size <= max_bytes else b''
    if size > max_bytes or len(raw) > max_bytes:
        raise UsageError(f'{what} {os.fspath(path)} is over {max_bytes // 2**20} MiB, more than {holds} holds: it is '
                         f'not one (or is damaged)' + (f'; {fix}' if fix else ''))
    return raw


def file_digest(path: Union[str, os.PathLike], hasher=None) -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (weights files do not fit in memory twice): sha256, or
    ``hasher``, a hashlib object that may already hold a header (git's blob id: ``sha1(b'blob <size>\\0')``).
    Python 3.10 has no ``hashlib.file_digest``; huggingface_hub's ``sha_fileobj`` takes no seeded hash."""
    h = hashlib.sha256() if hasher is None else hasher
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


class FileIdentity(NamedTuple):
    """What ``stat`` says identifies a file's bytes: device, inode, size, mtime and ctime in ns. ``str`` joins them
    with ``:`` (the form hashed into cache keys and commit hashes)."""
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def __str__(self) -> str:
        return ':'.join(map(str, self))


def file_identity(path: Union[str, os.PathLike, int]) -> FileIdentity:
    """The :class:`FileIdentity` of ``path`` (symlinks followed; an int: an open file descriptor, ``fstat``), read
    without opening it: a key for caches of what a file holds. A file replaced gets another inode; one rewritten in place with its size and mtime restored
    (``cat new > f; touch -d @old f``, ``cp -p``, ``rsync -t``) cannot keep its ctime, which the kernel sets on every
    write, rename, link or ``utime``. So a key without the ctime served stale bytes."""
    st = os.stat(path)
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class OutputPathError(UsageError, OSError):
    """An output path that cannot be written as asked (not a regular file / folder, unwritable place).

    A :class:`UsageError` (CLIs print its one line, exit 2) and an ``OSError`` (what callers of a write
    already handle)."""


def _ancestor_problem(folder: str) -> Optional[str]:
    """Why files cannot be created in ``folder`` (which need not exist yet), judged from its nearest existing
    ancestor; None if nothing is known to stop it. Root-proof: a path under a regular file fails for root too."""
    path = os.path.abspath(folder)
    while True:
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):  # absent, or a file on the way: look further up
            if os.path.islink(path):  # a folder made there goes where the link points (makedirs: 'File exists')
                return f'{path} is a dangling symlink (to {os.readlink(path)}): point it at a folder or remove it'
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
            continue
        except OSError as e:  # ELOOP, EACCES
            return f'{path} cannot be reached ({e.strerror})'
        if not stat.S_ISDIR(mode):
            return f'{path} is {file_kind(mode)}, not a folder'
        if not os.access(path, os.W_OK | os.X_OK):
            return f'{path} is not writable'
        return None


def _output_path_given(path: Union[str, os.PathLike], what: str, inputs: Sequence[Union[str, os.PathLike]]) -> str:
    """``path`` as a string, once given (:func:`check_path_given`), its parts within the file-name limit (a 300-byte
    ``--experiment``, which no write can create: refused before anything is created on the way; a run left its
    empty ``--output`` folder behind) and none of the command's ``inputs`` (:func:`_check_not_an_input`)."""
    check_path_given(path, what)
    path = os.fspath(path)
    for part in os.path.abspath(path).split(os.sep):
        size = len(part.encode('utf-8', 'surrogateescape'))
        if size > _NAME_MAX:
            raise OutputPathError(f"{what} {path} cannot be written: its name '{part[:40]}...' is {size} bytes, over "
                                  f"the {_NAME_MAX}-byte limit of a file or folder name; choose a shorter name.")
    _check_not_an_input(path, what, inputs)
    return path


def _check_not_an_input(path: str, what: str, inputs: Sequence[Union[str, os.PathLike]]) -> None:
    """Refuse an output ``path`` that is one of the command's ``inputs`` (writing it would destroy what is being
    read) or lies inside an input folder (``--data-dir``: a result file would replace one of its images, a run
    folder would become a class of its data)."""
    for source in inputs:
        if not source:
            continue
        source = os.fspath(source)
        try:
            same = os.path.samefile(path, source)
        except OSError:  # either is absent: nothing to destroy
            same = False
        if same and not os.path.isdir(source):
            raise OutputPathError(f'{what} {path} is the input {source}: writing it would destroy that input; '
                                  f'choose another path.')
        folder = os.path.realpath(source).rstrip(os.sep) + os.sep
        # the path itself resolved, and the place its last part is written (a symlink there is replaced)
        written = (os.path.realpath(path), os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                                                        os.path.basename(path)))
        if os.path.isdir(source) and (same or any(p.startswith(folder) for p in written)):
            raise OutputPathError(f'{what} {path} is inside the input folder {source}: writing there would change '
                                  f'the data the command reads; choose a path outside it.')


def check_path_given(path: Union[str, os.PathLike], what: str) -> None:
    """Refuse an empty output path (an unset shell variable: ``--output "$RUN"``) in one line: it was the current
    folder, silently (``train --output ''`` wrote its run there; ``publish --out ''`` said "--out  is the current
    folder"); and ``-``, which reads as stdout but was a file named ``-``."""
    if not os.fspath(path):
        raise OutputPathError(f"{what} is an empty path (an unset shell variable?): give the path to write "
                              f"('.' for the current folder).")
    if os.fspath(path) == '-':  # the shell convention for stdout, which these paths never are
        raise OutputPathError(f"{what} is '-', which would be a file named '-', not standard output: give a path "
                              f"to write ('./-' if that name is meant).")


def check_output_file(path: Union[str, os.PathLike], what: str = 'output file',
                      inputs: Sequence[Union[str, os.PathLike]] = (), new_folders: bool = True) -> None:
    """Raise :class:`OutputPathError` (one line) unless ``path`` can be written as a file: it is absent or a
    regular file (never a folder, device, FIFO or socket: :func:`atomic_path` would replace the node itself),
    it is none of the command's ``inputs`` and not inside an input folder (:func:`_check_not_an_input`), no part
    of it is longer than a file name may be, and its folder exists or can be created there. CLIs call it on their
    arguments, before any work, with ``new_folders=False``: a user's output file goes into a folder that exists (a
    typo'd folder must not spring into existence; ``export -o`` and ``validate --results-file`` alike)."""
    path = _output_path_given(path, what, inputs)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # the folder check below names a file on the way
        if os.path.islink(path):  # a write would create the file it names, wherever that is
            raise OutputPathError(f'{what} {path} is a dangling symlink (to {os.readlink(path)}): point it at a '
                                  f'file or remove it.') from None
        mode = None
    except OSError as e:
        raise OutputPathError(f'{what} {path} cannot be written ({e.strerror}); choose another path.') from None
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputPathError(f'{what} {path} is {file_kind(mode)}, not a file: only a regular file is replaced; '
                              f'give the path of a file to write.')
    folder = os.path.dirname(os.path.abspath(path))
    problem = _ancestor_problem(folder)
    if problem:
        raise OutputPathError(f'{what} {path} cannot be written: {problem}; choose a writable folder.')
    if not new_folders and not os.path.isdir(folder):
        raise OutputPathError(f'{what} {path} cannot be written: its folder {folder} does not exist; create it '
                              f'or fix the path.')


def check_output_folder(path: Union[str, os.PathLike], what: str = 'output folder',
                        inputs: Sequence[Union[str, os.PathLike]] = ()) -> None:
    """Raise :class:`OutputPathError` (one line) unless ``path`` is a folder or can be created as one (an
    existing file, device, FIFO or socket there is never replaced, no part of the path is longer than a folder
    name may be, and it is not one of the command's ``inputs`` nor inside an input folder)."""
    path = _output_path_given(path, what, inputs)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        problem = _ancestor_problem(path)  # the path itself a dangling symlink, or a folder on the way
    except OSError as e:
        problem = f'it cannot be reached ({e.strerror})'
    else:
        problem = None if stat.S_ISDIR(mode) else f'it is {file_kind(mode)}, not a folder'
        if problem is None and not os.access(path, os.W_OK | os.X_OK):
            problem = 'it is not writable'
    if problem:
        raise OutputPathError(f'{what} {path} cannot be written: {problem}; choose a writable folder.')


#: Errors of writing an output's bytes that are the place's, not the writer's: disk full, quota, file-size limit.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NATIVE_OS_ERROR = re.compile(r'\(os error (\d+)\)')  # how native writers (safetensors) report one


#: What writing into a cache (huggingface_hub's, datasets') fails with when its disk is full, over quota or read-only:
#: the data or the repo is not at fault.
_CACHE_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def cache_write_errno(error: BaseException) -> Optional[int]:
    """The errno of the full / read-only disk behind ``error`` (an ``OSError`` of :data:`_CACHE_WRITE_ERRNOS` in its
    chain of causes, which the libraries wrap in their own errors), or None."""
    seen = set()
    cause: Optional[BaseException] = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _CACHE_WRITE_ERRNOS:
            return cause.errno
        cause = cause.__cause__ or cause.__context__
    return None


def _write_failed(path: str, what: str, reason: str, code: Optional[int] = None) -> OutputPathError:
    if code == errno.EBUSY:  # renaming a mount point (or a folder a program holds) over or away: not a full disk
        return OutputPathError(f'cannot write {what} {path}: {reason} (a mount point, or a folder in use, cannot be '
                               f'replaced); write into a new folder inside it.')
    return OutputPathError(f'cannot write {what} {path}: {reason}; choose a writable place with free space.')


def _place_errno(e: BaseException) -> Optional[int]:
    """The errno of ``e`` when it is one of :data:`_WRITE_ERRNOS` (also inside a native writer's message)."""
    if isinstance(e, OSError):
        code = e.errno
    else:
        m = _NATIVE_OS_ERROR.search(str(e))
        code = int(m.group(1)) if m else None
    return code if code in _WRITE_ERRNOS else None


@contextlib.contextmanager
def _place_errors(path: str, what: str) -> Iterator[None]:
    """A writer's errors that are the place's fault (:data:`_WRITE_ERRNOS`: a full disk) as one line like the rest;
    any other error passes unchanged."""
    try:
        yield
    except Exception as e:
        code = None if isinstance(e, OutputPathError) else _place_errno(e)
        if code is None:
            raise
        raise _write_failed(path, what, os.strerror(code)) from e


@contextlib.contextmanager
def _output_errors(path: str, what: str = 'output') -> Iterator[None]:
    """OSErrors of creating, syncing or renaming an output (not of the caller's work) as one-line errors."""
    try:
        yield
    except OutputPathError:
        raise
    except OSError as e:
        raise _write_failed(path, what, e.strerror or str(e), e.errno) from e


def _umask_mode(tmp: str) -> int:
    """The mode a plain ``open`` gives (0o666 minus the umask), read off a file just created with 0o666
    (reading the umask itself means setting it, which races with other threads)."""
    return os.stat(tmp).st_mode & 0o777


def _kept_mode(path: str, tmp: str) -> int:
    """The mode a replaced file keeps (a 0600 file stays 0600, as a shell's ``>`` leaves it); a new file gets
    :func:`_umask_mode`."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return _umask_mode(tmp)


def _open_mode(folder: str) -> int:
    """:func:`_umask_mode` from a probe file created and removed in ``folder``."""
    probe = _create_temp(folder, '.mode-probe.', _TMP_SUFFIX)
    try:
        return _umask_mode(probe)
    finally:
        os.remove(probe)


def _lock_writer(path: str) -> Optional[int]:
    """Hold an exclusive ``flock`` on a temp file / staging folder while its write runs (the descriptor to
    close at the end): :func:`remove_stale_temp_files` leaves locked ones alone, so it removes only what a
    killed or finished writer left, never a write under way (the kernel drops the lock of a dead process)."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _flock_holder(path: str) -> Optional[int]:
    """The pid holding a ``flock`` on ``path`` as Linux's ``/proc/locks`` lists it, or None where unknown."""
    try:
        st = os.stat(path)
        with open('/proc/locks', encoding='ascii') as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    inode = f':{st.st_ino}'
    for fields in (line.split() for line in lines):
        if len(fields) > 5 and fields[1] == 'FLOCK' and fields[5].endswith(inode) and fields[4].isdigit():
            return int(fields[4])
    return None


class HeldFolder:
    """A folder :func:`locked_folder` holds, and where it is now: the lock is on the folder itself (its inode), so
    a folder renamed while held stays held, and writes by its path name would create a new folder at the old
    place (the trainer's run folder, renamed mid-run)."""

    def __init__(self, path: str, fd: Optional[int]):
        self.path, self._fd = path, fd
        self._id = None if fd is None else (os.fstat(fd).st_dev, os.fstat(fd).st_ino)

    def moved_to(self) -> Optional[str]:
        """None while the held folder is still at its path; else its path now (Linux names an open folder in
        ``/proc/self/fd``), or ``''`` when it was removed or its place is unknown."""
        if self._fd is None:
            return None
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._id:
                return None
        try:
            now = os.readlink(f'/proc/self/fd/{self._fd}')
        except OSError:
            return ''
        return '' if now.endswith(' (deleted)') or not os.path.isdir(now) else now


#: Folders this process holds (:func:`locked_folder`, staging folders), by (device, inode): its own writes into them
#: go ahead, while another process's wait for their turn (:func:`_folder_turn`).
_HELD_HERE: Dict[Tuple[int, int], int] = {}
#: Seconds a write that replaces an entry of a folder another process holds waits for it: a results-CSV append ends
#: well within it, while a training holds its run folder for the whole run and is reported instead.
FOLDER_TURN_WAIT_S = 3.0


def _flock_within(fd: int, folder: str, wait: float, busy_hint: str) -> None:
    """Take the ``flock`` on the open ``folder`` within ``wait`` seconds, else :class:`OutputPathError` (one line
    naming the holder's pid and ``busy_hint``)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
        pid = _flock_holder(folder)
        raise OutputPathError(f'another process{f" (pid {pid})" if pid else ""} is writing {folder}: '
                              f'{busy_hint}.') from None


@contextlib.contextmanager
def _held_here(fd: Optional[int]) -> Iterator[None]:
    """Record the folder open as ``fd`` in :data:`_HELD_HERE` while the block runs."""
    key = None if fd is None else (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    if key is not None:
        _HELD_HERE[key] = _HELD_HERE.get(key, 0) + 1
    try:
        yield
    finally:
        if key is not None:
            _HELD_HERE[key] -= 1
            if not _HELD_HERE[key]:
                del _HELD_HERE[key]


@contextlib.contextmanager
def locked_folder(folder: str, wait: Union[bool, float] = True,
                  busy_hint: str = 'wait for it to finish') -> Iterator[HeldFolder]:
    """Hold an exclusive lock on ``folder`` (:func:`_lock_writer`) for a read-modify-write of a file in it, so
    two processes updating the same file (``--results-csv`` appends) take turns instead of losing rows. The lock
    is on the folder, not the file, since :func:`atomic_path` replaces the file's inode; nothing is left behind.
    Yields a :class:`HeldFolder` (whether the folder moved while held). Every other process's write that replaces
    a file of the folder, or the folder itself, waits for its turn (:func:`_folder_turn`).

    ``wait=False``: a folder another process holds is refused at once (:class:`OutputPathError`, one line naming
    the holder's pid and ``busy_hint``), as the trainer does for its run folder; the kernel drops the lock of a
    process that dies, so a killed holder never blocks the next one. ``wait=<seconds>``: wait that long for the
    lock, then refuse the same way: a short write (another CSV append) finishes well within it, while a holder
    that keeps the folder for its whole run (a training) is reported instead of waited on silently."""
    with _output_errors(folder, 'output folder'):
        os.makedirs(folder, exist_ok=True)
        if wait is True or fcntl is None:
            lock = _lock_writer(folder)
        else:
            lock = os.open(folder, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
            try:
                _flock_within(lock, folder, 0.0 if wait is False else float(wait), busy_hint)
            except BaseException:
                os.close(lock)
                raise
    try:
        with _held_here(lock):
            yield HeldFolder(folder, lock)
    finally:
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def _folder_turn(folder: str, busy_hint: str) -> Iterator[None]:
    """Hold ``folder``'s lock (the one :func:`locked_folder` takes) while a write replaces the folder or an entry of
    it, unless this process holds it already: a training's run folder is never replaced, nor its ``last.pth``
    overwritten, by another command while the training runs (it holds the folder for the whole run), and a training
    started meanwhile is refused. Waits :data:`FOLDER_TURN_WAIT_S` for a short holder, then :class:`OutputPathError`
    naming the holder and ``busy_hint``. A folder that cannot be opened (no read permission) has no holder."""
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0))
    try:
        if fd is not None and (os.fstat(fd).st_dev, os.fstat(fd).st_ino) not in _HELD_HERE:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a lock this process took its own way (a server's per-repo flock) is its own
                if _flock_holder(folder) != os.getpid():
                    _flock_within(fd, folder, FOLDER_TURN_WAIT_S, busy_hint)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _writer_alive(path: str) -> bool:
    """Whether a running write holds ``path`` (see :func:`_lock_writer`); never blocks."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
    except OSError:  # a symlink or vanished: nobody's write
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _temp_prefix(name: str, suffix: str = _TMP_SUFFIX) -> str:
    """``.<name>.``, the start of the temp names of a write to ``name``; when ``<prefix><random><suffix>`` would
    pass the file-name limit (a 255-byte output name), ``name`` is cut and a digest of the whole name appended, so
    the prefix stays that target's own."""
    raw = name.encode('utf-8', 'surrogateescape')
    if len(raw) + 2 + _RANDOM_LEN + len(suffix.encode()) <= _NAME_MAX:
        return f'.{name}.'
    digest = hashlib.sha256(raw).hexdigest()[:8]
    keep = _NAME_MAX - _RANDOM_LEN - len(suffix.encode()) - len(digest) - 3  # '.', '~', '.'
    return f".{raw[:keep].decode('utf-8', 'ignore')}~{digest}."


def temp_pattern(path: Optional[str], prefix: Optional[str] = None, suffix: str = _TMP_SUFFIX) -> str:
    """Glob (relative to the folder) of the temp names :func:`atomic_path` / :func:`atomic_folder` use for
    ``path`` (or of ``prefix``'s names): the prefix, exactly :data:`_RANDOM_LEN` hex digits, the suffix. The fixed
    length makes it match only that target's names: ``.m.*.old`` also matched ``.m.v2.<random>.old``, the
    set-aside version of another target ``m.v2``."""
    prefix = _temp_prefix(os.path.basename(path), suffix) if prefix is None else prefix
    return glob.escape(prefix) + '[0-9a-f]' * _RANDOM_LEN + glob.escape(suffix)


def _temp_name(folder: str, prefix: str, suffix: str) -> str:
    """``<folder>/<prefix><random hex>{suffix}``, a name :func:`temp_pattern` matches."""
    return os.path.join(folder, f'{prefix}{secrets.token_hex(_RANDOM_LEN // 2)}{suffix}')


def _create_temp(folder: str, prefix: str, suffix: str, is_folder: bool = False) -> str:
    """A new empty file (``O_EXCL``, mode 0o666 minus the umask, i.e. what ``open(path, 'w')`` gives) or, with
    ``is_folder``, a new folder (mode 0o700, as ``mkdtemp`` gives), named by :func:`_temp_name`."""
    for _ in range(100):
        tmp = _temp_name(folder, prefix, suffix)
        try:
            if is_folder:
                os.mkdir(tmp, 0o700)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f'No free temp name for {prefix}*{suffix} in {folder}')


@contextlib.contextmanager
def atomic_path(path: str, *, prefix: Optional[str] = None, suffix: str = _TMP_SUFFIX,
                perms: Optional[int] = None) -> Iterator[str]:
    """Yield a temp file path next to ``path``; when the block ends without an error, what was written there
    is fsync'ed and renamed onto ``path``. For writers that take a path (``torch.save``, ``savefig``, ...).

    A ``path`` that is a symlink to a regular file is written through (the file it points at is replaced, beside
    which the temp file goes; the link stays). ``prefix`` / ``suffix`` name the temp file (default
    ``.<name>.<random>.tmp``); ``perms`` sets its mode before the rename (default: what
    ``open(path, 'w')`` leaves, see the module's docstring). A ``path`` that exists and is not a regular file,
    or a place that cannot be written, raises :class:`OutputPathError` before the block runs.
    """
    check_not_interrupted()  # a Ctrl-C a library swallowed: no write starts after it
    path = os.fspath(path)
    check_output_file(path)  # the last line of defence: never os.replace a device, FIFO or folder
    if os.path.islink(path):  # write through the link, as a shell's '>' does: the link stays, its file is replaced
        path = os.path.realpath(path)
    folder = os.path.dirname(os.path.abspath(path))
    with _output_errors(path):
        os.makedirs(folder, exist_ok=True)
        if prefix is None:  # our own names: what killed writes of this file left goes first
            remove_stale_temp_files(folder, [temp_pattern(path, suffix=suffix)])
        tmp = _create_temp(folder, _temp_prefix(os.path.basename(path), suffix) if prefix is None else prefix, suffix)
        lock = _lock_writer(tmp)
    mode = perms if perms is not None else _kept_mode(path, tmp)
    try:
        with _place_errors(path, 'output'):  # the caller's writes
            yield tmp
        with _output_errors(path):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.fchmod(fd, mode)  # a writer may have put its own file (e.g. a 0600 temp) in place of tmp
            finally:
                os.close(fd)
            with _folder_turn(folder, f'a training holds its run folder while it runs; wait for it to end, or '
                                      f'write {os.path.basename(path)} elsewhere'):
                check_output_file(path)  # still a regular file or nothing, after however long the block took
                check_not_interrupted()  # interrupted mid-write and the writer swallowed it: its bytes are not trusted
                os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    finally:
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w', *, prefix: Optional[str] = None, suffix: str = _TMP_SUFFIX,
                 perms: Optional[int] = None, **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only once the block has finished (see :func:`atomic_path`).

    Text mode defaults to UTF-8; ``open_kwargs`` (``newline``, ``encoding``) go to ``open``.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_write writes a whole new file: mode 'w' or 'wb', not {mode!r}")
    if mode == 'w':
        open_kwargs.setdefault('encoding', 'utf-8')
    with atomic_path(path, prefix=prefix, suffix=suffix, perms=perms) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f


@contextlib.contextmanager
def staging_folder(parent: str, prefix: str, suffix: str = _TMP_SUFFIX) -> Iterator[str]:
    """A new hidden folder ``<parent>/<prefix><random><suffix>`` (a name :func:`temp_pattern` with ``prefix``
    matches, so a killed run's leftover is found and nothing else is), held by a writer lock while the block runs
    and removed after it."""
    check_not_interrupted()
    with _output_errors(parent, 'output folder'):
        tmp = _create_temp(parent, prefix, suffix, is_folder=True)
        lock = _lock_writer(tmp)
    try:
        with _held_here(lock):  # this process's writes into it go ahead (_folder_turn)
            yield tmp
    finally:
        if lock is not None:
            os.close(lock)
        shutil.rmtree(tmp, ignore_errors=True)


def _carry_over(old: Path, new: Path, keep: Sequence[str]) -> None:
    """Move the entries named ``keep`` from the folder ``old`` into ``new``, where ``new`` has none of that name."""
    for name in keep:
        if os.path.lexists(old / name) and not os.path.lexists(new / name):
            os.rename(old / name, new / name)


def _restore_set_aside(out_dir: Path, keep: Sequence[str] = ()) -> None:
    """A write killed between setting the previous ``out_dir`` aside (``.<name>.<random>.old``) and moving the new one
    in left no ``out_dir``: put the previous version back, unless a live write to it is mid-swap. Killed after the
    new one moved in, before the entries named ``keep`` followed it: move them now."""
    parent = out_dir.parent
    if not parent.is_dir():
        return
    if os.path.lexists(out_dir):
        if keep and out_dir.is_dir() and not out_dir.is_symlink():
            pattern = os.path.join(glob.escape(str(parent)), temp_pattern(out_dir.name, suffix='.old'))
            for set_aside in glob.glob(pattern):
                if not _writer_alive(set_aside):
                    with contextlib.suppress(OSError):
                        _carry_over(Path(set_aside), out_dir, keep)
        return
    if any(_writer_alive(p) for p in glob.glob(os.path.join(glob.escape(str(parent)), temp_pattern(out_dir.name)))):
        return
    set_aside = glob.glob(os.path.join(glob.escape(str(parent)), temp_pattern(out_dir.name, suffix='.old')))
    if set_aside:
        newest = max(set_aside, key=lambda p: os.lstat(p).st_mtime)
        with contextlib.suppress(FileNotFoundError, FileExistsError, OSError):
            os.rename(newest, out_dir)


#: ``renameat2`` flags (Linux 3.15+, glibc 2.28+): fail if the target exists; swap the two entries.
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


@functools.lru_cache(maxsize=1)
def _libc_renameat2():
    """The C library's ``renameat2`` (through the symbols the Python process already has), or None."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return func


def _renameat2(src: str, dst: str, flags: int) -> bool:
    """``renameat2(src, dst, flags)``: True once done, False where the platform or filesystem lacks it (no such
    libc function, ``ENOSYS``, ``EINVAL``); any other failure is its ``OSError``."""
    func = _libc_renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), src, None, dst)


def _rename_noreplace(src: str, dst: str) -> None:
    """Rename the folder ``src`` to ``dst`` only if nothing is at ``dst`` (:class:`FileExistsError` else), atomically
    where ``renameat2`` is there. Elsewhere a check then ``os.rename``, which cannot replace a file, a link or a
    folder holding anything (``ENOTEMPTY``/``EEXIST``/``ENOTDIR``); only an empty folder made in the instant between
    can be replaced, and no one's file is lost with it."""
    try:
        if _renameat2(src, dst, _RENAME_NOREPLACE):
            return
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from e
        raise


def _entry_identity(path: Path) -> Optional[Tuple[int, int]]:
    """(device, inode) of the entry at ``path`` itself (a link, not its target), or None when there is none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def atomic_folder(out_dir: Union[str, Path], overwrite: bool = False, keep: Sequence[str] = (),
                  check: Optional[Callable[[Path], None]] = None) -> Iterator[Path]:
    """Yield a temp folder that replaces ``out_dir`` only if the block finishes without an error.

    The whole-folder counterpart of :func:`atomic_path` (a Hub repo folder appears complete or not at all).
    Its files get the mode :func:`atomic_path` gives (0o644 under umask 022; some writers create 0600 files),
    its folders 0o777 minus the umask. ``out_dir`` may be an existing folder (with ``overwrite``), never an
    existing file, device or FIFO (:class:`OutputPathError`); staging folders that killed writes left next to
    it are removed first. An ``out_dir`` that is a symlink to a folder is replaced by the new folder (the link
    goes; the folder it pointed at is left as it was). ``keep``: names of entries of the replaced folder that move
    into the new one unless it has its own (a git clone's ``.git``).

    What the swap replaces is what was checked: an ``out_dir`` absent at the start is never replaced by the final
    rename (one that appeared meanwhile, someone's folder, is :class:`OutputPathError`, with ``overwrite`` too); one
    present must still be the same entry, pass ``check`` (called on ``out_dir`` then, as the caller did first) and
    not be held by another process (:func:`locked_folder`: a running training's folder), else
    :class:`OutputPathError` and nothing is replaced. Where ``renameat2`` is there, the old and new folders are
    exchanged in one step, so a kill at any moment leaves one of them at ``out_dir``; a kill before the replaced
    folder's ``keep`` entries followed is repaired by the next write to ``out_dir``.
    """
    check_not_interrupted()  # a Ctrl-C a library swallowed: no write starts after it
    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    _restore_set_aside(out_dir, keep)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f'timm_cra: {out_dir} already exists; pass overwrite=True (CLI: --overwrite) '
                              f'to replace it, or choose another output folder.')
    checked = _entry_identity(out_dir)
    busy = 'a training holds its run folder while it runs; wait for it to end, or choose another output folder'
    with _output_errors(str(out_dir), 'output folder'):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # What a killed write to this folder left: its staging folder and the previous version set aside.
        remove_stale_temp_files(str(out_dir.parent), [temp_pattern(out_dir.name),
                                                      temp_pattern(out_dir.name, suffix='.old')])
        # Hidden sibling: same filesystem (rename is atomic), invisible to the Hub server and to timm.
        tmp = Path(_create_temp(str(out_dir.parent), _temp_prefix(out_dir.name), _TMP_SUFFIX, is_folder=True))
        lock = _lock_writer(str(tmp))
    staged = tmp  # where the new folder is until it is at out_dir
    try:
        with _place_errors(str(out_dir), 'output folder'), _held_here(lock):  # the caller's writes into it
            yield tmp
        with _output_errors(str(out_dir), 'output folder'):
            file_mode = _open_mode(str(tmp))
            dir_mode = file_mode | ((file_mode & 0o444) >> 2)  # x wherever r: 0o644 -> 0o755
            for f in [tmp, *tmp.rglob('*')]:
                if not f.is_symlink():
                    f.chmod(dir_mode if f.is_dir() else file_mode)
            with _folder_turn(str(out_dir.parent), busy):
                if checked is None:
                    try:
                        _rename_noreplace(str(tmp), str(out_dir))
                    except FileExistsError:
                        again = ('write again (with overwrite, as now) to replace it' if overwrite else
                                 'pass overwrite=True (CLI: --overwrite) to replace it')
                        raise OutputPathError(
                            f'{out_dir} was created by someone else while this one was written; it is left as it '
                            f'is: choose another output folder, or {again}.') from None
                    staged = None
                else:
                    _swap_checked(tmp, out_dir, checked, keep, check, busy)
                    staged = None
    finally:
        if lock is not None:
            os.close(lock)
        if staged is not None and staged.exists():
            shutil.rmtree(staged)


def _swap_checked(tmp: Path, out_dir: Path, checked: Tuple[int, int], keep: Sequence[str],
                  check: Optional[Callable[[Path], None]], busy: str) -> None:
    """Replace ``out_dir`` (the entry ``checked`` names) by the folder ``tmp`` for :func:`atomic_folder`; on a
    failure before the swap the new folder is back at ``tmp`` (which the caller removes)."""
    real_dir = out_dir.is_dir() and not out_dir.is_symlink()
    with _folder_turn(str(out_dir), busy) if real_dir else contextlib.nullcontext():
        if _entry_identity(out_dir) != checked:
            raise OutputPathError(f'{out_dir} was replaced by someone else while the new one was written; it is left '
                                  f'as it is: look at what is there now, then write again.')
        if check is not None:
            check(out_dir)
        # The staged folder takes a set-aside name first: once exchanged it holds the replaced version, which
        # _restore_set_aside finds (its keep entries) if this process is killed before they moved.
        old = Path(_create_temp(str(out_dir.parent), _temp_prefix(out_dir.name, '.old'), '.old', is_folder=True))
        old.rmdir()
        tmp.rename(old)
        try:
            exchanged = _renameat2(str(old), str(out_dir), _RENAME_EXCHANGE)
        except BaseException:
            old.rename(tmp)
            raise
        if not exchanged:
            old.rename(tmp)  # no exchange here: set the previous one aside, then move the new one in
            out_dir.rename(old)
            tmp.rename(out_dir)
    if old.is_symlink():  # a link to a folder was replaced, not the folder it points at
        old.unlink()
    else:
        _carry_over(old, out_dir, keep)
        shutil.rmtree(old)
    return None


def remove_stale_temp_files(folder: str, patterns: Sequence[str]) -> int:
    """Delete what matches the glob ``patterns`` in ``folder`` (temp files or staging folders of writes that
    were killed), except what a running write of this module holds; returns how many."""
    removed = 0
    for pattern in patterns:
        for path in glob.glob(os.path.join(glob.escape(folder), pattern)):
            if _writer_alive(path):
                continue
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed += 1
    return removed
