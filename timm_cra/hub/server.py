"""A Hugging Face Hub-compatible HTTP server for local model folders (read-only unless started for writing).

Serves ``<root>/<org>/<repo>/<files>`` the way the Hub serves model repos to ``huggingface_hub``'s download
client (``hf_hub_download``, which timm uses for ``pretrained=True`` and ``hf-hub:`` names):

* ``HEAD|GET /{org}/{repo}/resolve/{revision}/{filename}`` with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length`` (single byte-range requests get a ``206``, as the client resumes downloads with them);
* ``GET /api/models/{org}/{repo}`` and ``/api/models/{org}/{repo}/revision/{revision}``: repo id, commit
  sha and file list (what ``HfApi.model_info`` reads);
* ``GET /api/models/{org}/{repo}/tree/{revision}[/{path}]``: files and folders (what ``HfApi.list_repo_files`` /
  ``list_repo_tree`` and ``upload_folder(delete_patterns=...)`` read; one page, no ``expand`` details);
* errors as the Hub reports them, so the client raises its typed errors: ``404`` with
  ``X-Error-Code: RepoNotFound`` / ``EntryNotFound`` / ``RevisionNotFound``.

Two repo layouts are served. A plain folder (what ``hub/`` holds) has one commit, whose hash is derived from
its file names and contents; ``main`` and that hash are the two revisions it answers to, so a pinned revision
(``hf-hub:org/repo@<hash>``) works and changes whenever a file does. A repo written by this server keeps each
commit in ``<repo>/.hub-revisions/<commit>/`` (never changed once written) and its history in ``<repo>/.hub-head``
(one commit per line, ``main`` last): ``main`` and every commit of the history are served. Repo ids resolve
case-insensitively, as on the Hub (``ORG/Name`` finds ``org/name``). Used by the test suite and as a local mirror::

    python -m timm_cra.hub.server --root hub --port 8808
    HF_ENDPOINT=http://127.0.0.1:8808 python -c "import timm, timm_cra; timm.create_model('hf-hub:org/repo', pretrained=True)"

Containment: every repo id and file name is checked part by part (no empty, ``.``/``..``, hidden but
``.gitattributes``, ``/``, ``\\`` or NUL parts, none over 255 bytes) and the resolved path must stay inside its
repo folder, and that inside its root. A symlink is served only if its target stays inside the same repo
folder; any other is invisible (404). The server's own entries (``.hub-head``, ``.hub-revisions`` and each
revision in it) must be real files / folders: a symlink there is never followed (500 naming the entry).
Every connection times out after ``request_timeout`` seconds without progress; a GET body is read and dropped,
and two ``Content-Length`` headers are a 400.

The write side (off unless ``--allow-write`` with a token) is the last part of this file (``_WriteRoutes`` and
the commit store above it); see its section comment.
"""
import argparse
import base64
import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from ..utils.errors import printable
from ..utils.io import atomic_write

__all__ = ['HubFolderServer', 'repo_commit_hash', 'served_revision', 'safe_parts', 'main', 'WRITE_TOKEN_ENV']

DEFAULT_BRANCH = 'main'
WRITE_TOKEN_ENV = 'TIMM_CRA_HUB_WRITE_TOKEN'
_RANGE_RE = re.compile(r'^bytes=(\d*)-(\d*)$')
_OID_RE = re.compile(r'^[0-9a-f]{64}$')
_COMMIT_RE = re.compile(r'^[0-9a-f]{40}$')
_CHUNK = 1 << 20
_MAX_PART_BYTES = 255  # NAME_MAX: a longer part makes the OS raise instead of answering "no such file"
_HEAD = '.hub-head'  # in a repo written by this server: its commits, one per line, main last
_REVISIONS = '.hub-revisions'  # <repo>/.hub-revisions/<commit>/: the files of each commit of the history
_STORE = '.hub-lfs'  # uploaded LFS objects, per root, named by sha256 (hidden: never a repo, never listed)
_TMP_PREFIX = '.hub-tmp-'  # every temp file / staging folder of a write; removed when a writable server starts
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


_digests: Dict[Tuple[str, int, int, int, int], str] = {}
_digests_lock = threading.Lock()


def _digest_key(path: Path, algo: str):
    # Keyed on the inode, not the path: a commit hard-links unchanged files into its revision, so they are
    # hashed once. Writes never change a file in place (always a new inode), so the key changes with the bytes.
    st = path.stat()
    return algo, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _file_digest(path: Path, algo: str = 'sha256') -> str:
    """sha256 of a file (``algo='sha256'``) or its git blob id (``'git-sha1'``, what ``git hash-object`` gives),
    memoised per inode, so a mirror of large weights hashes each once."""
    key = _digest_key(path, algo)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    h = hashlib.sha256() if algo == 'sha256' else hashlib.sha1(f'blob {key[-1]}\0'.encode())
    with path.open('rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    digest = h.hexdigest()
    with _digests_lock:
        _digests[key] = digest
    return digest


def _file_sha256(path: Path) -> str:
    return _file_digest(path, 'sha256')


def _repo_files(repo_dir: Path) -> List[str]:
    """Repo-relative POSIX paths of every regular file, hidden files and folders and escaping links excluded."""
    files = []
    for path in sorted(repo_dir.rglob('*')):
        rel = path.relative_to(repo_dir)
        if any(_hidden(part, last=i == len(rel.parts) - 1) for i, part in enumerate(rel.parts)):
            continue
        if path.is_file() and _inside(path, repo_dir):
            files.append(rel.as_posix())
    return files


def _folder_commit_hash(folder: Path) -> str:
    """40-hex commit id of a folder: sha1 over its file names and content hashes (changes with any file)."""
    h = hashlib.sha1()
    for rel in _repo_files(folder):
        h.update(f'{rel}\0{_file_sha256(folder / rel)}\n'.encode())
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
    repo_dir = Path(repo_dir)
    history = _history(repo_dir)
    revisions = _store_entry(repo_dir, _REVISIONS, folder=True)  # checked even when unused: S3 (writes go there)
    if history is None:
        head = _folder_commit_hash(repo_dir)
        if revision in (DEFAULT_BRANCH, head):
            return repo_dir, head
    else:
        head = history[-1]
        commit = head if revision == DEFAULT_BRANCH else revision
        folder = _store_entry(revisions, commit, folder=True) if revisions and commit in history else None
        if folder is not None and _inside(folder, repo_dir):
            return folder, commit
    raise _HubError(HTTPStatus.NOT_FOUND,
                    f'Invalid rev id: {revision[:100]} (repo {repo_dir.parent.name}/{repo_dir.name} has '
                    f'{DEFAULT_BRANCH} = {head}).', 'RevisionNotFound')


def repo_commit_hash(repo_dir: Union[str, Path]) -> str:
    """40-hex commit id that ``main`` of a repo folder is served under (content-derived for a plain folder)."""
    return served_revision(repo_dir)[1]


def _child_dirs(folder: Path, name: str) -> Iterator[Path]:
    """The folders in ``folder`` named ``name`` case-insensitively (as Hub ids are), the exact spelling first."""
    exact = folder / name
    if exact.is_dir():
        yield exact
    wanted = name.casefold()
    try:
        with os.scandir(folder) as entries:
            matches = [e.name for e in entries if e.name != name and e.name.casefold() == wanted
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
    for org in _child_dirs(root, parts[0]):  # ACME/two and acme/one made by hand: each id finds its repo
        for repo_dir in _child_dirs(org, parts[1]):
            return repo_dir if _inside(repo_dir, root) else None
    return None


def _folder_oid(folder: Path, files: Sequence[str], key: str) -> str:
    """A tree id for the folder ``key`` of a revision (``files``: its file list) that changes with anything below it."""
    h = hashlib.sha1()
    for rel in files:
        if rel.startswith(key + '/'):
            h.update(f'{rel}\0{_file_digest(folder / rel, "git-sha1")}\n'.encode())
    return h.hexdigest()


class _ReadRoutes(BaseHTTPRequestHandler):
    """The read side: download routes, model info, tree; write requests get a 403 (see :class:`_WriteRoutes`)."""
    server_version = 'timm-cra-hub/3'
    protocol_version = 'HTTP/1.1'  # keep-alive, as the Hub client pools connections

    def setup(self):
        # A socket timeout bounds every read and write: a half-open or stalled client frees its thread.
        self.timeout = self.server.request_timeout
        super().setup()

    # ---- plumbing -------------------------------------------------------------------------------------
    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

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
        headers = {'Content-Type': 'application/json', 'X-Error-Message': message.encode('ascii', 'replace').decode()}
        if code:
            headers['X-Error-Code'] = code
        if commit:
            headers['X-Repo-Commit'] = commit  # lets the client cache "file does not exist" per commit
        self._send(status, headers, json.dumps({'error': message, **(fields or {})}).encode(), head_only)

    # Request bodies (write side). An answer sent before the body is read must not leave it in the stream,
    # where keep-alive would parse it as the next request: small bodies are drained, large ones close.
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

    def _read_body(self, limit: int) -> bytes:
        return b''.join(self._iter_body(limit))

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
        if not super().parse_request():
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

    def _check_revision(self, repo_id: str, revision: str) -> Tuple[Path, str]:
        """(folder holding the files of ``revision``, its commit); read once per request, so a commit landing
        meanwhile never mixes two revisions in one answer."""
        repo_dir = self._find_repo(repo_id)
        if repo_dir is None:
            raise _HubError(HTTPStatus.NOT_FOUND, f'Repository {repo_id[:200]} not found.', 'RepoNotFound')
        return served_revision(repo_dir, revision)

    def _model_info(self, repo_id: str, revision: str, head_only: bool):
        folder, commit = self._check_revision(repo_id, revision)
        body = json.dumps({
            'id': repo_id, 'modelId': repo_id, 'sha': commit, 'private': False, 'disabled': False,
            'gated': False, 'tags': [], 'siblings': [{'rfilename': f} for f in _repo_files(folder)],
        }).encode()
        self._send(HTTPStatus.OK, {'Content-Type': 'application/json', 'X-Repo-Commit': commit}, body, head_only)

    def _tree(self, repo_id: str, revision: str, path: str, head_only: bool):
        folder, commit = self._check_revision(repo_id, revision)
        recursive = parse_qs(urlsplit(self.path).query).get('recursive', ['false'])[0].lower() in ('true', '1')
        prefix = ''
        if path:
            try:
                prefix = '/'.join(safe_parts(path)) + '/'
            except _HubError:
                prefix = None
        files = [f for f in _repo_files(folder) if prefix is not None and f.startswith(prefix)]
        if not files and path:
            raise _HubError(HTTPStatus.NOT_FOUND, f'{path[:200]} is not a folder of "{revision}" of {repo_id}.',
                            'EntryNotFound', commit)
        entries: Dict[str, dict] = {}
        for rel in files:
            sub = rel[len(prefix):].split('/')
            depth = len(sub) if recursive else 1
            for i in range(1, min(depth, len(sub) - 1) + 1):  # the folders on the way
                key = prefix + '/'.join(sub[:i])
                if key not in entries:
                    entries[key] = {'type': 'directory', 'oid': _folder_oid(folder, files, key), 'path': key}
            if recursive or len(sub) == 1:
                entries[rel] = {'type': 'file', 'oid': _file_digest(folder / rel, 'git-sha1'),
                                'size': (folder / rel).stat().st_size, 'path': rel}
        body = json.dumps([entries[k] for k in sorted(entries)]).encode()
        self._send(HTTPStatus.OK, {'Content-Type': 'application/json', 'X-Repo-Commit': commit}, body, head_only)

    def _resolve(self, repo_id: str, revision: str, file_parts: Sequence[str], head_only: bool):
        folder, commit = self._check_revision(repo_id, revision)
        filename = '/'.join(file_parts)
        missing = _HubError(HTTPStatus.NOT_FOUND, f'{filename[:300]} does not exist on "{revision}" of {repo_id}.',
                            'EntryNotFound', commit)
        try:
            parts = safe_parts(filename, 'file name')
        except _HubError:
            raise missing
        if len(parts) != len(file_parts):  # a part held an encoded '/'
            raise missing
        path = folder.joinpath(*parts)
        if not path.is_file() or not _inside(path, folder):
            raise missing
        self._send_file(path, commit, head_only)

    def _send_file(self, path: Path, commit: str, head_only: bool):
        size = path.stat().st_size
        headers = {
            'ETag': f'"{_file_sha256(path)}"',
            'X-Repo-Commit': commit,
            'Accept-Ranges': 'bytes',
            'Content-Type': 'application/octet-stream',
            'Last-Modified': formatdate(path.stat().st_mtime, usegmt=True),
        }
        start, end, status = 0, size - 1, HTTPStatus.OK
        range_header = self.headers.get('Range')
        if range_header:
            m = _RANGE_RE.match(range_header.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:  # suffix range: the last N bytes
                    start = max(0, size - int(m.group(2)))
                if start >= size or start > end:
                    self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {'Content-Range': f'bytes */{size}'})
                    return
                status = HTTPStatus.PARTIAL_CONTENT
                headers['Content-Range'] = f'bytes {start}-{end}/{size}'
        length = end - start + 1 if size else 0
        self.send_response(status)
        for k, v in {**headers, 'Content-Length': str(length)}.items():
            self.send_header(k, v)
        self.end_headers()
        if head_only or not length:
            return
        self._write_file_body(path, start, length)

    def _write_file_body(self, path: Path, start: int, length: int):
        """Stream ``length`` bytes of ``path`` from ``start`` (a hook for fault-injecting test servers)."""
        with path.open('rb') as f:
            f.seek(start)
            remaining = length
            while remaining:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _write_route(self, method: str):
        self._body_read = False  # an answer drains or closes: the body must not be parsed as a request
        self._error(HTTPStatus.FORBIDDEN, None, 'This Hub server is read-only: start it with --allow-write and a '
                                                f'--write-token (or {WRITE_TOKEN_ENV}) to accept uploads.', False)


# ==== write side ===========================================================================================
# What ``HfApi.create_repo`` + ``upload_folder`` / ``create_commit`` call, so ``scripts/publish.py --push`` can
# run against a loopback Hub in CI: ``POST /api/repos/create``, ``/api/models/{id}/preupload/main``,
# ``/api/models/{id}/commit/main`` (NDJSON), ``/api/validate-yaml`` and the LFS batch API
# (``POST /{id}.git/info/lfs/objects/batch``, a signed ``PUT`` URL streamed to disk and checked against the
# object's sha256 and size, and a verify step). Every write needs ``Authorization: Bearer <token>`` and lands
# in the FIRST root (``POST /api/models/{id}/paths-info/{revision}``, which ``CommitOperationCopy`` asks, reads
# any root). Preupload answers ``regular`` (content inside the commit) for every file below
# ``lfs_threshold`` (default: all files), because huggingface_hub uploads ``lfs`` files with Xet whenever
# ``hf_xet`` is installed, which this server does not speak; a client without Xet (``HF_HUB_DISABLE_XET=1``)
# can use ``--lfs-threshold`` and plain LFS::
#
#     TIMM_CRA_HUB_WRITE_TOKEN=secret python -m timm_cra.hub.server --root /tmp/hub --allow-write
#
# A commit is one step. Under the repo's lock, every operation is checked against the current revision
# (paths, deleted files exist, LFS objects uploaded with the right sha256 and size, no path both a file and a
# folder, ``parentCommit``) before anything is written; the new revision is then staged completely in
# ``.hub-revisions/.hub-tmp-*`` (unchanged files and LFS objects hard-linked, so no copy), renamed to
# ``.hub-revisions/<commit>`` and made ``main`` by ONE atomic replace of ``.hub-head``. A refused, failed (disk
# full) or killed commit leaves ``main`` as it was; a writable server removes the leftovers when it starts.
# A commit body over 1 MiB is spooled to a flock'ed scratch folder in ``.hub-revisions`` and each large file
# decoded there while its line is parsed, so memory stays at a few MiB whatever the file sizes.
# The repo's lock is a thread lock plus ``flock`` on the repo folder, so servers in several processes on one
# root queue too (a commit validated against a stale head would drop the other's commit); repo creation
# flocks the root, an LFS upload its temp file. Startup clean-up removes only what it can lock, so it never
# deletes another live server's staging. The store entries (``.hub-revisions`` and each revision in it,
# ``.hub-head``, ``.hub-lfs`` and each object in it) must be real folders / files: a symlink there is
# refused, never followed or deleted through.

_PAUSE_ENV = 'TIMM_CRA_HUB_TEST_PAUSE_BEFORE_SWITCH'  # tests only: seconds to wait between staging and switch
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _disk_error(e: OSError, what: str) -> _HubError:
    if e.errno in _DISK_FULL:
        return _HubError(HTTPStatus.INSUFFICIENT_STORAGE,
                         f'{what} refused: the server is out of disk space ({e.strerror}); nothing was changed. '
                         f'Free space on the server and retry.')
    return _HubError(HTTPStatus.INTERNAL_SERVER_ERROR, f'{what} failed ({e.strerror}); nothing was changed.')


def _fsynced_write(dest: Path, data: bytes) -> None:
    with open(dest, 'xb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _flock(folder: Path, wait: float) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` itself (a repo or a root: no lock file is written): yields True,
    or False if another holder (thread or process) kept it for ``wait`` seconds."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise _disk_error(e, f'Locking {folder}')
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    acquired = False
                    break
                time.sleep(0.02)
        yield acquired
    finally:
        os.close(fd)  # releases the lock


def _real_store_dir(parent: Path, name: str) -> Path:
    """``parent/name``, created if missing, refused if it is anything but a real folder."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(parent / name)
    return _store_entry(parent, name, folder=True)


def _link_or_copy(src: Path, dest: Path, link: bool) -> None:
    """Hard-link ``src`` (immutable: a revision file or an LFS object) onto ``dest``, or copy it."""
    if link:
        try:
            os.link(src, dest)
            return
        except OSError as e:
            if e.errno in _DISK_FULL:
                raise
    with src.open('rb') as fin, open(dest, 'xb') as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)
        fout.flush()
        os.fsync(fout.fileno())


def create_repo_folder(root: Path, org: str, name: str) -> Path:
    """Create ``root/org/name`` holding one empty commit, in one rename (a kill leaves only a temp folder).
    An org folder spelled in another case is reused: ``ACME/two`` goes to ``acme/`` (one org per id)."""
    org_dir = next(_child_dirs(root, org), root / org)
    org_dir.mkdir(exist_ok=True)
    if not _inside(org_dir, root):
        raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid repo id {org}/{name}.')
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=org_dir))
    try:
        empty = hashlib.sha1().hexdigest()  # _folder_commit_hash of an empty folder
        (tmp / _REVISIONS / empty).mkdir(parents=True)
        _fsynced_write(tmp / _HEAD, f'{empty}\n'.encode())
        tmp.chmod(0o755)
        os.rename(tmp, org_dir / name)  # fails if a racing create won (the caller holds the create locks)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return org_dir / name


def _stage_revision(revisions: Path, files: Dict[str, Union[bytes, Tuple[Path, bool]]], created: List[Path]) -> str:
    """Write ``files`` (repo path -> bytes, or (source file, may hard-link)) into ``revisions/<commit>`` (a
    staging folder renamed in one step; an existing revision with the same content is reused); returns the
    commit. A revision folder made here is appended to ``created``."""
    staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=revisions))
    try:
        for rel, src in sorted(files.items()):
            dest = staging.joinpath(*rel.split('/'))
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                _fsynced_write(dest, src)
            else:
                _link_or_copy(src[0], dest, link=src[1])
        for folder in [staging, *(p for p in staging.rglob('*') if p.is_dir())]:
            folder.chmod(0o755)  # mkdtemp's 0700 would hide a revision from other users of the mirror
        commit = _folder_commit_hash(staging)
        if not _store_entry(revisions, commit, folder=True):  # else: same content as an earlier commit, reused
            os.rename(staging, revisions / commit)
            created.append(revisions / commit)
        return commit
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def commit_revision(repo_dir: Path, files: Dict[str, Union[bytes, Tuple[Path, bool]]]) -> str:
    """Stage ``files`` (repo path -> bytes, or (source file, may hard-link)) as a new revision of ``repo_dir``
    and make it ``main`` with one atomic replace of ``.hub-head``; returns its commit. The caller holds the
    repo's lock and has checked every path. A plain folder's own files first become its first revision (copied:
    they may be edited later), so its content commit hash keeps resolving."""
    revisions = _real_store_dir(repo_dir, _REVISIONS)
    created: List[Path] = []
    try:
        history = _history(repo_dir)
        if history is None:
            plain = _stage_revision(revisions, {rel: (repo_dir / rel, False) for rel in _repo_files(repo_dir)},
                                    created)
            history = [plain]
            files = {rel: (revisions / plain / rel, True) if src == (repo_dir / rel, False) else src
                     for rel, src in files.items()}
        commit = _stage_revision(revisions, files, created)
        pause = float(os.environ.get(_PAUSE_ENV) or 0)
        if pause > 0:
            time.sleep(min(pause, 600))
        with atomic_write(repo_dir / _HEAD, 'w', prefix=_TMP_PREFIX, suffix='', perms=0o644) as f:
            f.write(''.join(f'{c}\n' for c in history + [commit]))
        created.clear()  # switched: they are part of the history now
        return commit
    finally:
        for folder in created:  # failed before the switch: no revision folder outside the history is left
            shutil.rmtree(folder, ignore_errors=True)
        _drop_unused_revisions(repo_dir)


def _remove_entry(path: Path) -> None:
    """Remove a file, a symlink (the link itself) or a real folder (``rmtree`` never follows links)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _remove_unless_locked(path: Path) -> int:
    """Remove ``path`` (as :func:`_remove_entry`) unless a live writer holds its ``flock``; 1 if removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # a symlink (or gone): not a writer's
        _remove_entry(path)
        return 1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    finally:
        os.close(fd)
    _remove_entry(path)
    return 1


def _drop_unused_revisions(repo_dir: Path) -> None:
    """Leave a plain folder (no history) as it was: remove the ``.hub-revisions`` a failed commit made, if empty."""
    with contextlib.suppress(OSError, _HubError):
        if _history(repo_dir) is None:
            os.rmdir(repo_dir / _REVISIONS)


def _repo_leftovers(repo: Path) -> List[Path]:
    """Temp files of a repo and revision folders that never became part of its history."""
    leftovers = sorted(repo.glob(_TMP_PREFIX + '*'))
    try:
        history = _history(repo)
        revisions = _store_entry(repo, _REVISIONS, folder=True)
    except _HubError:
        return leftovers  # a corrupt head or a linked store is reported on use; never delete on a guess
    if history is not None and revisions is not None:
        leftovers += [entry for entry in sorted(revisions.iterdir()) if entry.name not in history]
    return leftovers


def remove_write_leftovers(root: Path) -> int:
    """Remove what killed writes left in a writable root: temp files and staging folders (``.hub-tmp-*``) and
    revision folders that never became part of a history. Only what this process can lock is removed (another
    server on the root may be writing it), and nothing is followed through a symlink. Returns how many
    entries were removed."""
    if not root.is_dir():
        return 0
    removed = 0
    with contextlib.suppress(_HubError):
        store = _store_entry(root, _STORE, folder=True)
        for tmp in sorted(store.glob(_TMP_PREFIX + '*')) if store else []:
            removed += _remove_unless_locked(tmp)
    orgs = [org for org in sorted(root.iterdir())
            if not org.name.startswith('.') and not org.is_symlink() and org.is_dir()]
    org_temps = [tmp for org in orgs for tmp in sorted(org.glob(_TMP_PREFIX + '*'))]
    if org_temps:
        with contextlib.suppress(_HubError), _flock(root, wait=0) as locked:
            for tmp in org_temps if locked else []:  # unlocked: another server is creating a repo
                _remove_entry(tmp)
                removed += 1
    for org in orgs:
        for repo in sorted(org.iterdir()):
            if repo.name.startswith('.') or repo.is_symlink() or not repo.is_dir() or not _repo_leftovers(repo):
                continue
            with contextlib.suppress(_HubError), _flock(repo, wait=0) as locked:
                for entry in _repo_leftovers(repo) if locked else []:  # listed again under the lock
                    removed += _remove_unless_locked(entry)  # a commit being parsed flocks its scratch
    return removed


def _validate_new_repo_id(org, name) -> str:
    """``org/name`` as the Hub accepts it (``huggingface_hub.utils.validate_repo_id``), both parts required."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    if not (isinstance(org, str) and org and isinstance(name, str) and name):
        raise _HubError(HTTPStatus.BAD_REQUEST,
                        'Give the repo id as <org>/<name>, both strings (this server has no users).')
    repo_id = f'{org}/{name}'
    safe_parts(repo_id, 'repo id')
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid repo id {repo_id[:200]!r}: {str(e).splitlines()[0]}')
    return repo_id


class _Decoded:
    """The content of a large ``file`` line of a commit, decoded to ``path`` while parsing (``error``: bad base64)."""

    def __init__(self, path: Path, error: bool = False):
        self.path, self.error = path, error


_SPOOL_OVER = 1 << 20  # a commit body over this (or chunked) is spooled to disk instead of held in memory
_BIG_LINE = 1 << 16  # a spooled line over this is parsed without holding it: its content is decoded to a file
_CONTENT_KEY = re.compile(rb'"content"\s*:\s*"')


def _line_ends(f) -> List[int]:
    """Offsets of the line ends of the file ``f`` (its size if the last line has none), read in chunks."""
    ends, pos = [], 0
    for chunk in iter(lambda: f.read(_CHUNK), b''):
        i = chunk.find(b'\n')
        while i >= 0:
            ends.append(pos + i)
            i = chunk.find(b'\n', i + 1)
        pos += len(chunk)
    if not ends or ends[-1] != pos - 1:
        ends.append(pos)
    return ends


def _big_line(f, start: int, length: int, scratch: Path) -> Optional[object]:
    """A large NDJSON line ``f[start:start+length]`` parsed with its ``value.content`` string (base64: no quote or
    backslash inside) decoded in chunks to a file in ``scratch`` (a :class:`_Decoded`); None if it is not
    such a line."""
    f.seek(start)
    head = f.read(_BIG_LINE)
    m = _CONTENT_KEY.search(head)
    if m is None:
        return None
    value_start, line_end = start + m.end(), start + length
    f.seek(value_start)
    value_end = None
    while value_end is None and f.tell() < line_end:  # the closing quote (a backslash first: not base64)
        chunk = f.read(min(_CHUNK, line_end - f.tell()))
        stops = [i for i in (chunk.find(b'"'), chunk.find(b'\\')) if i >= 0]
        if stops:
            value_end = f.tell() - len(chunk) + min(stops)
    if value_end is None or line_end - value_end > _BIG_LINE:
        return None
    f.seek(value_end)
    rest = f.read(line_end - value_end)
    if not rest.startswith(b'"'):
        return None
    parsed = json.loads(head[:m.end()] + rest)  # the line with an empty content string
    value = parsed.get('value') if isinstance(parsed, dict) else None
    if not (isinstance(value, dict) and value.get('content') == ''):
        return None
    value['content'] = _decode_to_file(f, value_start, value_end, scratch)
    return parsed


def _ndjson_lines(body: Path, scratch: Path) -> Iterator[object]:
    """Each non-blank line of the NDJSON file ``body``, parsed; memory stays at a few chunks, as a line over
    :data:`_BIG_LINE` has its file content decoded to ``scratch`` (a line that does not fit is parsed whole)."""
    with open(body, 'rb') as f:
        start = 0
        for end in _line_ends(f):
            line_start, length, start = start, end - start, end + 1
            parsed = _big_line(f, line_start, length, scratch) if length > _BIG_LINE else None
            if parsed is None:
                f.seek(line_start)
                line = f.read(length)
                if not line.strip():
                    continue
                parsed = json.loads(line)
            yield parsed


def _decode_to_file(f, start: int, end: int, scratch: Path) -> _Decoded:
    """base64-decode ``f[start:end]`` in chunks into a new file in ``scratch``."""
    fd, out = tempfile.mkstemp(dir=scratch)
    os.fchmod(fd, 0o644)  # hard-linked into the revision: readable as any revision file
    with os.fdopen(fd, 'wb') as dest:
        if (end - start) % 4:
            return _Decoded(Path(out), error=True)
        f.seek(start)
        while f.tell() < end:
            try:
                dest.write(base64.b64decode(f.read(min(4 * _CHUNK, end - f.tell())), validate=True))
            except ValueError:
                return _Decoded(Path(out), error=True)
        dest.flush()
        os.fsync(dest.fileno())
    return _Decoded(Path(out))


class _WriteRoutes(_ReadRoutes):
    """The write side's routes (a server without a write token answers them as :class:`_ReadRoutes` does)."""

    def _write_route(self, method: str):
        if not self.server.writable:
            return super()._write_route(method)
        self._body_read = False
        parts = self._parts()
        try:
            self._authorize()
            if method == 'PUT' and len(parts) == 4 and parts[0] == '.lfs-upload':
                return self._lfs_put('/'.join(parts[1:3]), parts[3])
            if method == 'POST':
                if parts == ['api', 'repos', 'create']:
                    return self._create_repo()
                if parts == ['api', 'validate-yaml']:
                    return self._json({'errors': [], 'warnings': []})
                if len(parts) == 6 and parts[:2] == ['api', 'models'] and parts[4] in (
                        'preupload', 'commit', 'paths-info'):
                    repo_id = '/'.join(parts[2:4])
                    if parts[4] == 'preupload':
                        return self._preupload(repo_id, parts[5])
                    if parts[4] == 'paths-info':
                        return self._paths_info(repo_id, parts[5])
                    return self._commit(repo_id, parts[5])
                if len(parts) == 6 and parts[1].endswith('.git') and parts[2:] == ['info', 'lfs', 'objects', 'batch']:
                    return self._lfs_batch(parts[0] + '/' + parts[1][:-len('.git')])
                if len(parts) == 4 and parts[0] == '.lfs-verify':
                    return self._lfs_verify('/'.join(parts[1:3]), parts[3])
            raise _HubError(HTTPStatus.NOT_FOUND, f'Not a Hub write route: {method} {self.path[:300]}')
        except _HubError as e:
            self._error(e.status, e.code, e.message, False, e.commit, e.fields)

    def _authorize(self):
        parts = self._parts()
        if parts and parts[0] == '.lfs-upload':  # signed URL instead: the client sends no token with the PUT
            return
        auth = self.headers.get('Authorization', '')
        if not auth.startswith('Bearer '):
            raise _HubError(HTTPStatus.UNAUTHORIZED, 'Writing needs an "Authorization: Bearer <token>" header.')
        if not hmac.compare_digest(auth[len('Bearer '):].encode(), self.server.write_token.encode()):
            raise _HubError(HTTPStatus.FORBIDDEN, 'Invalid write token for this Hub server.')

    def _body_json(self):
        try:
            return json.loads(self._read_body(self.server.max_json_bytes))
        except (ValueError, UnicodeDecodeError):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Request body is not valid JSON.')

    def _writable_repo(self, repo_id: str, revision: Optional[str] = DEFAULT_BRANCH) -> Path:
        """The repo folder in the first root (writes never touch later roots)."""
        parts = safe_parts(repo_id, 'repo id')
        if len(parts) != 2:
            raise _HubError(HTTPStatus.BAD_REQUEST, f'Repo id {repo_id!r} must be <org>/<name>.')
        if revision is not None and revision != DEFAULT_BRANCH:
            raise _HubError(HTTPStatus.BAD_REQUEST,
                            f'Only the {DEFAULT_BRANCH} branch takes commits, not {revision[:100]!r}.')
        root = self.server.roots[0]
        repo_dir = _find_repo_in(root, repo_id)
        if repo_dir is None:
            found = self._find_repo(repo_id)
            if found is None:
                raise _HubError(HTTPStatus.NOT_FOUND, f'Repository {repo_id} not found (create it first).',
                                'RepoNotFound')
            # No RepoNotFound code: the client would report a missing repo, and the repo is there.
            raise _HubError(HTTPStatus.FORBIDDEN, f'Repository {repo_id} is in the read-only root {found.parents[1]}; '
                                                  f'only the first --root ({root}) takes writes: start a server with '
                                                  f'--allow-write on that root to write to it.')
        return repo_dir

    def _create_repo(self):
        body = self._body_json()
        if not isinstance(body, dict):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Request body must be a JSON object.')
        if body.get('type', 'model') not in (None, 'model'):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Only model repos are served.')
        org, name = body.get('organization'), body.get('name')
        repo_id = _validate_new_repo_id(org, name)
        url = f'{self.server.endpoint}/{repo_id}'
        with self.server.create_lock, _flock(self.server.roots[0], self.server.lock_wait) as locked:
            if not locked:
                raise _HubError(HTTPStatus.SERVICE_UNAVAILABLE, 'Another server on this root is creating a repo; '
                                                                'retry.')
            existing = self._find_repo(repo_id)  # case-insensitive, as on the Hub: O/A is o/a
            if existing is not None:  # the Hub's 409 names the repo's url: create_repo(exist_ok=True) reads it
                existing_id = f'{existing.parent.name}/{existing.name}'
                raise _HubError(HTTPStatus.CONFLICT, f'You already created this model repo: {existing_id}',
                                fields={'url': f'{self.server.endpoint}/{existing_id}'})
            try:
                create_repo_folder(self.server.roots[0], org, name)
            except OSError as e:
                raise _disk_error(e, 'Creating the repo')
        self._json({'url': url, 'name': repo_id, 'id': repo_id})

    def _preupload(self, repo_id: str, revision: str):
        repo_dir = self._writable_repo(repo_id, revision)
        body = self._body_json()
        files = body.get('files') if isinstance(body, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Expected {"files": [{"path", "size", "sample"}, ...]}.')
        folder, commit = served_revision(repo_dir)
        threshold = self.server.lfs_threshold
        answer = []
        for f in files:
            path = f.get('path')
            parts = safe_parts(path)
            size = f.get('size')
            lfs = threshold is not None and isinstance(size, int) and size >= threshold
            current = self._dest(folder, parts)
            oid = None
            if current.is_file():  # lets the client skip unchanged files
                oid = _file_digest(current, 'sha256' if lfs else 'git-sha1')
            answer.append({'path': path, 'uploadMode': 'lfs' if lfs else 'regular', 'shouldIgnore': False,
                           'oid': oid})
        self._json({'files': answer, 'commitOid': commit})

    def _paths_info(self, repo_id: str, revision: str):
        """What ``HfApi.get_paths_info`` reads (``CommitOperationCopy`` asks it): the given paths that exist in
        ``revision``. Every file is described as an LFS object, so a copy names it by sha256 and the commit
        hard-links it, with no download and re-upload."""
        folder, commit = self._check_revision(repo_id, revision)
        try:
            form = parse_qs(self._read_body(self.server.max_json_bytes).decode('utf-8'))
        except UnicodeDecodeError:
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Expected a form body: paths=<path>&paths=...')
        files = _repo_files(folder)
        answer = []
        for path in dict.fromkeys(form.get('paths', [])):
            try:
                rel = '/'.join(safe_parts(path.rstrip('/')))
            except _HubError:
                continue  # as on the Hub, a path that does not exist is left out
            if rel in files:
                size, sha256 = (folder / rel).stat().st_size, _file_sha256(folder / rel)
                pointer = f'version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n'
                answer.append({'type': 'file', 'path': rel, 'oid': _file_digest(folder / rel, 'git-sha1'),
                               'size': size, 'lfs': {'oid': sha256, 'size': size, 'pointerSize': len(pointer)}})
            elif any(f.startswith(rel + '/') for f in files):
                answer.append({'type': 'directory', 'path': rel, 'oid': _folder_oid(folder, files, rel)})
        self._json(answer, headers={'X-Repo-Commit': commit})

    @staticmethod
    def _dest(folder: Path, parts: Sequence[str]) -> Path:
        """Where ``parts`` is in a revision folder; refused if a link is on the way (a plain folder may hold them)."""
        path = folder
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Cannot write {"/".join(parts)}: {part} is a link.')
        return path

    # LFS: batch -> signed PUT (no token is sent with it) -> verify -> the commit names the oid.
    def _signature(self, repo_id: str, oid: str, size: int) -> str:
        return hmac.new(self.server.url_secret, f'{repo_id}\0{oid}\0{size}'.encode(), 'sha256').hexdigest()

    def _store(self) -> Path:
        return _real_store_dir(self.server.roots[0], _STORE)

    def _lfs_object(self, folder: Path, oid: str) -> Optional[Tuple[Path, bool]]:
        """Where the bytes of ``oid`` are, and whether they may be hard-linked: the upload store (kept, as a
        content-addressed store), or a file of the revision ``folder`` (an unchanged re-upload or a rename)."""
        store = _store_entry(self.server.roots[0], _STORE, folder=True)
        obj = _store_entry(store, oid, folder=False) if store else None
        if obj is not None:
            return obj, True
        for rel in _repo_files(folder):
            if _file_sha256(folder / rel) == oid:
                return folder / rel, folder.parent.name == _REVISIONS  # a plain folder's files may change: copy
        return None

    def _lfs_batch(self, repo_id: str):
        repo_dir = self._writable_repo(repo_id, None)
        body = self._body_json()
        if not isinstance(body, dict) or body.get('operation') != 'upload' or not isinstance(body.get('objects'), list):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Only LFS "upload" batches are served.')
        folder = served_revision(repo_dir)[0]
        out = []
        for obj in body['objects']:
            oid, size = (obj.get('oid'), obj.get('size')) if isinstance(obj, dict) else (None, None)
            if not (isinstance(oid, str) and _OID_RE.match(oid) and isinstance(size, int) and size >= 0):
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid LFS object {obj!r}.')
            entry = {'oid': oid, 'size': size}
            if size > self.server.max_upload_bytes:
                entry['error'] = {'code': 413, 'message': f'Object over {self.server.max_upload_bytes} bytes.'}
            elif self._lfs_object(folder, oid) is None:
                query = f'size={size}&sig={self._signature(repo_id, oid, size)}'
                entry['actions'] = {
                    'upload': {'href': f'{self.server.endpoint}/.lfs-upload/{repo_id}/{oid}?{query}'},
                    'verify': {'href': f'{self.server.endpoint}/.lfs-verify/{repo_id}/{oid}'},
                }
            out.append(entry)
        self._json({'transfer': 'basic', 'objects': out, 'hash_algo': 'sha256'})

    def _lfs_put(self, repo_id: str, oid: str):
        """Stream the object to a temp file in the store, hashing as it comes (memory stays at one chunk);
        only bytes matching the signed oid and size are renamed into the store."""
        query = parse_qs(urlsplit(self.path).query)
        try:
            size = int(query['size'][0])
            sig = query['sig'][0]
        except (KeyError, ValueError, IndexError):
            raise _HubError(HTTPStatus.FORBIDDEN, 'Upload URL is not signed by this server.')
        if not (_OID_RE.match(oid) and hmac.compare_digest(sig, self._signature(repo_id, oid, size))):
            raise _HubError(HTTPStatus.FORBIDDEN, 'Upload URL is not signed by this server.')
        self._writable_repo(repo_id, None)
        chunked = 'chunked' in self.headers.get('Transfer-Encoding', '').lower()
        if not chunked and (self.headers.get('Content-Length') or '').strip() != str(size):
            raise _HubError(HTTPStatus.BAD_REQUEST, f'Upload must be exactly {size} bytes.')
        store = self._store()
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=store)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # in flight: another server's startup clean-up leaves it alone
            h, received = hashlib.sha256(), 0
            with os.fdopen(fd, 'wb', buffering=0) as f:  # unbuffered: a failed write fails here, not at close
                for chunk in self._iter_body(size):
                    h.update(chunk)
                    received += len(chunk)
                    view = memoryview(chunk)
                    try:
                        while view:
                            view = view[f.write(view):]
                    except OSError as e:
                        self.close_connection = True
                        raise _disk_error(e, 'Upload')
                try:
                    os.fsync(f.fileno())
                except OSError as e:
                    raise _disk_error(e, 'Upload')
            if received != size or h.hexdigest() != oid:
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Uploaded bytes do not match oid {oid} / size {size}.')
            os.chmod(tmp, 0o644)
            os.replace(tmp, store / oid)
            with _digests_lock:  # hashed while streaming: the commit's check need not read it again
                _digests[_digest_key(store / oid, 'sha256')] = oid
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        self._send(HTTPStatus.OK, {})

    def _lfs_verify(self, repo_id: str, oid: str):
        self._writable_repo(repo_id, None)
        body = self._body_json()
        path = _store_entry(self._store(), oid, folder=False) if _OID_RE.match(oid) else None
        if path is None or not isinstance(body, dict) or body.get('size') != path.stat().st_size:
            raise _HubError(HTTPStatus.NOT_FOUND, f'LFS object {oid} was not uploaded.')
        self._json({'oid': oid, 'size': path.stat().st_size})

    def _spooled(self) -> bool:
        """Whether the commit body is large enough (or of unknown size) to be spooled to disk."""
        length = (self.headers.get('Content-Length') or '').strip()
        return 'chunked' in self.headers.get('Transfer-Encoding', '').lower() or not length.isdigit() or \
            int(length) > _SPOOL_OVER

    def _parse_commit(self, scratch: Optional[Path]) -> Tuple[dict, list]:
        """The header and operations of an NDJSON commit body, checked for form (not yet against the repo).
        With ``scratch``, the body is spooled there and each large file's content decoded there as its line is
        parsed, so memory stays bounded (a few MiB) whatever the size of the files sent inside the commit."""
        try:
            if scratch is None:
                lines = [json.loads(line) for line in self._read_body(_SPOOL_OVER).splitlines() if line.strip()]
            else:
                body = scratch / 'body'
                try:
                    with open(body, 'xb') as f:
                        for chunk in self._iter_body(self.server.max_commit_bytes):
                            f.write(chunk)
                except OSError as e:
                    self.close_connection = True
                    raise _disk_error(e, 'Commit')
                lines = list(_ndjson_lines(body, scratch))
                body.unlink()
        except (ValueError, UnicodeDecodeError):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Commit body is not NDJSON.')
        except OSError as e:
            raise _disk_error(e, 'Commit')
        if not lines or not isinstance(lines[0], dict) or lines[0].get('key') != 'header':
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Commit body must start with a header line.')
        header = lines[0].get('value') or {}
        if not isinstance(header, dict):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Commit header must be an object.')
        ops = []
        for line in lines[1:]:
            key, value = (line.get('key'), line.get('value')) if isinstance(line, dict) else (None, None)
            if not isinstance(value, dict):
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Malformed commit line {str(line)[:200]}.')
            path = value.get('path')
            if key == 'deletedFolder' and isinstance(path, str) and path.endswith('/'):
                path = path[:-1]  # the client sends folders as 'name/'
            path = '/'.join(safe_parts(path))
            if key == 'file':
                if value.get('encoding', 'base64') != 'base64':
                    raise _HubError(HTTPStatus.BAD_REQUEST, 'Only base64 file content is accepted.')
                content = value.get('content', '')
                if isinstance(content, _Decoded):  # a large file, decoded to scratch while parsing
                    if content.error:
                        raise _HubError(HTTPStatus.BAD_REQUEST, f'Bad base64 content for {path}.')
                    ops.append(('file', path, (content.path, True)))
                    continue
                try:
                    ops.append(('file', path, base64.b64decode(content, validate=True)))
                except (ValueError, TypeError):
                    raise _HubError(HTTPStatus.BAD_REQUEST, f'Bad base64 content for {path}.')
            elif key == 'lfsFile':
                oid, size = value.get('oid'), value.get('size')
                if value.get('algo', 'sha256') != 'sha256' or not isinstance(oid, str) or not _OID_RE.match(oid):
                    raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid LFS oid for {path}.')
                if size is not None and not (isinstance(size, int) and size >= 0):
                    raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid LFS size for {path}.')
                ops.append(('lfsFile', path, (oid, size)))
            elif key in ('deletedFile', 'deletedFolder'):
                ops.append((key, path, None))
            else:
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Unsupported commit operation {str(key)[:50]!r}.')
        return header, ops

    def _commit(self, repo_id: str, revision: str):
        repo_dir = self._writable_repo(repo_id, revision)
        if parse_qs(urlsplit(self.path).query).get('create_pr'):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Pull requests are not supported by this server.')
        # Scratch space for a large body and its decoded files: next to the revisions (so they are hard-linked
        # in) and flock'ed, so another server's start-up clean-up leaves it alone.
        if not self._spooled():
            return self._commit_parsed(repo_id, repo_dir, None)
        try:
            scratch = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=_real_store_dir(repo_dir, _REVISIONS)))
        except OSError as e:
            raise _disk_error(e, 'Commit')
        try:
            with _flock(scratch, wait=0):
                self._commit_parsed(repo_id, repo_dir, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            _drop_unused_revisions(repo_dir)

    def _commit_parsed(self, repo_id: str, repo_dir: Path, scratch: Optional[Path]):
        header, ops = self._parse_commit(scratch)
        with self.server.repo_lock(repo_dir):
            folder, parent = served_revision(repo_dir)
            expected = header.get('parentCommit')
            if expected and expected != parent:
                raise _HubError(HTTPStatus.PRECONDITION_FAILED, f'parentCommit {str(expected)[:50]} is not the head '
                                                                f'of {DEFAULT_BRANCH} ({parent}); pull and retry.')
            # 1. The new revision as repo path -> source, checked against the current one; nothing written yet.
            link_current = folder != repo_dir  # revision files never change; a plain folder's may: copy them
            files: Dict[str, Union[bytes, Tuple[Path, bool]]] = {
                rel: (folder / rel, link_current) for rel in _repo_files(folder)}
            for key, path, arg in ops:
                if key in ('file', 'lfsFile'):
                    self._dest(folder, path.split('/'))
                if key == 'file':
                    files[path] = arg
                elif key == 'lfsFile':
                    oid, size = arg
                    found = self._lfs_object(folder, oid)
                    if found is None or _file_sha256(found[0]) != oid or (
                            size is not None and found[0].stat().st_size != size):
                        raise _HubError(HTTPStatus.BAD_REQUEST, f'LFS object {oid} for {path} was not uploaded.')
                    files[path] = found
                elif key == 'deletedFile':
                    if files.pop(path, None) is None:
                        raise _HubError(HTTPStatus.NOT_FOUND, f"A file with this name doesn't exist: {path}",
                                        'EntryNotFound')
                else:
                    below = [rel for rel in files if rel.startswith(path + '/')]
                    if not below:
                        raise _HubError(HTTPStatus.NOT_FOUND, f"A folder with this name doesn't exist: {path}",
                                        'EntryNotFound')
                    for rel in below:
                        del files[rel]
            for rel in files:
                parts = rel.split('/')
                for i in range(1, len(parts)):
                    if '/'.join(parts[:i]) in files:
                        raise _HubError(HTTPStatus.BAD_REQUEST,
                                        f'{"/".join(parts[:i])} would be both a file and a folder.')
            # 2. Stage it completely, then switch main to it in one step.
            try:
                commit = commit_revision(repo_dir, files)
            except OSError as e:
                raise _disk_error(e, 'Commit')
        self._json({'commitUrl': f'{self.server.endpoint}/{repo_id}/commit/{commit}', 'commitOid': commit,
                    'commitMessage': header.get('summary', ''), 'pullRequestUrl': None, 'success': True})


class _HubRequestHandler(_WriteRoutes):
    """The handler a :class:`HubFolderServer` uses: read routes, plus the write routes when it has a token."""


class HubFolderServer(ThreadingHTTPServer):
    """Threaded Hub-compatible server over one or more roots (the first root holding a repo wins).

    Use as a context manager (starts a background thread, stops it on exit) or call :meth:`start` /
    :meth:`stop`. ``port=0`` picks a free port; :attr:`endpoint` is the URL to give ``HF_ENDPOINT``.
    ``write_token`` turns on the write side (uploads land in the first root, whose leftovers of killed writes
    are removed here; requests must carry ``Authorization: Bearer <write_token>``); ``lfs_threshold`` (bytes)
    makes preupload ask for LFS from that size on (only for clients without Xet). ``request_timeout`` (seconds)
    closes a connection that makes no progress. ``handler_class`` lets tests inject faults.
    """
    daemon_threads = True
    handler_class = _HubRequestHandler

    def __init__(
            self,
            roots: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
            host: str = '127.0.0.1',
            port: int = 0,
            verbose: bool = False,
            write_token: Optional[str] = None,
            lfs_threshold: Optional[int] = None,
            max_upload_bytes: int = 16 << 30,
            request_timeout: float = 60.0,
    ):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        self.roots = [Path(r).resolve() for r in roots]
        self.verbose = verbose
        self.write_token = write_token or None
        self.lfs_threshold = lfs_threshold
        self.max_upload_bytes = max_upload_bytes
        self.max_commit_bytes = max_upload_bytes
        self.max_json_bytes = 16 << 20
        self.drain_limit = 64 << 20
        self.request_timeout = request_timeout
        self.url_secret = secrets.token_bytes(32)
        self.create_lock = threading.Lock()
        self.lock_wait = 600.0  # seconds a commit waits for another writer of its repo
        self._locks_guard = threading.Lock()
        self._repo_locks: Dict[str, threading.Lock] = {}
        self._thread: Optional[threading.Thread] = None
        if self.writable:
            remove_write_leftovers(self.roots[0])
        super().__init__((host, port), self.handler_class)

    def handle_error(self, request, client_address):
        # A client that hangs up or stalls past the timeout is routine for a server: one line, no traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            if self.verbose:
                print(f'{client_address[0]}:{client_address[1]}: {type(exc).__name__}: {exc}', file=sys.stderr)
            return
        super().handle_error(request, client_address)

    @contextlib.contextmanager
    def repo_lock(self, repo_dir: Path) -> Iterator[None]:
        """Hold the lock serialising commits to one repo folder: threads of this server, then other processes
        (``flock`` on the folder)."""
        with self._locks_guard:
            lock = self._repo_locks.setdefault(str(repo_dir), threading.Lock())
        with lock, _flock(repo_dir, self.lock_wait) as locked:
            if not locked:
                raise _HubError(HTTPStatus.SERVICE_UNAVAILABLE, f'Another server has held {repo_dir.name} for '
                                                                f'{self.lock_wait:.0f} s; retry later.')
            yield

    @property
    def writable(self) -> bool:
        return self.write_token is not None

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


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description='Serve <root>/<org>/<repo>/ folders as a Hugging Face Hub mirror (point HF_ENDPOINT at the '
                    'printed URL); read-only unless --allow-write.')
    parser.add_argument('--root', action='append', required=True,
                        help='folder holding <org>/<repo>/ repos; repeat to layer several roots')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8808, help='0 picks a free port')
    parser.add_argument('--quiet', action='store_true', help='do not log requests')
    parser.add_argument('--timeout', type=float, default=60.0, metavar='SECONDS',
                        help='close a connection that sends or reads nothing for this long (default: 60)')
    parser.add_argument('--allow-write', action='store_true',
                        help='accept create_repo / upload_folder (into the first --root) from clients sending the '
                             f'write token as "Authorization: Bearer" (HF_TOKEN on the client side)')
    parser.add_argument('--write-token', default=None,
                        help=f'token writes must carry (default: ${WRITE_TOKEN_ENV}); needs --allow-write')
    parser.add_argument('--lfs-threshold', type=int, default=None, metavar='BYTES',
                        help='ask clients for LFS uploads from this size on (only for clients without hf_xet or '
                             'with HF_HUB_DISABLE_XET=1); default: every file is sent inside the commit')
    args = parser.parse_args(argv)

    def refuse(message: str) -> None:  # what run_cli prints for a UsageError: one line, exit 2
        parser.exit(2, f'error: {printable(message)}\n')

    for root in args.root:
        if not Path(root).is_dir():
            parser.error(f'--root {root!r} is not a folder')
    if not (args.timeout > 0 and math.isfinite(args.timeout)):  # inf: a server whose every request times out
        refuse(f'--timeout must be a positive, finite number of seconds, not {args.timeout}')
    if not 0 <= args.port <= 65535:
        refuse(f'--port must be 0 to 65535 (0 picks a free port), not {args.port}')
    token = args.write_token or os.environ.get(WRITE_TOKEN_ENV)
    if args.allow_write and not token:
        parser.error(f'--allow-write needs a token: pass --write-token TOKEN or set {WRITE_TOKEN_ENV}')
    if args.write_token and not args.allow_write:
        parser.error('--write-token is given but writes are off: add --allow-write')
    try:
        server = HubFolderServer(args.root, host=args.host, port=args.port, verbose=not args.quiet,
                                 write_token=token if args.allow_write else None, lfs_threshold=args.lfs_threshold,
                                 request_timeout=args.timeout)
    except OSError as e:  # port in use or reserved, host not an address of this machine
        if not (isinstance(e, socket.gaierror) or e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)):
            raise
        refuse(f'cannot listen on {args.host}:{args.port} ({e.strerror or e}): pass another --port (0 picks a '
               f'free one) or --host')
    mode = f'read-write into {server.roots[0]}' if server.writable else 'read-only'
    print(f'Serving {", ".join(map(str, server.roots))} ({mode}) at {server.endpoint}  '
          f'(use: HF_ENDPOINT={server.endpoint})', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == '__main__':
    main()
