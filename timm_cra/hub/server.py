"""A read-only, Hugging Face Hub-compatible HTTP server for local model folders.

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
"""
import argparse
import hashlib
import json
import os
import re
import threading
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

__all__ = ['HubFolderServer', 'repo_commit_hash', 'main']

DEFAULT_BRANCH = 'main'
_RANGE_RE = re.compile(r'^bytes=(\d*)-(\d*)$')
_CHUNK = 1 << 20


def _file_sha256(path: Path, _cache: Dict[Tuple[str, int, int], str] = {}, _lock=threading.Lock()) -> str:
    """sha256 of a file, memoised on (path, mtime, size) so a mirror of large weights hashes each file once."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
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


def _repo_files(repo_dir: Path) -> List[str]:
    """Repo-relative POSIX paths of every regular file, hidden files and folders excluded."""
    files = []
    for path in sorted(repo_dir.rglob('*')):
        rel = path.relative_to(repo_dir)
        if path.is_file() and not any(part.startswith('.') for part in rel.parts):
            files.append(rel.as_posix())
    return files


def repo_commit_hash(repo_dir: Union[str, Path]) -> str:
    """40-hex commit id of a repo folder: sha1 over its file names and content hashes (changes with any file)."""
    repo_dir = Path(repo_dir)
    h = hashlib.sha1()
    for rel in _repo_files(repo_dir):
        h.update(f'{rel}\0{_file_sha256(repo_dir / rel)}\n'.encode())
    return h.hexdigest()


class _HubRequestHandler(BaseHTTPRequestHandler):
    server_version = 'timm-cra-hub/1'
    protocol_version = 'HTTP/1.1'  # keep-alive, as the Hub client pools connections

    # ---- plumbing -------------------------------------------------------------------------------------
    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, headers: Dict[str, str], body: bytes = b'', head_only: bool = False):
        self.send_response(status)
        headers = {'Content-Length': str(len(body)), **headers}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    def _error(self, status: int, code: Optional[str], message: str, head_only: bool, commit: Optional[str] = None):
        headers = {'Content-Type': 'application/json', 'X-Error-Message': message}
        if code:
            headers['X-Error-Code'] = code
        if commit:
            headers['X-Repo-Commit'] = commit  # lets the client cache "file does not exist" per commit
        self._send(status, headers, json.dumps({'error': message}).encode(), head_only)

    def _find_repo(self, repo_id: str) -> Optional[Path]:
        parts = repo_id.split('/')
        if len(parts) != 2 or any(p in ('', '.', '..') or p.startswith('.') for p in parts):
            return None
        for root in self.server.roots:
            repo_dir = root.joinpath(*parts)
            if repo_dir.is_dir():
                return repo_dir
        return None

    # ---- routes ---------------------------------------------------------------------------------------
    def do_HEAD(self):
        self._route(head_only=True)

    def do_GET(self):
        self._route(head_only=False)

    def _route(self, head_only: bool):
        # Split before unquoting: the client quotes '/' inside a revision (refs/pr/1) as %2F.
        parts = [unquote(p) for p in urlsplit(self.path).path.split('/')[1:]]
        if len(parts) >= 5 and parts[2] == 'resolve':
            return self._resolve('/'.join(parts[:2]), parts[3], parts[4:], head_only)
        if len(parts) >= 4 and parts[:2] == ['api', 'models']:
            repo_id = '/'.join(parts[2:4])
            rest = parts[4:]
            if not rest:
                return self._model_info(repo_id, DEFAULT_BRANCH, head_only)
            if len(rest) == 2 and rest[0] == 'revision':
                return self._model_info(repo_id, rest[1], head_only)
        self._error(HTTPStatus.NOT_FOUND, None, f'Not a Hub download route: {self.path}', head_only)

    def _check_revision(self, repo_id: str, revision: str, head_only: bool) -> Tuple[Optional[Path], Optional[str]]:
        repo_dir = self._find_repo(repo_id)
        if repo_dir is None:
            self._error(HTTPStatus.NOT_FOUND, 'RepoNotFound', f'Repository {repo_id} not found.', head_only)
            return None, None
        commit = repo_commit_hash(repo_dir)
        if revision not in (DEFAULT_BRANCH, commit):
            self._error(
                HTTPStatus.NOT_FOUND, 'RevisionNotFound',
                f'Invalid rev id: {revision} (repo {repo_id} has {DEFAULT_BRANCH} = {commit}).', head_only)
            return None, None
        return repo_dir, commit

    def _model_info(self, repo_id: str, revision: str, head_only: bool):
        repo_dir, commit = self._check_revision(repo_id, revision, head_only)
        if repo_dir is None:
            return
        body = json.dumps({
            'id': repo_id, 'modelId': repo_id, 'sha': commit, 'private': False, 'disabled': False,
            'gated': False, 'tags': [], 'siblings': [{'rfilename': f} for f in _repo_files(repo_dir)],
        }).encode()
        self._send(HTTPStatus.OK, {'Content-Type': 'application/json', 'X-Repo-Commit': commit}, body, head_only)

    def _resolve(self, repo_id: str, revision: str, file_parts: Sequence[str], head_only: bool):
        repo_dir, commit = self._check_revision(repo_id, revision, head_only)
        if repo_dir is None:
            return
        filename = '/'.join(file_parts)
        path = repo_dir.joinpath(*file_parts)
        bad_part = any(p in ('', '.', '..') or p.startswith('.') for p in file_parts)
        if bad_part or not path.is_file():
            self._error(
                HTTPStatus.NOT_FOUND, 'EntryNotFound', f'{filename} does not exist on "{revision}" of {repo_id}.',
                head_only, commit=commit)
            return
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
        with path.open('rb') as f:
            f.seek(start)
            remaining = length
            while remaining:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class HubFolderServer(ThreadingHTTPServer):
    """Threaded Hub-compatible server over one or more roots (the first root holding a repo wins).

    Use as a context manager (starts a background thread, stops it on exit) or call :meth:`start` /
    :meth:`stop`. ``port=0`` picks a free port; :attr:`endpoint` is the URL to give ``HF_ENDPOINT``.
    """
    daemon_threads = True

    def __init__(
            self,
            roots: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
            host: str = '127.0.0.1',
            port: int = 0,
            verbose: bool = False,
    ):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        self.roots = [Path(r).resolve() for r in roots]
        self.verbose = verbose
        self._thread: Optional[threading.Thread] = None
        super().__init__((host, port), _HubRequestHandler)

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
        description='Serve <root>/<org>/<repo>/ folders as a read-only Hugging Face Hub mirror '
                    '(point HF_ENDPOINT at the printed URL).')
    parser.add_argument('--root', action='append', required=True,
                        help='folder holding <org>/<repo>/ repos; repeat to layer several roots')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8808, help='0 picks a free port')
    parser.add_argument('--quiet', action='store_true', help='do not log requests')
    args = parser.parse_args(argv)
    for root in args.root:
        if not Path(root).is_dir():
            parser.error(f'--root {root!r} is not a folder')
    server = HubFolderServer(args.root, host=args.host, port=args.port, verbose=not args.quiet)
    print(f'Serving {", ".join(map(str, server.roots))} at {server.endpoint}  '
          f'(use: HF_ENDPOINT={server.endpoint})', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == '__main__':
    main()
