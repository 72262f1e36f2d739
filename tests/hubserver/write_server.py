"""The write side of the loopback Hub: test infrastructure, not installed (the package's
``timm_cra.hub.server`` is the read-only mirror this extends).

What ``HfApi.create_repo`` + ``upload_folder`` / ``create_commit`` call, so ``timm-cra-publish --push`` can
run against a loopback Hub in CI: ``POST /api/repos/create``, ``/api/models/{id}/preupload/main``,
``/api/models/{id}/commit/main`` (NDJSON), ``/api/validate-yaml`` and the LFS batch API
(``POST /{id}.git/info/lfs/objects/batch``, a signed ``PUT`` URL streamed to disk and checked against the
object's sha256 and size, and a verify step). Every write needs ``Authorization: Bearer <token>`` and lands
in the FIRST root (``POST /api/models/{id}/paths-info/{revision}``, which ``CommitOperationCopy`` asks, reads
any root). Preupload answers ``regular`` (content inside the commit) for every file below
``lfs_threshold`` (default: all files), because huggingface_hub uploads ``lfs`` files with Xet whenever
``hf_xet`` is installed, which this server does not speak; a client without Xet (``HF_HUB_DISABLE_XET=1``)
can use ``--lfs-threshold`` and plain LFS::

    TIMM_CRA_HUB_WRITE_TOKEN=secret python -m tests.hubserver.write_server --root /tmp/hub --allow-write

A commit is one step. Under the repo's lock, every operation is checked against the current revision
(paths, deleted files exist, LFS objects uploaded with the right sha256 and size, no path both a file and a
folder, ``parentCommit``) before anything is written; the new revision is then staged completely in
``.hub-revisions/.hub-tmp-*`` (unchanged files and LFS objects hard-linked, so no copy), renamed to
``.hub-revisions/<commit>`` and made ``main`` by ONE atomic replace of ``.hub-head``. A refused, failed (disk
full) or killed commit leaves ``main`` as it was; a writable server removes the leftovers when it starts.
A commit body over 1 MiB is spooled to a flock'ed scratch folder in ``.hub-revisions`` and each large file
decoded there while its line is parsed, so memory stays at a few MiB whatever the file sizes.
The repo's lock is a thread lock plus ``flock`` on the repo folder, so servers in several processes on one
root queue too (a commit validated against a stale head would drop the other's commit); repo creation
flocks the root, an LFS upload its temp file. Startup clean-up removes only what it can lock, so it never
deletes another live server's staging. The store entries (``.hub-revisions`` and each revision in it,
``.hub-head``, ``.hub-lfs`` and each object in it) must be real folders / files: a symlink there is
refused, never followed or deleted through.
"""
import base64
import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, urlsplit

from timm_cra.hub.server import (
    _CHUNK, _HEAD, _REVISIONS, DEFAULT_BRANCH, HubFolderServer, _child_dirs, _digests, _digests_lock,
    _find_repo_in, _history, _HubError, _inside, _open_digest, _open_regular, _ReadRoutes, _repo_files, _stat_hash,
    _store_entry, check_args, create_parser, safe_parts, serve, served_revision, start,
)
from timm_cra.utils.io import FileIdentity, atomic_write, file_identity

__all__ = ['WritableHubServer', 'WRITE_TOKEN_ENV', 'commit_revision', 'create_repo_folder', 'main',
           'remove_write_leftovers']

WRITE_TOKEN_ENV = 'TIMM_CRA_HUB_WRITE_TOKEN'
_OID_RE = re.compile(r'^[0-9a-f]{64}$')
_STORE = '.hub-lfs'  # uploaded LFS objects, per root, named by sha256 (hidden: never a repo, never listed)
_TMP_PREFIX = '.hub-tmp-'  # every temp file / staging folder of a write; removed when a writable server starts


# The write side's own reads of the served files (the read-only mirror never hashes a whole folder).
def _file_digest(path: Path, algo: str = 'sha256') -> str:
    """:func:`_open_digest` of the regular file ``path`` (a 503 if it is rewritten while read, a 404 if it is not a
    regular file)."""
    f = _open_regular(path)
    if f is None:
        raise _HubError(HTTPStatus.NOT_FOUND, f'{path} is not a regular file.')
    with f:
        digest = _open_digest(f, file_identity(f.fileno()), algo)
    if digest is None:
        raise _HubError(HTTPStatus.SERVICE_UNAVAILABLE, f'{path} was rewritten while it was read: retry.')
    return digest


def _file_sha256(path: Path) -> str:
    return _file_digest(path, 'sha256')


def _folder_commit_hash(folder: Path) -> str:
    """40-hex commit id of a plain folder: :func:`_stat_hash` of all its files."""
    return _stat_hash(_repo_files(folder))


def _folder_oid(files: Dict[str, FileIdentity], key: str) -> str:
    """The ``oid`` of the folder ``key`` of a revision (``files``: its :func:`_repo_files`) in a listing:
    :func:`_stat_hash` of the files below it, so it changes with anything below it and reads none of them."""
    return _stat_hash({rel: identity for rel, identity in files.items() if rel.startswith(key + '/')})


_PAUSE_ENV = 'TIMM_CRA_HUB_TEST_PAUSE_BEFORE_SWITCH'  # tests only: seconds to wait between staging and switch
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _disk_error(e: OSError, what: str) -> _HubError:
    # atomic_write's one-line OutputPathError (the .hub-head switch) has no errno of its own: the OSError it came from
    # has (a disk full at that last step was a 500 "Commit failed (None)", not the 507).
    cause = e
    while cause is not None and not (isinstance(cause, OSError) and cause.errno is not None):
        cause = cause.__cause__ or cause.__context__
    e = cause or e
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


def _stage_revision(revisions: Path, files: Dict[str, Union[bytes, Tuple[Path, bool]]], created: List[Path],
                    commit: Optional[str] = None) -> str:
    """Write ``files`` (repo path -> bytes, or (source file, may hard-link)) into ``revisions/<commit>`` (a
    staging folder renamed in one step; an existing revision of that commit is reused); returns the commit:
    ``commit``, else the staging folder's own (:func:`_folder_commit_hash`). A revision folder made here is
    appended to ``created``."""
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
        commit = commit or _folder_commit_hash(staging)
        if not _store_entry(revisions, commit, folder=True):  # else: that commit was staged before, reused
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
                                    created, commit=_folder_commit_hash(repo_dir))  # the hash it was served under
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
    read_only_message = ('This Hub server is read-only: start it with --allow-write and a --write-token (or '
                         f'{WRITE_TOKEN_ENV}) to accept uploads.')

    def _read_body(self, limit: int) -> bytes:
        return b''.join(self._iter_body(limit))

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
        ignored = self.server.ignored_patterns
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
            skip = any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(parts[-1], p) for p in ignored)
            answer.append({'path': path, 'uploadMode': 'lfs' if lfs else 'regular', 'shouldIgnore': skip,
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
                answer.append({'type': 'directory', 'path': rel, 'oid': _folder_oid(files, rel)})
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
                _digests['sha256', file_identity(store / oid)] = oid
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


class WritableHubServer(HubFolderServer):
    """:class:`~timm_cra.hub.server.HubFolderServer` plus the write routes, on when ``write_token`` is given.

    Uploads land in the first root, whose leftovers of killed writes are removed here; requests must carry
    ``Authorization: Bearer <write_token>``. ``lfs_threshold`` (bytes) makes preupload ask for LFS from that size
    on (only for clients without Xet). ``ignored_patterns``: globs (of a path or its file name) preupload answers
    ``shouldIgnore`` for, as the Hub does for files its repo's ``.gitignore`` matches (the client's commit then skips
    them). Without a token it answers writes as the read-only mirror does.
    """
    handler_class = _WriteRoutes

    def __init__(self, roots, *args, write_token: Optional[str] = None, lfs_threshold: Optional[int] = None,
                 max_upload_bytes: int = 16 << 30, ignored_patterns: Sequence[str] = (), **kwargs):
        self.write_token = write_token or None
        self.ignored_patterns = list(ignored_patterns)
        self.lfs_threshold = lfs_threshold
        self.max_upload_bytes = max_upload_bytes
        self.max_commit_bytes = max_upload_bytes
        self.max_json_bytes = 16 << 20
        self.url_secret = secrets.token_bytes(32)
        self.create_lock = threading.Lock()
        self.lock_wait = 600.0  # seconds a commit waits for another writer of its repo
        self._locks_guard = threading.Lock()
        self._repo_locks: Dict[str, threading.Lock] = {}
        super().__init__(roots, *args, **kwargs)
        if self.writable:
            remove_write_leftovers(self.roots[0])

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


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The mirror's command line plus ``--allow-write`` / ``--write-token`` / ``--lfs-threshold``."""
    parser = create_parser()
    parser.prog = 'python -m tests.hubserver.write_server'
    parser.description = 'The loopback Hub with uploads (tests only); read-only unless --allow-write.'
    parser.add_argument('--allow-write', action='store_true',
                        help='accept create_repo / upload_folder (into the first --root) from clients sending the '
                             'write token as "Authorization: Bearer" (HF_TOKEN on the client side)')
    parser.add_argument('--write-token', default=None,
                        help=f'token writes must carry (default: ${WRITE_TOKEN_ENV}); needs --allow-write')
    parser.add_argument('--lfs-threshold', type=int, default=None, metavar='BYTES',
                        help='ask clients for LFS uploads from this size on (only for clients without hf_xet or '
                             'with HF_HUB_DISABLE_XET=1); default: every file is sent inside the commit')
    parser.add_argument('--ignore-pattern', action='append', default=[], metavar='GLOB',
                        help="answer preupload's shouldIgnore for files matching GLOB, as the Hub does for those its "
                             "repo's .gitignore matches (repeatable)")
    args = parser.parse_args(argv)
    check_args(parser, args)
    token = args.write_token or os.environ.get(WRITE_TOKEN_ENV)
    if args.allow_write and not token:
        parser.error(f'--allow-write needs a token: pass --write-token TOKEN or set {WRITE_TOKEN_ENV}')
    if args.write_token and not args.allow_write:
        parser.error('--write-token is given but writes are off: add --allow-write')
    server = start(parser, args, WritableHubServer, write_token=token if args.allow_write else None,
                   lfs_threshold=args.lfs_threshold, ignored_patterns=args.ignore_pattern)
    serve(server, f'read-write into {server.roots[0]}' if server.writable else 'read-only')


if __name__ == '__main__':
    main()
