"""A read-only Hugging Face Hub-compatible HTTP server for local model folders (a loopback mirror).

Serves ``<root>/<org>/<repo>/<files>`` the way the Hub serves model repos to ``huggingface_hub``'s download
client (``hf_hub_download``, which timm uses for ``pretrained=True`` and ``hf-hub:`` names):

* ``HEAD|GET /{org}/{repo}/resolve/{commit}/{filename}`` with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length`` (a GET with one byte range gets a ``206``, as the client resumes downloads with them; a
  ``Range`` it cannot use is ignored, RFC 9110: ``416`` only for a valid range past the end). A branch
  (``resolve/main/{filename}``) is answered with a ``307`` whose relative ``Location`` is that commit's URL, as
  the Hub redirects to an immutable URL: huggingface_hub follows it on its HEAD and GETs the commit's URL, so a
  file or commit changing between its HEAD and GET is an error, never one version's sha256 on another's bytes
  (``curl -L``, ``urllib`` and ``requests.get`` follow it; ``curl`` without ``-L`` and ``requests.head`` show the
  307). A missing file is a ``404`` at once, not a redirect. Each answer is read from one open file: its sha256
  and bytes are of one version (a file replaced meanwhile is served whole from the version opened; one rewritten
  in place while streamed cuts the body, closing the connection, so the client sees a short body);
* ``GET /api/models/{org}/{repo}`` and ``/api/models/{org}/{repo}/revision/{revision}``: repo id, commit
  sha and file list (what ``HfApi.model_info`` reads);
* ``GET /api/models/{org}/{repo}/tree/{revision}[/{path}]``: files and folders (what ``HfApi.list_repo_files`` /
  ``list_repo_tree`` and ``upload_folder(delete_patterns=...)`` read; one page, no ``expand`` details). Each
  entry's ``oid`` is derived from stat data, not hashed from the bytes: a listing reads no file; only a download
  hashes its one file (the sha256 ``ETag``, kept per file identity);
* ``GET /{org}``: the ids of the org's repos served, one per line (plain text; the Hub's org page, which the load
  errors link to, is HTML);
* errors as the Hub reports them, so the client raises its typed errors: ``404`` with
  ``X-Error-Code: RepoNotFound`` / ``EntryNotFound`` / ``RevisionNotFound``.

Two repo layouts are served. A plain folder (what ``hub/`` holds) has one commit, whose hash is derived from
its file names and their stat data (never their contents: no file is read for it); ``main`` and that hash are the
two revisions it answers to, so a pinned revision (``hf-hub:org/repo@<hash>``) works and changes whenever a file
is replaced or edited; a file of that commit is served only while it is the file that hash was made from (else a
``404 RevisionNotFound``: ask ``main`` again). A repo written by this server keeps each
commit in ``<repo>/.hub-revisions/<commit>/`` (never changed once written) and its history in ``<repo>/.hub-head``
(one commit per line, ``main`` last): ``main`` and every commit of the history are served. Repo ids resolve
case-insensitively, as on the Hub (``ORG/Name`` finds ``org/name``); two folders of one id (``evil/dup`` and
``evil/Dup``) are refused under every spelling (409 naming both); only ASCII letters fold, as Hub ids are ASCII
(``uni/STRASSE`` does not reach ``uni/straße``). Used by the test suite, CI and as a local
mirror::

    timm-cra-hub-mirror --root hub --port 8808       # or: python -m timm_cra.hub.server
    HF_ENDPOINT=http://127.0.0.1:8808 python -c "import timm, timm_cra; timm.create_model('hf-hub:org/repo', pretrained=True)"

Containment: every repo id and file name is checked part by part (no empty, ``.``/``..``, hidden but
``.gitattributes``, ``/``, ``\\`` or NUL parts, none over 255 bytes) and the resolved path must stay inside its
repo folder, and that inside its root. A symlink is served only if its target stays inside the same repo
folder and passes no hidden part there (``leak.txt -> .git/config``); any other is invisible (404, unlisted). The
same rule holds for the repo folder in its root: a repo or org folder linked into a hidden folder
(``acme/leak -> ../other/repo/.git``, ``acme/lfs -> ../.hub-lfs``) is no repo (404). Links to folders inside a
repo are not followed, by the listing or by downloads (``dirlink/f.txt`` with ``dirlink -> sub``: 404): what is
served is what is listed. Each request walks the repo folder once (one ``stat`` a file, for the commit id; only
links are resolved), and requests arriving while a walk of that folder runs share the next one; a folder of over
:data:`MAX_REPO_ENTRIES` files and folders is refused (507). The server's own entries (``.hub-head``,
``.hub-revisions`` and each revision in it) must be real files / folders: a symlink there is never followed (500
naming the entry).
Every connection times out after ``request_timeout`` seconds without progress, and is closed when a request's line
and headers are not all read within ``request_timeout`` seconds, or when a file shrinks while served (its body is
short); a GET body is read and dropped, and two ``Content-Length`` headers are a 400.

Read-only: uploads are answered 403. The tests' writable server (``tests/hubserver/write_server.py``: repo
creation, commits, LFS uploads, for ``publish --push`` against a loopback Hub) extends this one and is not
installed. Only the standard library is imported here, so the mirror starts without torch or timm.
"""
import argparse
import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import re
import socket
import stat
import sys
import threading
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..utils.errors import printable
from ..utils.io import FileIdentity, file_identity
from ..utils.cli import CommandParser

__all__ = ['HubFolderServer', 'byte_range', 'check_args', 'create_parser', 'main', 'repo_commit_hash', 'safe_parts',
           'served_revision', 'serve', 'start']

DEFAULT_BRANCH = 'main'
#: One byte range (``bytes=5-``, ``bytes=0-99``, ``bytes=-100``: what huggingface_hub sends to resume); the unit is
#: case-insensitive, digits ASCII only (``int`` would read other scripts' digits).
_RANGE_RE = re.compile(r'bytes=([0-9]*)-([0-9]*)', re.IGNORECASE)
_UNSATISFIABLE = 'unsatisfiable'
_COMMIT_RE = re.compile(r'^[0-9a-f]{40}$')
_CHUNK = 1 << 20
_MAX_PART_BYTES = 255  # NAME_MAX: a longer part makes the OS raise instead of answering "no such file"
_HEAD = '.hub-head'  # in a repo written by this server: its commits, one per line, main last
_REVISIONS = '.hub-revisions'  # <repo>/.hub-revisions/<commit>/: the files of each commit of the history
_KEPT_HIDDEN = frozenset({'.gitattributes'})  # the one hidden name a repo holds (the Hub stores it)


class _HubError(Exception):
    """An error answer: HTTP status, optional ``X-Error-Code``, one-line message; ``fields``: more keys of the
    JSON body, as the Hub sends them (the existing repo's ``url`` with a 409 on create)."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, commit: Optional[str] = None,
                 fields: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.fields = fields or {}


def safe_parts(name: str, what: str = 'path') -> List[str]:
    """Split a repo-relative POSIX path into parts, refusing anything that could leave its folder.

    Refused: non-strings, empty, absolute, ``.``/``..``, hidden (``.``-prefixed) parts (but a file named
    ``.gitattributes``, which Hub repos hold), backslashes, NUL and parts over 255 bytes.
    """
    if not isinstance(name, str) or not name or '\\' in name or '\0' in name or name.startswith('/'):
        raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid {what} {name!r}.')
    parts = name.split('/')
    if any(p in ('', '.', '..') or _hidden(p, last=i == len(parts) - 1)
           or len(p.encode('utf-8', 'surrogatepass')) > _MAX_PART_BYTES for i, p in enumerate(parts)):
        raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid {what} {name[:300]!r}.')
    return parts


def _hidden(part: str, last: bool) -> bool:
    """Whether a path part is hidden from repos: ``.``-prefixed, except a file (last part) in :data:`_KEPT_HIDDEN`."""
    return part.startswith('.') and not (last and part in _KEPT_HIDDEN)


def _store_entry(parent: Path, name: str, folder: bool) -> Optional[Path]:
    """``parent/name``, one of the server's own store entries, if it is a real folder (``folder``) or regular
    file; ``None`` if absent. Anything else (a symlink above all: it could lead out of the root) is refused,
    never followed."""
    path = parent / name
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode):
        return path
    what = 'a symlink' if stat.S_ISLNK(mode) else 'not a folder' if folder else 'not a regular file'
    raise _HubError(HTTPStatus.INTERNAL_SERVER_ERROR,
                    f'{path} is {what}; this server only uses a real {"folder" if folder else "file"} there: '
                    f'replace it with one (or remove it).')


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``folder`` or below it."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # symlink loops
        return False


def _served_path(path: Path, real_folder: Path, folder: bool = False) -> Optional[Path]:
    """``path`` resolved (symlinks followed), if it is served from the folder whose resolved form is
    ``real_folder``: it stays inside it and passes no hidden part on the way (the rule a requested name gets, so
    ``leak.txt -> .git/config`` and ``gitdir -> .git`` never serve ``.git/config``); ``None`` otherwise.
    ``folder``: ``path`` is a folder (a repo folder in its root), whose own name is not a kept hidden file name."""
    try:
        rel = path.resolve(strict=True).relative_to(real_folder).parts
    except (OSError, RuntimeError, ValueError):  # absent, a symlink loop, or outside
        return None
    if any(_hidden(p, last=not folder and i == len(rel) - 1) for i, p in enumerate(rel)):
        return None
    return real_folder.joinpath(*rel)


def _listed_path(folder: Path, parts: Sequence[str]) -> Optional[Path]:
    """The served path of the file ``parts`` of a repo ``folder`` if the walk (:func:`_repo_files`) lists it: the
    folders on the way are real folders (the walk does not follow links to folders, so ``dirlink/f.txt`` with
    ``dirlink -> sub`` is neither listed nor served), and the file is one :func:`_served_path` serves."""
    for i in range(1, len(parts)):
        try:
            if not stat.S_ISDIR(os.lstat(folder.joinpath(*parts[:i])).st_mode):
                return None
        except OSError:
            return None
    return _served_path(folder.joinpath(*parts), folder.resolve())


_digests: Dict[Tuple[str, FileIdentity], str] = {}
_digest_locks: Dict[Tuple[str, FileIdentity], threading.Lock] = {}  # one per file being hashed
_digests_lock = threading.Lock()


def _same_bytes(opened: FileIdentity, fd: int) -> bool:
    """Whether the open file ``fd``, whose identity was ``opened``, still holds the same bytes: same inode, size, mtime
    and ctime, which the kernel sets on every write, so an in-place write whose mtime was put back (``touch -r``,
    ``rsync --inplace -t``) is seen too. A changed ctime with no link left is a file replaced or removed
    (``os.replace`` over it): its bytes, which the descriptor still reads, are untouched."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != tuple(opened[:4]):
        return False
    return st.st_ctime_ns == opened.ctime_ns or st.st_nlink == 0


def _open_regular(path: Path):
    """``path`` opened for reading (binary), if it is a regular file; ``None`` otherwise (absent, a FIFO or device
    swapped in: opened without blocking, never read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return open(path, 'rb', opener=lambda *_: fd)  # the fd checked; f.name: the path


def _read_digest(f, h) -> str:
    """Hex digest of every byte of the open file ``f`` fed to ``h`` (a hashlib object that may hold a header), read
    with ``pread`` in 1 MiB chunks: ``f``'s position is left for the answer."""
    fd, offset = f.fileno(), 0
    while True:
        chunk = os.pread(fd, _CHUNK, offset)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)
        offset += len(chunk)


def _open_digest(f, identity: FileIdentity, algo: str = 'sha256') -> Optional[str]:
    """sha256 (``algo='sha256'``) or git blob id (``'git-sha1'``, what ``git hash-object`` gives) of the open file
    ``f`` whose identity was ``identity`` when it was opened; ``None`` if it changed while read (an in-place write):
    the digest of a torn file is never kept. Memoised per identity, so a mirror of large weights hashes each once:
    requests arriving while it is hashed wait for that one reading (4 first HEADs of a 1 GiB file read it 4 times).
    Hashing the open file, not its path: a path stat'ed, hashed and opened again served one version's ETag with the
    next version's bytes."""
    key = (algo, identity)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
        lock = _digest_locks.setdefault(key, threading.Lock())
    with lock:
        with _digests_lock:
            if key in _digests:
                return _digests[key]
        try:
            digest = _read_digest(f, hashlib.sha256() if algo == 'sha256' else
                                  hashlib.sha1(f'blob {identity.size}\0'.encode()))
            if not _same_bytes(identity, f.fileno()):
                return None
            with _digests_lock:
                _digests[key] = digest
        finally:
            with _digests_lock:
                _digest_locks.pop(key, None)
    return digest


#: The most entries (files and folders; a pruned hidden folder's contents not counted) one repo folder may hold. Every
#: request walks the folder (its commit id is derived from each file's stat data), one ``stat`` per file, and the
#: requests of a burst share walks (:class:`_Walks`: a request waits for at most two walks, however many arrive
#: together): past this the request is refused in one line rather than left to time out the client. The Hub itself
#: advises under 100,000 files a repo.
MAX_REPO_ENTRIES = 100_000


class _Walks:
    """Single flight of :func:`_walk_repo` per folder: the callers that arrive while a walk of a folder runs share
    the NEXT walk of it (one that starts after they arrived, so it sees every change made before their request),
    instead of each walking: a burst of N requests on a large repo costs two walks, not N walks fighting for the GIL
    (which made 8 HEADs at once on a repo near :data:`MAX_REPO_ENTRIES` pass huggingface_hub's 10 s HEAD time-out)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._state: Dict[str, dict] = {}  # folder -> {'started', 'done', 'result', 'running', 'waiting'}
        self.count = 0  # walks run (tests count them)

    def files(self, repo_dir: Path) -> Dict[str, FileIdentity]:
        key = os.fspath(repo_dir)
        with self._cond:
            st = self._state.setdefault(key, {'started': 0, 'done': 0, 'result': None, 'running': False,
                                              'waiting': 0})
            wanted = st['started'] + 1  # a walk started after this call
            st['waiting'] += 1
            try:
                while st['done'] < wanted:
                    if st['running']:
                        self._cond.wait()
                        continue
                    st['running'], st['started'] = True, st['started'] + 1
                    generation = st['started']
                    self.count += 1
                    self._cond.release()
                    try:
                        result = (True, _walk_repo(repo_dir))
                    except BaseException as e:  # noqa: B036 (shared with the waiters, re-raised in each)
                        result = (False, e)
                    finally:
                        self._cond.acquire()
                        st['running'] = False
                        self._cond.notify_all()
                    st['done'], st['result'] = generation, result
                ok, value = st['result']
            finally:
                st['waiting'] -= 1
                if not st['waiting'] and not st['running']:
                    del self._state[key]  # nobody to share with: the listing is not kept
        if not ok:
            raise value
        return value


_walks = _Walks()


def _repo_files(repo_dir: Path) -> Dict[str, FileIdentity]:
    """:func:`_walk_repo` of ``repo_dir``, shared with the callers asking at the same time (:class:`_Walks`)."""
    return _walks.files(repo_dir)


def _walk_repo(repo_dir: Path) -> Dict[str, FileIdentity]:
    """Repo-relative POSIX path -> :class:`~timm_cra.utils.io.FileIdentity` of every regular file, in the order of a
    sorted walk (folder by folder); hidden files and folders excluded, and links that :func:`_served_path` refuses.

    One walk, one ``stat`` a file: the folder is resolved once and only links are resolved (``_inside`` on each file
    resolved the file and the folder: 20,000 files made each HEAD take 4-18 s). Hidden folders are pruned from the
    walk, not filtered after it (a ``.git`` of 51,200 files beside ``config.json``). Links to folders are not
    followed. Over :data:`MAX_REPO_ENTRIES` entries: a 507 naming the limit."""
    real_dir = repo_dir.resolve()
    files: Dict[str, FileIdentity] = {}
    seen = 0
    pending = [('', iter(()))]  # (folder, its entries left), depth first: no recursion limit on deep trees
    folders = ['']
    while folders or pending:
        if folders:
            rel_top = folders.pop()
            try:
                with os.scandir(repo_dir / rel_top) as found:
                    entries = sorted(found, key=lambda e: e.name)  # by name: the order of a sorted walk
            except OSError:  # a folder removed or unreadable meanwhile: as os.walk, skipped
                continue
            seen += len(entries)
            if seen > MAX_REPO_ENTRIES:
                raise _HubError(HTTPStatus.INSUFFICIENT_STORAGE,
                                f'{repo_dir} holds over {MAX_REPO_ENTRIES} files and folders, more than this mirror '
                                f'serves (each request walks them): move what clients do not need out of it, or into '
                                f'a hidden (.-prefixed) folder.')
            pending.append((rel_top, iter(entries)))
        rel_top, entries = pending[-1]
        for entry in entries:
            rel = rel_top + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not _hidden(entry.name, last=False):
                        folders.append(rel + '/')  # listed next; the rest of this folder after it
                        break
                elif not _hidden(entry.name, last=True) and entry.is_file() and (
                        not entry.is_symlink() or _served_path(Path(entry.path), real_dir) is not None):
                    files[rel] = file_identity(entry.path)
            except OSError:  # removed meanwhile
                continue
        else:
            pending.pop()
    return files


def _stat_hash(files: Dict[str, FileIdentity]) -> str:
    """40-hex sha1 over ``files`` (path -> stat data: device, inode, size, mtime and ctime in ns). A file replaced (a
    new inode) or edited in place (mtime, ctime) changes it, and no file is read: hashing the contents made a
    request wait for every byte below (a 6 GB file beside the weights; a 30 GB one in a folder of a listing)."""
    h = hashlib.sha1()
    for rel, identity in files.items():
        h.update(f'{rel}\0{identity}\n'.encode())
    return h.hexdigest()


def _history(repo_dir: Path) -> Optional[List[str]]:
    """The commits of a repo written by this server (``main`` last); ``None`` for a plain folder."""
    head = _store_entry(repo_dir, _HEAD, folder=False)
    if head is None:
        return None
    try:
        with open(os.open(head, os.O_RDONLY | os.O_NOFOLLOW), 'rb') as f:  # swapped for a link since: refused
            text = f.read(1 << 24)
    except OSError as e:
        raise _HubError(HTTPStatus.INTERNAL_SERVER_ERROR, f'{head} cannot be read ({e.strerror}); restore it.')
    commits = text.decode('ascii', 'replace').split()
    if not commits or not all(_COMMIT_RE.match(c) for c in commits):
        raise _HubError(HTTPStatus.INTERNAL_SERVER_ERROR, f'{head} is not a list of commits; restore it.')
    return commits


def served_revision(repo_dir: Union[str, Path], revision: str = DEFAULT_BRANCH) -> Tuple[Path, str]:
    """(folder holding the files, commit hash) of ``revision`` (``main`` or a commit) of a repo folder.

    Raises ``_HubError`` (404 ``RevisionNotFound``) for any other revision.
    """
    return _revision(Path(repo_dir), revision)[:2]


def _revision(repo_dir: Path, revision: str) -> Tuple[Path, str, Optional[Dict[str, FileIdentity]]]:
    """:func:`served_revision` and, for a plain folder, the :func:`_repo_files` its commit hash came from (a listing
    reuses them: one walk a request); ``None`` for a revision of the history (not walked for its commit)."""
    history = _history(repo_dir)
    revisions = _store_entry(repo_dir, _REVISIONS, folder=True)  # checked even when unused: S3 (writes go there)
    if history is None:
        files = _repo_files(repo_dir)
        head = _stat_hash(files)
        if revision in (DEFAULT_BRANCH, head):
            return repo_dir, head, files
    else:
        head = history[-1]
        commit = head if revision == DEFAULT_BRANCH else revision
        folder = _store_entry(revisions, commit, folder=True) if revisions and commit in history else None
        if folder is not None and _inside(folder, repo_dir):
            return folder, commit, None
        if commit in history and folder is None:  # a stray or copied .hub-head: "Invalid rev id: main" misled
            raise _HubError(HTTPStatus.INTERNAL_SERVER_ERROR,
                            f'{repo_dir / _REVISIONS / commit} is missing: {repo_dir / _HEAD} names commit {commit} '
                            f'but its files are not there; restore it, or remove {_HEAD} to serve the folder as it is.')
    raise _HubError(HTTPStatus.NOT_FOUND,
                    f'Invalid rev id: {revision[:100]} (repo {repo_dir.parent.name}/{repo_dir.name} has '
                    f'{DEFAULT_BRANCH} = {head}).', 'RevisionNotFound')


def _position(digits: str) -> int:
    """A byte position of a Range header; one of over 18 digits is past any file (and ``int`` refuses 4300)."""
    digits = digits.lstrip('0') or '0'
    return int(digits) if len(digits) <= 18 else 10 ** 18


def byte_range(header: Optional[str], size: int):
    """``(first, last)`` byte of a file of ``size`` bytes that a ``Range`` header asks for, :data:`_UNSATISFIABLE`
    (a ``416``), or None: serve the whole file (``200``).

    RFC 9110 14.2: a Range the server does not understand is ignored, not refused: no header, another unit,
    invalid syntax (``bytes=abc``, ``bytes=-``, ``bytes=5-2``), or several ranges (no multipart answers here).
    Only a valid range that is unsatisfiable is a 416 (14.1.1): its first byte at or past the end of the file, or
    a suffix of 0 bytes. An empty file has no byte to send, so its Range is ignored.
    """
    m = _RANGE_RE.fullmatch(header.strip()) if header else None
    if m is None or not (m.group(1) or m.group(2)):
        return None
    first, last = (_position(g) if g else None for g in m.groups())
    if first is None:  # suffix range: the last N bytes
        if last == 0:
            return _UNSATISFIABLE
        return (max(0, size - last), size - 1) if size else None
    if last is not None and last < first:  # an invalid range-spec: ignored
        return None
    if first >= size:
        return _UNSATISFIABLE
    return first, size - 1 if last is None else min(last, size - 1)


def repo_commit_hash(repo_dir: Union[str, Path]) -> str:
    """40-hex commit id that ``main`` of a repo folder is served under (derived from file names and stat data for a
    plain folder)."""
    return served_revision(repo_dir)[1]


_ASCII_LOWER = str.maketrans('ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')


#: What a Hub repo name can be (huggingface_hub's ``validate_repo_id``: letters, digits, ``-_.``, at most 96, no
#: ``--`` or ``..``, no ``-`` / ``.`` at either end, no ``.git`` ending): the org page lists no other folder name.
_REPO_NAME = re.compile(r'(?!.*(--|\.\.))(?!.*\.git$)[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?')


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a looping symlink: not a folder, and not a reason to drop its neighbours
        return False


def _ascii_fold(name: str) -> str:
    """``name`` with ASCII letters lower-cased, nothing else: Hub ids are ASCII, so only they fold (``str.casefold``
    made ``uni/STRASSE`` reach a folder ``uni/straße``)."""
    return name.translate(_ASCII_LOWER)


def _child_dirs(folder: Path, name: str) -> Iterator[Path]:
    """The folders in ``folder`` named ``name`` case-insensitively (as Hub ids are), the exact spelling first."""
    exact = folder / name
    if exact.is_dir():
        yield exact
    wanted = _ascii_fold(name)
    try:
        with os.scandir(folder) as entries:
            matches = [e.name for e in entries if e.name != name and _ascii_fold(e.name) == wanted
                       and not e.name.startswith('.') and e.is_dir()]
    except OSError:
        return
    for match in sorted(matches):
        yield folder / match


def _find_repo_in(root: Path, repo_id: str) -> Optional[Path]:
    """The folder of ``repo_id`` (``org/name``, case-insensitive) in ``root``, if it is one inside the root."""
    try:
        parts = safe_parts(repo_id, 'repo id')
    except _HubError:
        return None
    if len(parts) != 2:
        return None
    # ACME/two and acme/one made by hand: each id finds its repo. Two folders of one id (evil/dup and evil/Dup, or
    # ACME/x and acme/x) are one repo on the Hub: serving either for every spelling hid the other, so none is served.
    found = [repo_dir for org in _child_dirs(root, parts[0]) for repo_dir in _child_dirs(org, parts[1])]
    if len(found) > 1:
        raise _HubError(HTTPStatus.CONFLICT,
                        f'Repository {repo_id[:200]} is ambiguous: {found[0]} and {found[1]} differ only in case, and '
                        f'repo ids are case-insensitive (as on the Hub): rename or remove one of them.')
    # The rule of links inside a repo holds for the repo (and org) folder itself: acme/leak -> ../other/repo/.git or
    # acme/lfs -> ../.hub-lfs (the writable server's LFS store) stays inside the root and is still never served.
    return found[0] if found and _served_path(found[0], root.resolve(), folder=True) is not None else None


def _file_oid(identity: FileIdentity) -> str:
    """The ``oid`` of a file entry in a listing, derived from its stat data (device, inode, size, mtime, ctime).
    On the Hub it is git's blob id, a hash of every byte; huggingface_hub only keeps it as an opaque id (its tree
    cache, ``HfFileSystem``) and verifies downloads by the ``ETag`` (sha256) of the one file it fetches, so a
    listing reads no file (it read a 30 GB file in full for a ``snapshot_download`` of ``*.json``)."""
    return hashlib.sha1(f'blob\0{identity}'.encode()).hexdigest()


class _ReadRoutes(BaseHTTPRequestHandler):
    """The routes: downloads, model info, tree; write requests get a 403."""
    server_version = 'timm-cra-hub/3'
    protocol_version = 'HTTP/1.1'  # keep-alive, as the Hub client pools connections

    def setup(self):
        # A socket timeout bounds every read and write: a half-open or stalled client frees its thread.
        self.timeout = self.server.request_timeout
        self._header_lock = threading.Lock()
        self._reading_header = False
        super().setup()

    def handle_one_request(self):
        # The socket time-out is per read: a client trickling its request line and headers (a byte every 2 s under
        # --timeout 3) never trips it and holds a thread forever. The whole header read ends by the time-out too.
        with self._header_lock:
            self._reading_header = True
        timer = threading.Timer(self.server.request_timeout, self._header_too_slow)
        timer.daemon = True
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()

    def _header_too_slow(self):
        with self._header_lock:
            if self._reading_header:  # the blocked read wakes with an end of stream: the request is dropped
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

    # ---- plumbing -------------------------------------------------------------------------------------
    def log_message(self, format, *args):
        # Runs inside send_response, before the status line: a log write that raised cost the client its answer.
        self.server.write_log_line(lambda: super(_ReadRoutes, self).log_message(format, *args))

    def _send(self, status: int, headers: Dict[str, str], body: bytes = b'', head_only: bool = False):
        self._drain_body()
        self.send_response(status)
        headers = {'Content-Length': str(len(body)), **headers}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    def _json(self, obj, status: int = HTTPStatus.OK, headers: Optional[Dict[str, str]] = None):
        self._send(status, {'Content-Type': 'application/json', **(headers or {})}, json.dumps(obj).encode())

    def _error(self, status: int, code: Optional[str], message: str, head_only: bool, commit: Optional[str] = None,
               fields: Optional[Dict[str, Any]] = None):
        # The message quotes the request (a file name, a revision): CR / LF in it would end the header and forge
        # others (response splitting), so it is escaped as printable ASCII. Store paths are named from the served
        # root: where it lies on this machine is nothing a client needs (and no one's business with --host 0.0.0.0).
        for root in self.server.roots:
            message = message.replace(f'{root}{os.sep}', '')
        headers = {'Content-Type': 'application/json',
                   'X-Error-Message': printable(message).encode('ascii', 'replace').decode()}
        if code:
            headers['X-Error-Code'] = code
        if commit:
            headers['X-Repo-Commit'] = commit  # lets the client cache "file does not exist" per commit
        self._send(status, headers, json.dumps({'error': message, **(fields or {})}).encode(), head_only)

    # Request bodies (read and dropped here; a writable subclass parses them). An answer sent before the body is
    # read must not leave it in the stream, where keep-alive would parse it as the next request: small bodies are
    # drained, large ones close.
    _body_read = True

    def _bad_body(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> _HubError:
        self.close_connection = True  # the stream position is unknown: never read a next request from it
        return _HubError(status, message)

    def _iter_body(self, limit: int) -> Iterator[bytes]:
        """The request body in chunks of at most 1 MiB (``Content-Length`` or chunked), at most ``limit`` bytes."""
        self._body_read = True
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            total = 0
            while True:  # ends: every chunk is at least 1 byte and the total is bounded by limit
                try:
                    size = int(self.rfile.readline(100).split(b';')[0].strip(), 16)
                except ValueError:
                    raise self._bad_body('Malformed chunked request body.')
                if size < 0:
                    raise self._bad_body('Malformed chunked request body.')
                if size == 0:
                    for _ in range(100):  # trailers, then the blank line
                        if self.rfile.readline(1000) in (b'\r\n', b'\n', b''):
                            break
                    return
                total += size
                if total > limit:
                    raise self._bad_body(f'Request body over {limit} bytes.', HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                yield from self._read_exactly(size)
                self.rfile.readline(10)
        raw = self.headers.get('Content-Length')
        if raw is None:
            return
        if not (raw.strip().isascii() and raw.strip().isdigit()):
            raise self._bad_body(f'Invalid Content-Length {raw[:40]!r}.')
        length = int(raw)
        if length > limit:
            raise self._bad_body(f'Request body over {limit} bytes.', HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        yield from self._read_exactly(length)

    def _read_exactly(self, n: int) -> Iterator[bytes]:
        while n:
            chunk = self.rfile.read(min(_CHUNK, n))
            if not chunk:
                raise self._bad_body('Request body ended early.')
            n -= len(chunk)
            yield chunk


    def _drain_body(self):
        if self._body_read:
            return
        self._body_read = True
        try:
            for _ in self._iter_body(self.server.drain_limit):
                pass
        except (_HubError, OSError):
            self.close_connection = True

    def _find_repo(self, repo_id: str) -> Optional[Path]:
        for root in self.server.roots:
            repo_dir = _find_repo_in(root, repo_id)
            if repo_dir is not None:
                return repo_dir
        return None

    # ---- read routes ----------------------------------------------------------------------------------
    def do_HEAD(self):
        self._route(head_only=True)

    def do_GET(self):
        self._route(head_only=False)

    def do_POST(self):
        self._write_route('POST')

    def do_PUT(self):
        self._write_route('PUT')

    def _parts(self) -> List[str]:
        # Split before unquoting: the client quotes '/' inside a revision (refs/pr/1) as %2F; a '/' that
        # only appears after unquoting stays inside its part, which the containment checks then refuse.
        return [unquote(p) for p in urlsplit(self.path).path.split('/')[1:]]

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        with self._header_lock:
            self._reading_header = False  # read whole within the time-out; the answer is not cut by it
        if not parsed:
            return False
        # Two framings of one body (request smuggling): refused, the connection closed.
        if len(self.headers.get_all('Content-Length') or []) > 1 or (
                'Content-Length' in self.headers and 'Transfer-Encoding' in self.headers):
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, None, 'Give one Content-Length header, or Transfer-Encoding alone.',
                        False)
            return False
        return True

    def _route(self, head_only: bool):
        self._body_read = False  # a GET / HEAD body is read and dropped: never parsed as the next request
        self._drain_body()
        parts = self._parts()
        try:
            if len(parts) == 1 and parts[0]:  # the org page the load errors link to ("published repos: <org>")
                return self._org_page(parts[0], head_only)
            if len(parts) >= 5 and parts[2] == 'resolve':
                return self._resolve('/'.join(parts[:2]), parts[3], parts[4:], head_only)
            if len(parts) >= 4 and parts[:2] == ['api', 'models']:
                repo_id = '/'.join(parts[2:4])
                rest = parts[4:]
                if not rest:
                    return self._model_info(repo_id, DEFAULT_BRANCH, head_only)
                if len(rest) == 2 and rest[0] == 'revision':
                    return self._model_info(repo_id, rest[1], head_only)
                if len(rest) >= 2 and rest[0] == 'tree':
                    return self._tree(repo_id, rest[1], '/'.join(rest[2:]), head_only)
        except _HubError as e:
            return self._error(e.status, e.code, e.message, head_only, e.commit, e.fields)
        self._error(HTTPStatus.NOT_FOUND, None, f'Not a Hub download route: {self.path[:300]}', head_only)

    def _org_page(self, org: str, head_only: bool):
        """A plain-text list of the org's repos served here (the Hub's org page is HTML; a reader wants the ids).
        One scan of each org folder: ids that fold to one (``dup`` and ``Dup``) are served under none and not
        listed, nor are names no Hub id can have (a newline would forge a line)."""
        safe_parts(org, 'organization')
        if not _REPO_NAME.fullmatch(org):
            raise _HubError(HTTPStatus.NOT_FOUND, f'Organization {org[:200]!r} not found (not a Hub name).',
                            'RepoNotFound')
        repos: Dict[str, str] = {}  # folded id -> id; the first root that serves an id is the one asked
        for root in self.server.roots:
            real_root = root.resolve()
            found: Dict[str, List[Tuple[Path, str]]] = {}
            for org_dir in _child_dirs(root, org):
                try:
                    with os.scandir(org_dir) as entries:
                        names = [e.name for e in entries if _REPO_NAME.fullmatch(e.name) and _is_folder(e)]
                except OSError:
                    continue
                for name in names:
                    found.setdefault(_ascii_fold(name), []).append((org_dir, name))
            for key, same in found.items():
                org_dir, name = same[0]
                if len(same) == 1 and key not in repos and \
                        _served_path(org_dir / name, real_root, folder=True) is not None:
                    repos[key] = f'{org_dir.name}/{name}'
        if not repos:
            raise _HubError(HTTPStatus.NOT_FOUND, f'Organization {org[:200]} not found (no repos are served under '
                                                  f'it).', 'RepoNotFound')
        body = ''.join(f'{r}\n' for r in sorted(repos.values(), key=str.lower)).encode()
        self._send(HTTPStatus.OK, {'Content-Type': 'text/plain; charset=utf-8'}, body, head_only)

    def _check_revision(self, repo_id: str, revision: str) -> Tuple[Path, str]:
        """(folder holding the files of ``revision``, its commit); read once per request, so a commit landing
        meanwhile never mixes two revisions in one answer."""
        repo_dir = self._find_repo(repo_id)
        if repo_dir is None:
            raise _HubError(HTTPStatus.NOT_FOUND, f'Repository {repo_id[:200]} not found.', 'RepoNotFound')
        return served_revision(repo_dir, revision)

    def _revision_files(self, repo_id: str, revision: str) -> Tuple[Path, str, Dict[str, FileIdentity]]:
        """:meth:`_check_revision` and the revision's :func:`_repo_files`, walked once."""
        repo_dir = self._find_repo(repo_id)
        if repo_dir is None:
            raise _HubError(HTTPStatus.NOT_FOUND, f'Repository {repo_id[:200]} not found.', 'RepoNotFound')
        folder, commit, files = _revision(repo_dir, revision)
        return folder, commit, _repo_files(folder) if files is None else files

    def _model_info(self, repo_id: str, revision: str, head_only: bool):
        _, commit, files = self._revision_files(repo_id, revision)
        body = json.dumps({
            'id': repo_id, 'modelId': repo_id, 'sha': commit, 'private': False, 'disabled': False,
            'gated': False, 'tags': [], 'siblings': [{'rfilename': f} for f in files],
        }).encode()
        self._send(HTTPStatus.OK, {'Content-Type': 'application/json', 'X-Repo-Commit': commit}, body, head_only)

    def _tree(self, repo_id: str, revision: str, path: str, head_only: bool):
        _, commit, files = self._revision_files(repo_id, revision)
        recursive = parse_qs(urlsplit(self.path).query).get('recursive', ['false'])[0].lower() in ('true', '1')
        prefix = ''
        if path:
            try:
                prefix = '/'.join(safe_parts(path)) + '/'
            except _HubError:
                prefix = None
        files = {rel: identity for rel, identity in files.items() if prefix is not None and rel.startswith(prefix)}
        if not files and path:
            raise _HubError(HTTPStatus.NOT_FOUND, f'{path[:200]} is not a folder of "{revision}" of {repo_id}.',
                            'EntryNotFound', commit)
        entries: Dict[str, dict] = {}
        below: Dict[str, Dict[str, FileIdentity]] = {}  # each listed folder's files, gathered in one pass
        for rel, identity in files.items():
            sub = rel[len(prefix):].split('/')
            depth = len(sub) if recursive else 1
            for i in range(1, min(depth, len(sub) - 1) + 1):  # the folders on the way
                below.setdefault(prefix + '/'.join(sub[:i]), {})[rel] = identity
            if recursive or len(sub) == 1:
                entries[rel] = {'type': 'file', 'oid': _file_oid(identity), 'size': identity.size, 'path': rel}
        for key, inside in below.items():
            entries[key] = {'type': 'directory', 'oid': _stat_hash(inside), 'path': key}
        body = json.dumps([entries[k] for k in sorted(entries)]).encode()
        self._send(HTTPStatus.OK, {'Content-Type': 'application/json', 'X-Repo-Commit': commit}, body, head_only)

    def _resolve(self, repo_id: str, revision: str, file_parts: Sequence[str], head_only: bool):
        repo_dir = self._find_repo(repo_id)
        if repo_dir is None:
            raise _HubError(HTTPStatus.NOT_FOUND, f'Repository {repo_id[:200]} not found.', 'RepoNotFound')
        folder, commit, walked = _revision(repo_dir, revision)
        filename = '/'.join(file_parts)
        missing = _HubError(HTTPStatus.NOT_FOUND, f'{filename[:300]} does not exist on "{revision}" of {repo_id}.',
                            'EntryNotFound', commit)
        try:
            parts = safe_parts(filename, 'file name')
        except _HubError:
            raise missing
        if len(parts) != len(file_parts):  # a part held an encoded '/'
            raise missing
        rel = '/'.join(parts)
        path = _listed_path(folder, parts)  # the one path asked for, not the others
        if path is None or (walked is not None and rel not in walked):
            raise missing
        if revision != commit:
            # A branch: the commit's URL, which serves that commit's bytes or nothing. huggingface_hub HEADs
            # resolve/main, follows this relative redirect and GETs the final URL, so a file or commit changing
            # between its HEAD and GET is an error, never one version's sha256 naming another's bytes (as the Hub
            # redirects to an immutable URL).
            location = '/' + '/'.join(quote(p, safe='') for p in [*repo_id.split('/'), 'resolve', commit, *parts])
            self._send(HTTPStatus.TEMPORARY_REDIRECT, {'Location': location, 'X-Repo-Commit': commit}, b'', head_only)
            return
        f = _open_regular(path)
        if f is None:
            raise missing
        with f:
            identity = file_identity(f.fileno())
            # A plain folder's commit is the stat hash of its walk: a file whose identity is not the one walked is
            # another version, so that commit no longer exists; so is a file rewritten while hashed.
            sha256 = None if walked is not None and walked[rel] != identity else _open_digest(f, identity)
            if sha256 is None:
                raise _HubError(HTTPStatus.NOT_FOUND,
                                f'Invalid rev id: {revision[:100]} ({rel[:300]} of {repo_id[:200]} changed since that '
                                f'revision: ask for {DEFAULT_BRANCH} again).', 'RevisionNotFound')
            self._send_file(f, identity, sha256, commit, head_only)

    def _send_file(self, f, identity: FileIdentity, sha256: str, commit: str, head_only: bool):
        """Answer with the open file ``f`` (``identity``: its identity when opened, ``sha256``: of those bytes)."""
        size = identity.size
        headers = {
            'ETag': f'"{sha256}"',
            'X-Repo-Commit': commit,
            'Accept-Ranges': 'bytes',
            'Content-Type': 'application/octet-stream',
            'Last-Modified': formatdate(identity.mtime_ns / 1e9, usegmt=True),
        }
        start, end, status = 0, size - 1, HTTPStatus.OK
        # RFC 9110 14.2: GET is the only method with range handling (a HEAD describes the whole file).
        wanted = None if head_only else byte_range(self.headers.get('Range'), size)
        if wanted == _UNSATISFIABLE:
            self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {'Content-Range': f'bytes */{size}'})
            return
        if wanted is not None:
            start, end = wanted
            status = HTTPStatus.PARTIAL_CONTENT
            headers['Content-Range'] = f'bytes {start}-{end}/{size}'
        length = end - start + 1 if size else 0
        self.send_response(status)
        for k, v in {**headers, 'Content-Length': str(length)}.items():
            self.send_header(k, v)
        self.end_headers()
        if head_only or not length:
            return
        self._write_file_body(f, start, length, identity)

    def _write_file_body(self, f, start: int, length: int, identity: FileIdentity):
        """Stream ``length`` bytes of the open file ``f`` (``f.name``: its path) from ``start`` (a hook for
        fault-injecting test servers). Each chunk is sent only if the file still holds the bytes of ``identity``
        after it was read (:func:`_same_bytes`): a file rewritten in place meanwhile cuts the body, as one that shrank;
        one replaced (``os.replace``) is served whole from the version opened."""
        f.seek(start)
        remaining = length
        while remaining:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk or not _same_bytes(identity, f.fileno()):
                # shrank or rewritten: closing at once tells the client its body is short (kept open, it waited out
                # the time-out for the missing bytes); the bytes it has are all of the version it was told of
                self.close_connection = True
                break
            self.wfile.write(chunk)
            remaining -= len(chunk)

    read_only_message = 'This Hub server is a read-only mirror: it serves downloads; push to huggingface.co.'

    def _write_route(self, method: str):
        self._body_read = False  # an answer drains or closes: the body must not be parsed as a request
        self._error(HTTPStatus.FORBIDDEN, None, self.read_only_message, False)


class HubFolderServer(ThreadingHTTPServer):
    """Threaded read-only Hub-compatible server over one or more roots (the first root holding a repo wins).

    Use as a context manager (starts a background thread, stops it on exit) or call :meth:`start` /
    :meth:`stop`. ``port=0`` picks a free port; :attr:`endpoint` is the URL to give ``HF_ENDPOINT``.
    ``request_timeout`` (seconds) closes a connection that makes no progress. ``handler_class`` lets tests
    inject faults (and the tests' writable server add its routes).
    """
    daemon_threads = True
    handler_class = _ReadRoutes
    # socketserver listens with a backlog of 5: in a burst (ranks, threads, a CI fan-out) the kernel drops the
    # connections past it and each client retries its SYN after 1 s
    request_queue_size = 128
    _log_lock = threading.Lock()  # the request log is turned off once, by one thread

    def __init__(
            self,
            roots: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
            host: str = '127.0.0.1',
            port: int = 0,
            verbose: bool = False,
            request_timeout: float = 60.0,
    ):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        self.roots = [Path(r).resolve() for r in roots]
        self.verbose = verbose
        self.drain_limit = 64 << 20
        self.request_timeout = request_timeout
        self._thread: Optional[threading.Thread] = None
        super().__init__((host, port), self.handler_class)

    def handle_error(self, request, client_address):
        # A client that hangs up or stalls past the timeout is routine for a server: one line, no traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            self.write_log_line(lambda: print(f'{client_address[0]}:{client_address[1]}: {type(exc).__name__}: {exc}',
                                   file=sys.stderr))
            return
        super().handle_error(request, client_address)

    def write_log_line(self, write_line: Callable[[], Any]) -> None:
        """Run ``write_line`` (it writes one request-log line to stderr) while :attr:`verbose`; best-effort.

        A log that cannot be written (stderr closed, a full disk, ``| head -1`` gone after the first line) must not
        cost an answer: the first failed line turns logging off, with one notice on stdout if that can be written.
        """
        if not self.verbose:
            return
        try:
            if sys.stderr is None:  # started with stderr closed (2>&-)
                raise OSError(errno.EBADF, 'stderr is closed')
            write_line()
        except (OSError, ValueError) as e:  # ValueError: a closed file object
            with self._log_lock:
                stopped_here, self.verbose = self.verbose, False
            if stopped_here:
                with contextlib.suppress(OSError, ValueError):
                    print(f'warning: the request log cannot be written to stderr ({e}): requests are served, no '
                          f'longer logged', flush=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f'http://{host}:{port}'

    def start(self) -> 'HubFolderServer':
        self._thread = threading.Thread(target=self.serve_forever, name='hub-folder-server', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> 'HubFolderServer':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


#: The longest ``--timeout``: a day is past any real stall, and far below what a socket time-out can hold.
MAX_TIMEOUT = 86400.0
#: The shortest: below it (``--timeout 1e-9``) a loaded machine cuts ordinary downloads mid-body.
MIN_TIMEOUT = 1.0


def create_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog='timm-cra-hub-mirror',
        description='Serve <root>/<org>/<repo>/ folders as a read-only Hugging Face Hub mirror (point HF_ENDPOINT '
                    'at the printed URL).')
    parser.add_argument('--root', action='append', required=True,
                        help='folder holding <org>/<repo>/ repos; repeat to layer several roots')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default: %(default)s, this machine only; another address serves '
                             'every file under --root to whoever reaches it, without authentication, and says so on '
                             'stderr)')
    parser.add_argument('--port', type=int, default=8808, help='port to listen on (default: %(default)s; 0 picks a '
                                                               'free port)')
    parser.add_argument('--quiet', action='store_true', help='do not log requests')
    parser.add_argument('--timeout', type=float, default=60.0, metavar='SECONDS',
                        help='close a connection that sends or reads nothing for this long, or whose request line '
                             'and headers take longer in all (default: 60)')
    return parser


def refuse(parser: argparse.ArgumentParser, message: str) -> None:
    """What ``run_cli`` prints for a ``UsageError``: one line, exit 2 (argparse's ``error`` adds the usage)."""
    parser.exit(2, f'error: {printable(message)}\n')


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad ``create_parser`` arguments before anything listens (exit 2)."""
    # An empty value (an unset shell variable) meant the current folder and every interface: together, the cwd's
    # files served to the network.
    if '' in args.root:
        refuse(parser, '--root is empty: name the folder holding <org>/<repo>/ repos (--root . for the current one)')
    if not args.host:
        refuse(parser, f'--host is empty (it would listen on every interface): leave it out for '
                       f'{parser.get_default("host")} (this machine only), or name the address to serve')
    for root in args.root:
        if not Path(root).is_dir():
            parser.error(f'--root {root!r} is not a folder')
    # inf, or 1e10 (past what a socket time-out holds: OverflowError): a server whose every request fails
    if not MIN_TIMEOUT <= args.timeout <= MAX_TIMEOUT:
        refuse(parser, f'--timeout must be a number of seconds from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g} (a day), '
                       f'not {args.timeout}')
    if not 0 <= args.port <= 65535:
        refuse(parser, f'--port must be 0 to 65535 (0 picks a free port), not {args.port}')


def start(parser: argparse.ArgumentParser, args: argparse.Namespace,
          server_class: Optional[Type[HubFolderServer]] = None, **kwargs: Any) -> HubFolderServer:
    """``server_class`` (default :class:`HubFolderServer`) listening as ``args`` say; a port in use or reserved, or
    a host that is not this machine's, is one line (exit 2)."""
    try:
        return (server_class or HubFolderServer)(args.root, host=args.host, port=args.port, verbose=not args.quiet,
                                                 request_timeout=args.timeout, **kwargs)
    except OSError as e:
        if not (isinstance(e, socket.gaierror) or e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)):
            raise
        refuse(parser, f'cannot listen on {args.host}:{args.port} ({e.strerror or e}): pass another --port '
                       f'(0 picks a free one) or --host')


def serve(server: HubFolderServer, mode: str = 'read-only') -> None:
    """Print the endpoint line (``... (use: HF_ENDPOINT=<url>)``, which CI and tests read) and serve until
    interrupted."""
    host, port = server.server_address[:2]
    if not ipaddress.ip_address(host).is_loopback and sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):  # stderr closed or full: the warning is lost, not the server
            print(f'warning: listening on {host}:{port}, beyond this machine: anyone who reaches it can read every '
                  f'file under {", ".join(map(str, server.roots))} (no authentication); --host 127.0.0.1 keeps it '
                  f'to this machine', file=sys.stderr, flush=True)
    print(f'Serving {", ".join(map(str, server.roots))} ({mode}) at {server.endpoint}  '
          f'(use: HF_ENDPOINT={server.endpoint})', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = create_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    serve(start(parser, args))


if __name__ == '__main__':
    main()
