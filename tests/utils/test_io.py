"""The one atomic-write primitive: the target changes only when the whole write succeeded, a failed write
leaves neither a torn target nor a temp file, a killed one leaves a temp file the next start removes."""
import os
import signal
import subprocess
import sys

import pytest

from timm_cra.utils.io import atomic_folder, atomic_path, atomic_write, remove_stale_temp_files, temp_pattern

from ..conftest import REPO_ROOT


def test_replaces_whole_and_keeps_previous_on_error(tmp_path):
    path = tmp_path / 'results.json'
    with atomic_write(path) as f:
        f.write('{"v": 1}')
    with pytest.raises(ValueError, match='half-way'):
        with atomic_write(path) as f:
            f.write('{"v": 2, "torn')
            raise ValueError('half-way')
    assert path.read_text() == '{"v": 1}'
    assert os.listdir(tmp_path) == ['results.json']


def test_mode_as_plain_open_or_given(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / 'a.txt') as f:
            f.write('x')
        with atomic_write(tmp_path / 'b.bin', 'wb', perms=0o600) as f:
            f.write(b'x')
        with open(tmp_path / 'c.txt', 'w') as f:
            f.write('x')
    finally:
        os.umask(old)
    assert (tmp_path / 'a.txt').stat().st_mode & 0o777 == (tmp_path / 'c.txt').stat().st_mode & 0o777 == 0o644
    assert (tmp_path / 'b.bin').stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_write(tmp_path / 'a.txt', 'a'):
            pass


def test_a_replaced_file_keeps_its_mode_as_with_plain_open(tmp_path):
    private, shared = tmp_path / 'private.json', tmp_path / 'shared.json'
    for path, mode in ((private, 0o600), (shared, 0o664)):
        path.write_text('{}')
        path.chmod(mode)
        with atomic_write(path) as f:
            f.write('{"v": 2}')
    assert private.stat().st_mode & 0o777 == 0o600 and shared.stat().st_mode & 0o777 == 0o664
    assert private.read_text() == '{"v": 2}'


def test_atomic_path_for_writers_that_take_a_path(tmp_path):
    target = tmp_path / 'sub' / 'plot.png'  # missing folders are created
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path / 'sub') and os.path.basename(tmp).startswith('.plot.png.')
        with open(tmp, 'wb') as f:
            f.write(b'png')
    assert target.read_bytes() == b'png' and os.listdir(tmp_path / 'sub') == ['plot.png']


# A child process's preamble: utils.io (argv[2]) loaded alone, not the package (torch): a quick start.
_LOAD_IO = '''
import importlib.util, os, pathlib, signal, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    sys.modules[name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
load('timm_cra.utils.errors', os.path.join(os.path.dirname(sys.argv[2]), 'errors.py'))
io_ = load('timm_cra.utils.io', sys.argv[2])
'''

_WRITER = _LOAD_IO + '''
with io_.atomic_write(sys.argv[1]) as f:
    f.write('new, half')
    f.flush()
    print('written', flush=True)
    sys.stdin.read()  # blocks until the parent kills us
'''


def test_killed_write_keeps_previous_and_leaves_a_temp_file_to_clean(tmp_path):
    path = tmp_path / 'metrics.csv'
    path.write_text('old')
    module = REPO_ROOT / 'timm_cra' / 'utils' / 'io.py'
    proc = subprocess.Popen([sys.executable, '-c', _WRITER, str(path), str(module)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == 'written\n'  # the write is under way
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_text() == 'old'
    (tmp_path / '.other.tmp').write_text('not ours')
    assert len(list(tmp_path.glob(temp_pattern(str(path))))) == 1
    assert remove_stale_temp_files(str(tmp_path), [temp_pattern(str(path))]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.other.tmp', 'metrics.csv']


def test_atomic_folder_all_or_nothing(tmp_path):
    out = tmp_path / 'repo'
    with atomic_folder(out) as tmp:
        (tmp / 'a').write_text('1')
    with pytest.raises(FileExistsError, match='overwrite'):
        with atomic_folder(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / 'b').write_text('2')
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['a', 'repo']


def test_check_regular_file_names_what_the_path_is(tmp_path):
    from timm_cra.utils.errors import UsageError
    from timm_cra.utils.io import check_regular_file
    (tmp_path / 'ok.pth').write_bytes(b'x')
    check_regular_file(tmp_path / 'ok.pth', 'checkpoint')
    os.mkfifo(tmp_path / 'pipe.pth')
    (tmp_path / 'dir.pth').mkdir()
    os.symlink(tmp_path / 'gone', tmp_path / 'dangling.pth')
    os.symlink(tmp_path / 'loop.pth', tmp_path / 'loop.pth')
    for name, says in [('pipe.pth', 'is a FIFO, not a file'), ('dir.pth', 'is a folder, not a file'),
                       ('dangling.pth', 'is a dangling symlink'), ('missing.pth', 'does not exist'),
                       ('loop.pth', 'cannot be read')]:
        with pytest.raises(UsageError, match=f'checkpoint .*{name} {says}') as e:
            check_regular_file(tmp_path / name, 'checkpoint')
        assert '\n' not in str(e.value)


def test_only_a_regular_file_is_ever_replaced(tmp_path):
    """atomic_path used to os.replace whatever the target was (-o /dev/null as root replaced the device)."""
    from timm_cra.utils.io import OutputPathError
    os.mkfifo(tmp_path / 'pipe')
    (tmp_path / 'dir').mkdir()
    for name, says in [('pipe', 'is a FIFO, not a file'), ('dir', 'is a folder, not a file')]:
        with pytest.raises(OutputPathError, match=says):
            with atomic_write(tmp_path / name) as f:
                f.write('x')
    (tmp_path / 'file').write_text('old')
    with pytest.raises(OutputPathError, match='is a FIFO'):  # turned into a FIFO while the write ran
        with atomic_write(tmp_path / 'file') as f:
            f.write('new')
            os.remove(tmp_path / 'file')
            os.mkfifo(tmp_path / 'file')
    assert sorted(os.listdir(tmp_path)) == ['dir', 'file', 'pipe']  # the temp file is gone
    with pytest.raises(OutputPathError, match='pipe is a FIFO, not a folder') as e:
        with atomic_folder(tmp_path / 'pipe' / 'repo'):
            pass
    assert isinstance(e.value, OSError) and '\n' not in str(e.value)
    (tmp_path / 'f').write_text('x')
    with pytest.raises(OutputPathError, match='it is a regular file, not a folder'):
        with atomic_folder(tmp_path / 'f', overwrite=True):
            pass
    assert (tmp_path / 'f').read_text() == 'x'


def test_mode_is_open_mode_whatever_the_writer_put_in_place(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / 'w.safetensors') as tmp:
            fd, own = __import__('tempfile').mkstemp(dir=tmp_path)  # a writer's own 0600 temp file, renamed
            os.close(fd)
            os.replace(own, tmp)
        with atomic_folder(tmp_path / 'repo') as folder:
            (folder / 'sub').mkdir(mode=0o700)
            os.close(os.open(folder / 'sub' / 'a', os.O_CREAT | os.O_WRONLY, 0o600))
    finally:
        os.umask(old)
    assert (tmp_path / 'w.safetensors').stat().st_mode & 0o777 == 0o644
    assert [(tmp_path / 'repo' / p).stat().st_mode & 0o777 for p in ('', 'sub', 'sub/a')] == [0o755, 0o755, 0o644]


def test_next_write_removes_a_killed_writes_temp_but_not_a_running_one(tmp_path):
    path = tmp_path / 'results.json'
    module = REPO_ROOT / 'timm_cra' / 'utils' / 'io.py'
    proc = subprocess.Popen([sys.executable, '-c', _WRITER, str(path), str(module)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == 'written\n'
        with atomic_write(path) as f:  # the other write is running: its temp file stays
            f.write('mine')
        assert len(list(tmp_path.glob(temp_pattern(str(path))))) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    with atomic_write(path) as f:  # now it is a killed write's: removed
        f.write('again')
    assert os.listdir(tmp_path) == ['results.json'] and path.read_text() == 'again'


_SWAP_KILLER = _LOAD_IO + '''
io_._renameat2 = lambda *a: False  # a platform without renameat2: the two-rename swap
rename = pathlib.Path.rename
def rename_then_die(self, target):  # killed right after the previous version is set aside
    result = rename(self, target)
    if str(target).endswith('.old') and 'new' not in os.listdir(target):
        os.kill(os.getpid(), signal.SIGKILL)
    return result
pathlib.Path.rename = rename_then_die
with io_.atomic_folder(sys.argv[1], overwrite=True) as tmp:
    (tmp / 'config.json').write_text('new')
    (tmp / 'new').write_text('')
'''


def test_a_write_killed_mid_swap_never_loses_the_previous_folder(tmp_path):
    """Where the platform has no renameat2 exchange: killed between setting the old folder aside and moving the new
    one in, the next write to that place, even one that then fails, puts the previous version back first (it is
    never cleaned up as a leftover)."""
    out = tmp_path / 'repo'
    out.mkdir()
    (out / 'config.json').write_text('old')
    module = REPO_ROOT / 'timm_cra' / 'utils' / 'io.py'
    proc = subprocess.run([sys.executable, '-c', _SWAP_KILLER, str(out), str(module)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and list(tmp_path.glob('.repo.*.old'))  # the state the kill left
    with pytest.raises(RuntimeError, match='failing writer'):
        with atomic_folder(out, overwrite=True):
            raise RuntimeError('failing writer')
    assert (out / 'config.json').read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['repo']


def test_file_digest_is_sha256_or_the_seeded_hash_over_every_chunk(tmp_path):
    """Several 1 MiB chunks and a partial one: sha256 of all the bytes, and with git's seeded sha1 the id
    `git hash-object` gives."""
    import hashlib
    from timm_cra.utils.io import file_digest
    data = os.urandom(3 * (1 << 20) + 12345)
    path = tmp_path / 'weights.bin'
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    git = subprocess.run(['git', 'hash-object', str(path)], capture_output=True, text=True, check=True).stdout.strip()
    assert file_digest(path, hashlib.sha1(f'blob {len(data)}\0'.encode())) == git
    (tmp_path / 'empty').write_bytes(b'')
    assert file_digest(tmp_path / 'empty') == hashlib.sha256(b'').hexdigest()


def test_a_255_byte_output_name_gets_a_temp_name_that_fits(tmp_path):
    """`.<name>.<random>.tmp` of a 255-byte name passed the file-name limit (ENAMETOOLONG): the temp name is cut
    to fit, stays in the same folder, unique to its target (a digest of the whole name), and is still found as
    that target's leftover by the next write."""
    stem = 'é' * 100 + 'x' * 50  # multi-byte characters: the limit is in bytes, and none is cut in half
    name = stem + 'x' * (255 - len((stem + '.onnx').encode())) + '.onnx'
    other = name[:-6] + 'y.onnx'  # same first 254 bytes but one
    assert len(name.encode()) == len(other.encode()) == 255
    for target in (name, other):
        with atomic_write(tmp_path / target, 'wb') as f:
            tmp = f.name
            assert os.path.dirname(tmp) == str(tmp_path) and len(os.path.basename(tmp).encode()) <= 255
            f.write(target.encode())
        assert (tmp_path / target).read_bytes() == target.encode()
    assert sorted(os.listdir(tmp_path)) == sorted([name, other])
    import fnmatch
    assert fnmatch.fnmatch(os.path.basename(tmp), temp_pattern(str(tmp_path / other)))
    assert not fnmatch.fnmatch(os.path.basename(tmp), temp_pattern(str(tmp_path / name)))
    leftover = tmp_path / os.path.basename(tmp)  # a killed write of `other` left its temp file
    leftover.write_bytes(b'torn')
    with atomic_write(tmp_path / name) as f:
        f.write('x')
    assert leftover.exists()  # another target's temp is not this write's to remove
    with atomic_write(tmp_path / other) as f:
        f.write('x')
    assert sorted(os.listdir(tmp_path)) == sorted([name, other])
    with atomic_folder(tmp_path / ('d' * 255)) as staging:  # a folder's staging and set-aside names too
        (staging / 'f').write_text('1')
    with atomic_folder(tmp_path / ('d' * 255), overwrite=True) as staging:
        (staging / 'f').write_text('2')
    assert (tmp_path / ('d' * 255) / 'f').read_text() == '2' and len(os.listdir(tmp_path)) == 3


def test_not_folder_reason_names_what_the_path_is(tmp_path):
    from timm_cra.utils.io import not_folder_reason
    os.mkfifo(tmp_path / 'pipe')
    (tmp_path / 'file').write_text('x')
    os.symlink(tmp_path / 'gone', tmp_path / 'dangling')
    assert not_folder_reason(tmp_path) is None
    assert [not_folder_reason(tmp_path / n) for n in ('pipe', 'file', 'dangling', 'missing')] == [
        'is a FIFO, not a folder', 'is a regular file, not a folder', 'is a dangling symlink, not a folder',
        'does not exist']


def test_a_write_never_takes_or_removes_another_targets_temp_or_set_aside(tmp_path):
    """`m` and `m.v2` side by side: `.m.*.old` also matched `.m.v2.<random>.old`, so a write to `m` after a killed
    write of `m.v2` moved m.v2's previous version into `m` (no overwrite: "m already exists"), and an overwrite of
    `m` deleted it. Temp names are the prefix, exactly 8 hex digits, the suffix: each target finds only its own."""
    set_aside = tmp_path / '.m.v2.deadbeef.old'  # what a write of m.v2 killed mid-swap leaves
    set_aside.mkdir()
    (set_aside / 'MARKER_V2').write_text('v2')
    with atomic_folder(tmp_path / 'm') as staging:  # variant A: a new target m, no overwrite
        (staging / 'config.json').write_text('m')
    assert os.listdir(tmp_path / 'm') == ['config.json'] and (set_aside / 'MARKER_V2').exists()
    with atomic_folder(tmp_path / 'm', overwrite=True) as staging:  # variant B: m replaced
        (staging / 'config.json').write_text('m2')
    assert (tmp_path / 'm' / 'config.json').read_text() == 'm2' and (set_aside / 'MARKER_V2').exists()
    with pytest.raises(FileExistsError, match='m.v2 already exists'):  # m.v2's own next write puts it back first
        with atomic_folder(tmp_path / 'm.v2'):
            pass
    assert sorted(os.listdir(tmp_path)) == ['m', 'm.v2'] and os.listdir(tmp_path / 'm.v2') == ['MARKER_V2']
    # files: a killed write of file `m.v2` left its temp file; writes to `m` leave it, m.v2's next write removes it
    files = tmp_path / 'files'
    files.mkdir()
    leftover = files / '.m.v2.0a1b2c3d.tmp'
    leftover.write_text('torn')
    for _ in range(2):
        with atomic_write(files / 'm') as f:
            f.write('m')
    assert leftover.exists()
    with atomic_write(files / 'm.v2') as f:
        f.write('v2')
    assert sorted(os.listdir(files)) == ['m', 'm.v2']


#: A publish-like write of argv[1] with .git kept, SIGKILLed right after the call of io's renameat2 whose flags are
#: argv[3] (the exchange), or right before it when argv[4] is 'before'.
_EXCHANGE_KILLER = _LOAD_IO + '''
renameat2, flags, when = io_._renameat2, int(sys.argv[3]), sys.argv[4]
def renameat2_then_die(src, dst, f):
    if f == flags and when == 'before':
        os.kill(os.getpid(), signal.SIGKILL)
    done = renameat2(src, dst, f)
    if f == flags:
        print(done, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return done
io_._renameat2 = renameat2_then_die
with io_.atomic_folder(sys.argv[1], overwrite=True, keep=('.git',)) as tmp:
    (tmp / 'config.json').write_text('new')
'''


@pytest.mark.parametrize('when', ['before', 'after'])
def test_a_write_killed_at_the_swap_leaves_a_folder_at_out_dir_and_its_git_follows(tmp_path, when):
    """A kill -9 between atomic_folder's two renames (out -> .old, tmp -> out) left no folder at out_dir (a mirror
    serving it answered 404) until the next write. The old and new folders are now exchanged in one renameat2 call:
    killed right before or right after it, out_dir holds the old or the new folder, complete; the replaced folder's
    .git, left set aside by a kill after the exchange, moves into the new one with the next write."""
    from timm_cra.utils.io import _RENAME_EXCHANGE
    out = tmp_path / 'repo'
    (out / '.git').mkdir(parents=True)
    (out / '.git' / 'HEAD').write_text('ref: refs/heads/main\n')
    (out / 'config.json').write_text('old')
    module = REPO_ROOT / 'timm_cra' / 'utils' / 'io.py'
    proc = subprocess.run([sys.executable, '-c', _EXCHANGE_KILLER, str(out), str(module), str(_RENAME_EXCHANGE),
                           when], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if proc.stdout.strip() == 'False':
        pytest.skip('this filesystem has no renameat2 RENAME_EXCHANGE (the two-rename swap is tested above)')
    assert (out / 'config.json').read_text() == ('old' if when == 'before' else 'new')
    if when == 'before':
        assert (out / '.git' / 'HEAD').is_file()
    with atomic_folder(out, overwrite=True, keep=('.git',)) as tmp:  # the next write
        (tmp / 'config.json').write_text('next')
    assert (out / 'config.json').read_text() == 'next'
    assert (out / '.git' / 'HEAD').read_text() == 'ref: refs/heads/main\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['repo']


def test_a_folder_created_while_staging_is_never_replaced(tmp_path):
    """atomic_folder checked "exists" before staging and, at the swap, set aside and deleted whatever folder was at
    out_dir by then, even without overwrite: someone's folder created meanwhile was deleted, and two writers of one
    new folder both "wrote" it. Without a folder there at the start, the final rename replaces nothing (renameat2
    RENAME_NOREPLACE; elsewhere a rename that cannot replace a folder holding anything), with overwrite too; with
    overwrite, a folder replaced by another meanwhile is refused."""
    from timm_cra.utils.io import OutputPathError
    import timm_cra.utils.io as io_
    for overwrite in (False, True):
        for platform_rename in (io_._renameat2, lambda *a: False):
            out = tmp_path / f'new-{overwrite}-{platform_rename is io_._renameat2}'
            saved, io_._renameat2 = io_._renameat2, platform_rename
            try:
                with pytest.raises(OutputPathError, match='was created by someone else while this one was written'):
                    with atomic_folder(out, overwrite=overwrite) as tmp:
                        (tmp / 'config.json').write_text('mine')
                        out.mkdir()  # another process, meanwhile
                        (out / 'precious.txt').write_text('theirs')
            finally:
                io_._renameat2 = saved
            assert sorted(os.listdir(out)) == ['precious.txt']
    out = tmp_path / 'replaced'
    out.mkdir()
    with pytest.raises(OutputPathError, match='was replaced by someone else while the new one was written'):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / 'config.json').write_text('mine')
            out.rename(tmp_path / 'moved')
            out.mkdir()
            (out / 'precious.txt').write_text('theirs')
    assert sorted(os.listdir(out)) == ['precious.txt']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


_HOLDER = _LOAD_IO + '''
with io_.locked_folder(sys.argv[1], wait=False):
    print('held', flush=True)
    sys.stdin.read()
'''


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_writes_into_a_folder_another_process_holds_wait_then_are_refused(tmp_path):
    """A training holds its run folder (locked_folder) for the whole run; another command replacing a file in it
    (checkpoint upgrade onto last.pth) or the folder itself went ahead. Such writes wait a few seconds for their turn,
    then are refused in one line naming the holder; the holder's own writes go ahead."""
    from timm_cra.utils.io import OutputPathError, locked_folder
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'last.pth').write_bytes(b'checkpoint')
    module = REPO_ROOT / 'timm_cra' / 'utils' / 'io.py'
    holder = subprocess.Popen([sys.executable, '-c', _HOLDER, str(run), str(module)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'held\n'
        busy = rf'another process \(pid {holder.pid}\) is writing {run}: a training'
        with pytest.raises(OutputPathError, match=busy):
            with atomic_write(run / 'last.pth', 'wb') as f:
                f.write(b'other')
        with pytest.raises(OutputPathError, match=rf'pid {holder.pid}'):
            with atomic_folder(run, overwrite=True) as tmp:
                (tmp / 'config.json').write_text('repo')
        assert (run / 'last.pth').read_bytes() == b'checkpoint' and os.listdir(run) == ['last.pth']
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with locked_folder(str(run), wait=False):  # this process's own writes into what it holds
        with atomic_write(run / 'metrics.csv') as f:
            f.write('epoch\n')
    assert sorted(os.listdir(run)) == ['last.pth', 'metrics.csv']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
