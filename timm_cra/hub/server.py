"""A Hugging Face Hub-compatible HTTP server for local model folders (read-only unless started for writing).

Serves ``<root>/<org>/<repo>/<files>`` the way the Hub serves model repos to ``huggingface_hub``'s download
client (``hf_hub_download``, which timm uses for ``pretrained=True`` and ``hf-hub:`` names):

* ``HEAD|GET /{org}/{repo}/resolve/{revision}/{filename}`` with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length`` (single byte-range requests get a ``206``, as the client resumes downloads with them);
* ``GET /api/models/{org}/{repo}`` and ``/api/models/{org}/{repo}/revision/{revision}``: repo id, commit
  sha and file list (what ``HfApi.model_info`` reads);
* errors as the Hub reports them, so the client raises its typed errors: ``404`` with
  ``X-Error-Code: RepoNotFound`` / ``EntryNotFound`` / ``RevisionNotFound``.

Each repo has one commit, whose hash is derived from the repo's file names and contents; ``main`` and that
hash are the two revisions it answers to, so a pinned revision (``hf-hub:org/repo@<hash>``) works and changes
whenever a file does. Used by the test suite and as a local mirror::

    python -m timm_cra.hub.server --root hub --port 8808
    HF_ENDPOINT=http://127.0.0.1:8808 python -c "import timm, timm_cra; timm.create_model('hf-hub:org/repo', pretrained=True)"

Containment: every repo id and file name is checked part by part (no empty, ``.``/``..``, hidden, ``/``,
``\\`` or NUL parts) and the resolved path must stay inside its repo folder, and that inside its root. A
symlink is served only if its target stays inside the same repo folder; any other is invisible (404).

Write side (off unless ``--allow-write`` with a token): what ``HfApi.create_repo`` + ``upload_folder`` /
``create_commit`` call, so ``scripts/publish.py --push`` can run against a loopback Hub in CI:
``POST /api/repos/create``, ``/api/models/{id}/preupload/main``, ``/api/models/{id}/commit/main`` (NDJSON),
``/api/validate-yaml`` and the LFS batch API (``POST /{id}.git/info/lfs/objects/batch``, a signed ``PUT``
URL checked against the object's sha256 and size, and a verify step). Every write needs
``Authorization: Bearer <token>`` and lands atomically (temp file + rename) in the FIRST root. Preupload
answers ``regular`` (content inside the commit) for every file below ``lfs_threshold`` (default: all files),
because huggingface_hub uploads ``lfs`` files with Xet whenever ``hf_xet`` is installed, which this server
does not speak; a client without Xet (``HF_HUB_DISABLE_XET=1``) can use ``--lfs-threshold`` and plain LFS::

    TIMM_CRA_HUB_WRITE_TOKEN=secret python -m timm_cra.hub.server --root /tmp/hub --allow-write
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import threading
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from ..utils.io import atomic_write

__all__ = ['HubFolderServer', 'repo_commit_hash', 'safe_parts', 'main', 'WRITE_TOKEN_ENV']

DEFAULT_BRANCH = 'main'
WRITE_TOKEN_ENV = 'TIMM_CRA_HUB_WRITE_TOKEN'
_RANGE_RE = re.compile(r'^bytes=(\d*)-(\d*)$')
_OID_RE = re.compile(r'^[0-9a-f]{64}$')
_CHUNK = 1 << 20
_STORE = '.hub-lfs'  # pending LFS objects, per root (hidden: never a repo, never listed)
_TMP_PREFIX = '.hub-tmp-'


class _HubError(Exception):
    """An error answer: HTTP status, optional ``X-Error-Code``, one-line message."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, commit: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


def safe_parts(name: str, what: str = 'path') -> List[str]:
    """Split a repo-relative POSIX path into parts, refusing anything that could leave its folder.

    Refused: empty, absolute, ``.``/``..``, hidden (``.``-prefixed) parts, backslashes and NUL.
    """
    if not isinstance(name, str) or not name or '\\' in name or '\0' in name or name.startswith('/'):
        raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid {what} {name!r}.')
    parts = name.split('/')
    if any(p in ('', '.', '..') or p.startswith('.') for p in parts):
        raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid {what} {name!r}.')
    return parts


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``folder`` or below it."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # symlink loops
        return False


def _file_sha256(path: Path, _cache: Dict[Tuple[str, int, int, int], str] = {}, _lock=threading.Lock()) -> str:
    """sha256 of a file, memoised on (path, inode, mtime, size) so a mirror of large weights hashes each once."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _cache:
            return _cache[key]
    h = hashlib.sha256()
    with path.open('rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _cache[key] = digest
    return digest


def _git_blob_sha1(path: Path) -> str:
    """What ``git hash-object`` gives (the client's oid of a ``regular`` file)."""
    h = hashlib.sha1(f'blob {path.stat().st_size}\0'.encode())
    with path.open('rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def _repo_files(repo_dir: Path) -> List[str]:
    """Repo-relative POSIX paths of every regular file, hidden files and folders and escaping links excluded."""
    files = []
    for path in sorted(repo_dir.rglob('*')):
        rel = path.relative_to(repo_dir)
        if any(part.startswith('.') for part in rel.parts):
            continue
        if path.is_file() and _inside(path, repo_dir):
            files.append(rel.as_posix())
    return files


def repo_commit_hash(repo_dir: Union[str, Path]) -> str:
    """40-hex commit id of a repo folder: sha1 over its file names and content hashes (changes with any file)."""
    repo_dir = Path(repo_dir)
    h = hashlib.sha1()
    for rel in _repo_files(repo_dir):
        h.update(f'{rel}\0{_file_sha256(repo_dir / rel)}\n'.encode())
    return h.hexdigest()


def _atomic_write(dest: Path, data_source) -> None:
    """Write bytes (or copy a file path) onto ``dest`` atomically (:func:`timm_cra.utils.io.atomic_write`)."""
    with atomic_write(dest, 'wb', prefix=_TMP_PREFIX, suffix='') as f:
        if isinstance(data_source, Path):
            with data_source.open('rb') as src:
                shutil.copyfileobj(src, f, _CHUNK)
        else:
            f.write(data_source)


class _HubRequestHandler(BaseHTTPRequestHandler):
    server_version = 'timm-cra-hub/2'
    protocol_version = 'HTTP/1.1'  # keep-alive, as the Hub client pools connections

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

    def _error(self, status: int, code: Optional[str], message: str, head_only: bool, commit: Optional[str] = None):
        headers = {'Content-Type': 'application/json', 'X-Error-Message': message}
        if code:
            headers['X-Error-Code'] = code
        if commit:
            headers['X-Repo-Commit'] = commit  # lets the client cache "file does not exist" per commit
        self._send(status, headers, json.dumps({'error': message}).encode(), head_only)

    # Request bodies (write side). An answer sent before the body is read must not leave it in the stream,
    # where keep-alive would parse it as the next request: small bodies are drained, large ones close.
    _body_read = True

    def _read_body(self, limit: int) -> bytes:
        self._body_read = True
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline(100).split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline(1000) not in (b'\r\n', b'\n', b''):
                        pass
                    return bytes(out)
                if len(out) + size > limit:
                    self.close_connection = True
                    raise _HubError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f'Request body over {limit} bytes.')
                out += self.rfile.read(size)
                self.rfile.readline(10)
        length = int(self.headers.get('Content-Length') or 0)
        if length > limit:
            self.close_connection = True
            raise _HubError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f'Request body over {limit} bytes.')
        return self.rfile.read(length)

    def _drain_body(self):
        if self._body_read:
            return
        self._body_read = True
        try:
            self._read_body(self.server.drain_limit)
        except (_HubError, ValueError):
            self.close_connection = True

    def _find_repo(self, repo_id: str) -> Optional[Path]:
        try:
            parts = safe_parts(repo_id, 'repo id')
        except _HubError:
            return None
        if len(parts) != 2:
            return None
        for root in self.server.roots:
            repo_dir = root.joinpath(*parts)
            if repo_dir.is_dir() and _inside(repo_dir, root):
                return repo_dir
        return None

    # ---- routes ---------------------------------------------------------------------------------------
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

    def _route(self, head_only: bool):
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
        except _HubError as e:
            return self._error(e.status, e.code, e.message, head_only, e.commit)
        self._error(HTTPStatus.NOT_FOUND, None, f'Not a Hub download route: {self.path}', head_only)

    def _check_revision(self, repo_id: str, revision: str) -> Tuple[Path, str]:
        repo_dir = self._find_repo(repo_id)
        if repo_dir is None:
            raise _HubError(HTTPStatus.NOT_FOUND, f'Repository {repo_id} not found.', 'RepoNotFound')
        commit = repo_commit_hash(repo_dir)
        if revision not in (DEFAULT_BRANCH, commit):
            raise _HubError(
                HTTPStatus.NOT_FOUND,
                f'Invalid rev id: {revision} (repo {repo_id} has {DEFAULT_BRANCH} = {commit}).', 'RevisionNotFound')
        return repo_dir, commit

    def _model_info(self, repo_id: str, revision: str, head_only: bool):
        repo_dir, commit = self._check_revision(repo_id, revision)
        body = json.dumps({
            'id': repo_id, 'modelId': repo_id, 'sha': commit, 'private': False, 'disabled': False,
            'gated': False, 'tags': [], 'siblings': [{'rfilename': f} for f in _repo_files(repo_dir)],
        }).encode()
        self._send(HTTPStatus.OK, {'Content-Type': 'application/json', 'X-Repo-Commit': commit}, body, head_only)

    def _resolve(self, repo_id: str, revision: str, file_parts: Sequence[str], head_only: bool):
        repo_dir, commit = self._check_revision(repo_id, revision)
        filename = '/'.join(file_parts)
        missing = _HubError(HTTPStatus.NOT_FOUND, f'{filename} does not exist on "{revision}" of {repo_id}.',
                            'EntryNotFound', commit)
        try:
            parts = safe_parts(filename, 'file name')
        except _HubError:
            raise missing
        if len(parts) != len(file_parts):  # a part held an encoded '/'
            raise missing
        path = repo_dir.joinpath(*parts)
        if not path.is_file() or not _inside(path, repo_dir):
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

    # ---- write side -----------------------------------------------------------------------------------
    def _write_route(self, method: str):
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
                if len(parts) == 6 and parts[:2] == ['api', 'models'] and parts[4] in ('preupload', 'commit'):
                    repo_id = '/'.join(parts[2:4])
                    if parts[4] == 'preupload':
                        return self._preupload(repo_id, parts[5])
                    return self._commit(repo_id, parts[5])
                if len(parts) == 6 and parts[1].endswith('.git') and parts[2:] == ['info', 'lfs', 'objects', 'batch']:
                    return self._lfs_batch(parts[0] + '/' + parts[1][:-len('.git')])
                if len(parts) == 4 and parts[0] == '.lfs-verify':
                    return self._lfs_verify('/'.join(parts[1:3]), parts[3])
            raise _HubError(HTTPStatus.NOT_FOUND, f'Not a Hub write route: {method} {self.path}')
        except _HubError as e:
            self._error(e.status, e.code, e.message, False, e.commit)

    def _authorize(self):
        token = self.server.write_token
        if not token:
            raise _HubError(HTTPStatus.FORBIDDEN, 'This Hub server is read-only: start it with --allow-write and a '
                                                  f'--write-token (or {WRITE_TOKEN_ENV}) to accept uploads.')
        parts = self._parts()
        if parts and parts[0] == '.lfs-upload':  # signed URL instead: the client sends no token with the PUT
            return
        auth = self.headers.get('Authorization', '')
        if not auth.startswith('Bearer '):
            raise _HubError(HTTPStatus.UNAUTHORIZED, 'Writing needs an "Authorization: Bearer <token>" header.')
        if not hmac.compare_digest(auth[len('Bearer '):].encode(), token.encode()):
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
                            f'Only the {DEFAULT_BRANCH} branch takes commits, not {revision!r}.')
        root = self.server.roots[0]
        repo_dir = root.joinpath(*parts)
        if not repo_dir.is_dir() or not _inside(repo_dir, root):
            found = self._find_repo(repo_id)
            msg = (f'Repository {repo_id} is in the read-only root {found.parents[1]}; only {root} takes writes.'
                   if found else f'Repository {repo_id} not found (create it first).')
            raise _HubError(HTTPStatus.NOT_FOUND if found is None else HTTPStatus.FORBIDDEN, msg, 'RepoNotFound')
        return repo_dir

    @staticmethod
    def _dest(repo_dir: Path, parts: Sequence[str]) -> Path:
        """Where a written file goes: never through a symlink, a file posing as a folder or onto a folder."""
        path = repo_dir
        for part in parts[:-1]:
            path = path / part
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Cannot write {"/".join(parts)}: {part} is not a folder.')
        path = path / parts[-1]
        if path.is_symlink() or path.is_dir():
            raise _HubError(HTTPStatus.BAD_REQUEST, f'Cannot write {"/".join(parts)}: it is a link or a folder.')
        return path

    def _create_repo(self):
        body = self._body_json()
        if not isinstance(body, dict):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Request body must be a JSON object.')
        if body.get('type', 'model') not in (None, 'model'):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Only model repos are served.')
        org, name = body.get('organization'), body.get('name')
        if not org:
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Give the repo id as <org>/<name> (this server has no users).')
        repo_id = f'{org}/{name}'
        parts = safe_parts(repo_id, 'repo id')
        if len(parts) != 2:
            raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid repo id {repo_id!r}.')
        url = f'{self.server.endpoint}/{repo_id}'
        with self.server.write_lock:
            if self._find_repo(repo_id) is not None:
                raise _HubError(HTTPStatus.CONFLICT, f'You already created this model repo: {repo_id}')
            root = self.server.roots[0]
            (root / parts[0]).mkdir(exist_ok=True)
            if not _inside(root / parts[0], root):
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid repo id {repo_id!r}.')
            (root / parts[0] / parts[1]).mkdir()
        self._json({'url': url, 'name': repo_id, 'id': repo_id})

    def _preupload(self, repo_id: str, revision: str):
        repo_dir = self._writable_repo(repo_id, revision)
        body = self._body_json()
        files = body.get('files') if isinstance(body, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Expected {"files": [{"path", "size", "sample"}, ...]}.')
        threshold = self.server.lfs_threshold
        answer = []
        for f in files:
            path = f.get('path')
            parts = safe_parts(path)
            size = f.get('size')
            lfs = threshold is not None and isinstance(size, int) and size >= threshold
            current = self._dest(repo_dir, parts)
            oid = None
            if current.is_file():  # lets the client skip unchanged files
                oid = _file_sha256(current) if lfs else _git_blob_sha1(current)
            answer.append({'path': path, 'uploadMode': 'lfs' if lfs else 'regular', 'shouldIgnore': False,
                           'oid': oid})
        self._json({'files': answer, 'commitOid': repo_commit_hash(repo_dir)})

    # LFS: batch -> signed PUT (no token is sent with it) -> verify -> the commit names the oid.
    def _signature(self, repo_id: str, oid: str, size: int) -> str:
        return hmac.new(self.server.url_secret, f'{repo_id}\0{oid}\0{size}'.encode(), 'sha256').hexdigest()

    def _store(self) -> Path:
        store = self.server.roots[0] / _STORE
        store.mkdir(exist_ok=True)
        return store

    def _lfs_object(self, repo_dir: Path, oid: str) -> Optional[Path]:
        """Where the bytes of ``oid`` already are: the upload store, or a file of the repo (unchanged re-uploads)."""
        obj = self.server.roots[0] / _STORE / oid
        if obj.is_file():
            return obj
        for rel in _repo_files(repo_dir):
            if _file_sha256(repo_dir / rel) == oid:
                return repo_dir / rel
        return None

    def _lfs_batch(self, repo_id: str):
        repo_dir = self._writable_repo(repo_id, None)
        body = self._body_json()
        if not isinstance(body, dict) or body.get('operation') != 'upload' or not isinstance(body.get('objects'), list):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Only LFS "upload" batches are served.')
        out = []
        for obj in body['objects']:
            oid, size = (obj.get('oid'), obj.get('size')) if isinstance(obj, dict) else (None, None)
            if not (isinstance(oid, str) and _OID_RE.match(oid) and isinstance(size, int) and size >= 0):
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid LFS object {obj!r}.')
            entry = {'oid': oid, 'size': size}
            if size > self.server.max_upload_bytes:
                entry['error'] = {'code': 413, 'message': f'Object over {self.server.max_upload_bytes} bytes.'}
            elif self._lfs_object(repo_dir, oid) is None:
                query = f'size={size}&sig={self._signature(repo_id, oid, size)}'
                entry['actions'] = {
                    'upload': {'href': f'{self.server.endpoint}/.lfs-upload/{repo_id}/{oid}?{query}'},
                    'verify': {'href': f'{self.server.endpoint}/.lfs-verify/{repo_id}/{oid}'},
                }
            out.append(entry)
        self._json({'transfer': 'basic', 'objects': out, 'hash_algo': 'sha256'})

    def _lfs_put(self, repo_id: str, oid: str):
        query = parse_qs(urlsplit(self.path).query)
        try:
            size = int(query['size'][0])
            sig = query['sig'][0]
        except (KeyError, ValueError, IndexError):
            raise _HubError(HTTPStatus.FORBIDDEN, 'Upload URL is not signed by this server.')
        if not (_OID_RE.match(oid) and hmac.compare_digest(sig, self._signature(repo_id, oid, size))):
            raise _HubError(HTTPStatus.FORBIDDEN, 'Upload URL is not signed by this server.')
        self._writable_repo(repo_id, None)
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            data = self._read_body(size)
        else:
            if int(self.headers.get('Content-Length') or -1) != size:
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Upload must be exactly {size} bytes.')
            data = self._read_body(size)
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise _HubError(HTTPStatus.BAD_REQUEST, f'Uploaded bytes do not match oid {oid} / size {size}.')
        store = self._store()
        _atomic_write(store / oid, data)
        self._send(HTTPStatus.OK, {})

    def _lfs_verify(self, repo_id: str, oid: str):
        self._writable_repo(repo_id, None)
        body = self._body_json()
        path = self._store() / oid if _OID_RE.match(oid) else None
        if path is None or not path.is_file() or not isinstance(body, dict) or body.get('size') != path.stat().st_size:
            raise _HubError(HTTPStatus.NOT_FOUND, f'LFS object {oid} was not uploaded.')
        self._json({'oid': oid, 'size': path.stat().st_size})

    def _commit(self, repo_id: str, revision: str):
        repo_dir = self._writable_repo(repo_id, revision)
        if parse_qs(urlsplit(self.path).query).get('create_pr'):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Pull requests are not supported by this server.')
        try:
            lines = [json.loads(line) for line in self._read_body(self.server.max_commit_bytes).splitlines()
                     if line.strip()]
        except (ValueError, UnicodeDecodeError):
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Commit body is not NDJSON.')
        if not lines or not isinstance(lines[0], dict) or lines[0].get('key') != 'header':
            raise _HubError(HTTPStatus.BAD_REQUEST, 'Commit body must start with a header line.')
        header = lines[0].get('value') or {}
        store = self.server.roots[0] / _STORE
        # 1. Check every operation before touching anything.
        ops = []
        for line in lines[1:]:
            key, value = (line.get('key'), line.get('value')) if isinstance(line, dict) else (None, None)
            if not isinstance(value, dict):
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Malformed commit line {line!r}.')
            parts = safe_parts(value.get('path'))
            if key in ('file', 'lfsFile'):
                self._dest(repo_dir, parts)
            if key == 'file':
                if value.get('encoding', 'base64') != 'base64':
                    raise _HubError(HTTPStatus.BAD_REQUEST, 'Only base64 file content is accepted.')
                try:
                    data = base64.b64decode(value.get('content', ''), validate=True)
                except ValueError:
                    raise _HubError(HTTPStatus.BAD_REQUEST, f'Bad base64 content for {value["path"]}.')
                ops.append(('add', parts, data))
            elif key == 'lfsFile':
                oid = value.get('oid')
                if value.get('algo', 'sha256') != 'sha256' or not isinstance(oid, str) or not _OID_RE.match(oid):
                    raise _HubError(HTTPStatus.BAD_REQUEST, f'Invalid LFS oid for {value["path"]}.')
                obj = self._lfs_object(repo_dir, oid)
                if obj is None:
                    raise _HubError(HTTPStatus.BAD_REQUEST, f'LFS object {oid} for {value["path"]} was not uploaded.')
                ops.append(('add', parts, obj))
            elif key in ('deletedFile', 'deletedFolder'):
                ops.append(('delete', parts, key == 'deletedFolder'))
            else:
                raise _HubError(HTTPStatus.BAD_REQUEST, f'Unsupported commit operation {key!r}.')
        with self.server.write_lock:
            parent = header.get('parentCommit')
            if parent and parent != repo_commit_hash(repo_dir):
                raise _HubError(HTTPStatus.PRECONDITION_FAILED, f'parentCommit {parent} is not the head of main.')
            # 2. Apply: each file lands by rename from a temp file in its own folder.
            for op, parts, arg in ops:
                dest = repo_dir.joinpath(*parts)
                if op == 'delete':
                    listed = '/'.join(parts) in _repo_files(repo_dir)
                    if arg and dest.is_dir() and not dest.is_symlink() and _inside(dest, repo_dir):
                        shutil.rmtree(dest)
                    elif not arg and listed:
                        dest.unlink()
                    else:
                        raise _HubError(HTTPStatus.NOT_FOUND, f"A file with this name doesn't exist: "
                                                              f"{'/'.join(parts)}", 'EntryNotFound')
                    continue
                dest = self._dest(repo_dir, parts)  # again: earlier operations of this commit may have changed it
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not _inside(dest.parent, repo_dir):
                    raise _HubError(HTTPStatus.BAD_REQUEST, f'Cannot write {"/".join(parts)} in {repo_id}.')
                _atomic_write(dest, arg)
            for op, _, arg in ops:
                if isinstance(arg, Path) and arg.parent == store:
                    arg.unlink(missing_ok=True)
            commit = repo_commit_hash(repo_dir)
        self._json({'commitUrl': f'{self.server.endpoint}/{repo_id}/commit/{commit}', 'commitOid': commit,
                    'commitMessage': header.get('summary', ''), 'pullRequestUrl': None, 'success': True})


class HubFolderServer(ThreadingHTTPServer):
    """Threaded Hub-compatible server over one or more roots (the first root holding a repo wins).

    Use as a context manager (starts a background thread, stops it on exit) or call :meth:`start` /
    :meth:`stop`. ``port=0`` picks a free port; :attr:`endpoint` is the URL to give ``HF_ENDPOINT``.
    ``write_token`` turns on the write side (uploads land in the first root; requests must carry
    ``Authorization: Bearer <write_token>``); ``lfs_threshold`` (bytes) makes preupload ask for LFS from that
    size on (only for clients without Xet). ``handler_class`` lets tests inject faults.
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
        self.url_secret = secrets.token_bytes(32)
        self.write_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        super().__init__((host, port), self.handler_class)

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
    parser.add_argument('--allow-write', action='store_true',
                        help='accept create_repo / upload_folder (into the first --root) from clients sending the '
                             f'write token as "Authorization: Bearer" (HF_TOKEN on the client side)')
    parser.add_argument('--write-token', default=None,
                        help=f'token writes must carry (default: ${WRITE_TOKEN_ENV}); needs --allow-write')
    parser.add_argument('--lfs-threshold', type=int, default=None, metavar='BYTES',
                        help='ask clients for LFS uploads from this size on (only for clients without hf_xet or '
                             'with HF_HUB_DISABLE_XET=1); default: every file is sent inside the commit')
    args = parser.parse_args(argv)
    for root in args.root:
        if not Path(root).is_dir():
            parser.error(f'--root {root!r} is not a folder')
    token = args.write_token or os.environ.get(WRITE_TOKEN_ENV)
    if args.allow_write and not token:
        parser.error(f'--allow-write needs a token: pass --write-token TOKEN or set {WRITE_TOKEN_ENV}')
    if args.write_token and not args.allow_write:
        parser.error('--write-token is given but writes are off: add --allow-write')
    server = HubFolderServer(args.root, host=args.host, port=args.port, verbose=not args.quiet,
                             write_token=token if args.allow_write else None, lfs_threshold=args.lfs_threshold)
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
