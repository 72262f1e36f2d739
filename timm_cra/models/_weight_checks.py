"""Checks around a pretrained-weights load that timm and huggingface_hub leave out.

* :func:`check_hub_reachable`: one short request before a download, so an endpoint that gives no answer
  (refuses or closes connections, does not resolve, stays silent past the time-out) fails at once instead of
  after huggingface_hub's back-off retries (which stay in force for 5xx answers and downloads cut mid-way:
  those can heal).
* :func:`verify_download`: a Hub LFS file's ETag is its sha256, and the blob in the cache is named after it;
  huggingface_hub does not compare the two, so a file whose bytes changed in transit would load silently.
* :func:`dtype_checked_filter`: ``load_state_dict`` casts an integer tensor into a float parameter without a
  word; a quantised or foreign file then gives a model that predicts nothing. Checked on the state dict timm
  read, whatever the file (``model.safetensors``, ``pytorch_model.bin``, ...).
* :func:`bundled_weights`: the copies of small Hub repos' weights that ship inside this package, checked
  against their recorded sha256 before use (a damaged install must not load silently).
* :func:`repo_file`: another file of the repo the weights came from, at their revision (``config.json``,
  ``preprocessor_config.json``), and :func:`repo_files` its file names, for the checks that one repo gives one
  answer (:func:`other_weights_problem`).
* :func:`check_finite_weights`: NaN / Inf weights (a diverged run, a damaged file) load silently and evaluate
  to NaN; refused unless asked for (:func:`allow_nonfinite_weights`).
"""
import contextlib
import contextvars
import os
import re
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

from torch import nn
from timm.models import PretrainedCfg

from ..utils.errors import TimmCraError, transport_failure
from ..utils.hub_session import bounded_client
from ..utils.io import file_digest

__all__ = ['WeightsCheckError', 'HubUnreachableError', 'split_revision', 'hub_weights_location', 'check_hub_reachable', 'verify_download',
           'dtype_checked_filter', 'check_file_dtypes', 'BUNDLED_WEIGHTS', 'BUNDLED_DIR', 'bundled_weights',
           'hub_differs_from_bundled',
           'check_finite_weights', 'allow_nonfinite_weights', 'repo_file', 'PREPROCESSOR_FILENAMES', 'repo_files',
           'other_weights_problem', 'check_file_fits']

WEIGHTS_FILENAME = 'model.safetensors'
#: transformers' image-processor files (``IMAGE_PROCESSOR_NAME``, and transformers 5's combined ``PROCESSOR_NAME``,
#: read first when it holds an ``image_processor`` block): where a repo holds one, its pipeline preprocesses with it
#: instead of the ``config.json``'s timm fields that timm and this package read (this package never writes one).
PREPROCESSOR_FILENAMES = ('preprocessor_config.json', 'processor_config.json')
#: Weight files a client may read instead of (or over) ``model.safetensors``: timm's ``_PREFERRED_FILES`` (read in
#: that order from a folder; ``hf-hub:`` falls back to ``pytorch_model.bin``) and transformers' (``WEIGHTS_NAME``,
#: the ``*_INDEX_NAME``s and their shards, read when ``model.safetensors`` is missing; TF / Flax files of
#: transformers 4), plus PEFT adapters, which transformers applies over the weights whenever ``peft`` is installed.
_TRANSFORMERS_WEIGHT_FILES = ('pytorch_model.bin', 'pytorch_model.bin.index.json', 'model.safetensors.index.json',
                              'tf_model.h5', 'tf_model.h5.index.json', 'flax_model.msgpack',
                              'flax_model.msgpack.index.json')
#: The order transformers picks a repo's weights in (``modeling_utils``: safetensors, its index, then the pickles).
_TRANSFORMERS_ORDER = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                       'pytorch_model.bin.index.json', 'tf_model.h5', 'tf_model.h5.index.json', 'flax_model.msgpack',
                       'flax_model.msgpack.index.json')
_ADAPTER_FILES = ('adapter_config.json', 'adapter_model.safetensors', 'adapter_model.bin')
_SHARD_RE = re.compile(r'^(model|pytorch_model|tf_model|flax_model)-\d+-of-\d+\.(safetensors|bin|h5|msgpack)$')

#: Hub repos whose ``model.safetensors`` also ships inside this package, as ``BUNDLED_DIR/<repo_id>/``, with
#: its sha256. A load of such a repo (default revision) that the Hub cannot serve (offline, unreachable,
#: repo missing) falls back to the copy (``create_cra_model``). The files are ``hub/<repo_id>/``'s, byte for
#: byte (tests/hub/test_bundled_weights.py); in git both paths are one blob. Only small repos belong here.
BUNDLED_WEIGHTS = {
    'timm-cra/cifar_resnet20.cifar10': 'ef26d3b87e6f1eaeebe3acd7f6c666a1d635705571c0a7704e6678addba0547b',
    'timm-cra/cra_cifar_resnet20.cifar10': '2d31f71c00366184e80ed7c39daf2c7e27443e28311bcbe67e66a41d6b0bbef5',
    'timm-cra/cifar_resnet20.cifar10_e50': 'f02374d7526c4647e3d0ac5941973d88a44a7191a21ede2786c1916b4f8dce5e',
    'timm-cra/cra_cifar_resnet20.cifar10_e50': '382184db5b6731ce90dd4d4735ca9fd3b43953f8622b302e43d13154c6ba6c65',
}
BUNDLED_DIR = Path(__file__).resolve().parent / 'bundled'
_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_PROBE_TIMEOUT_S = 5.0


class WeightsCheckError(TimmCraError):
    """A check failed; the message is the explanation (wrapped into ``PretrainedWeightsError`` by the caller)."""


class HubUnreachableError(WeightsCheckError):
    """No connection to the endpoint could be opened."""


def split_revision(hf_hub_id: str) -> Tuple[str, Optional[str]]:
    """``'org/repo@rev'`` -> ``('org/repo', 'rev')``; no ``@``: revision ``None`` (the default branch)."""
    repo_id, _, revision = hf_hub_id.partition('@')
    return repo_id, revision or None


def hub_weights_location(cfg: PretrainedCfg) -> Optional[Tuple[str, Optional[str]]]:
    """``(repo_id, revision)`` when timm will fetch this cfg's weights from the Hub, else ``None``."""
    # timm's order (_resolve_pretrained_source): an hf-hub source, then state_dict, file, hf_hub_id, url.
    if cfg.source != 'hf-hub' and (cfg.source == 'local-dir' or cfg.state_dict is not None or cfg.file):
        return None
    if not cfg.hf_hub_id:
        return None
    return split_revision(cfg.hf_hub_id)


def cached_weights(repo_id: str, revision: Optional[str]) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache
    cached = try_to_load_from_cache(repo_id, WEIGHTS_FILENAME, revision=revision)
    return Path(cached) if isinstance(cached, str) else None


def check_hub_reachable(repo_id: str, revision: Optional[str]) -> None:
    """Raise :class:`HubUnreachableError` if the endpoint gives no answer at all (refused, DNS failure, connection
    closed or reset before an answer, no complete answer within ``_PROBE_TIMEOUT_S``).

    An answer of any status is left to huggingface_hub and its retries.
    """
    from huggingface_hub import constants, hf_hub_url
    if constants.HF_HUB_OFFLINE:
        return
    url = hf_hub_url(repo_id, WEIGHTS_FILENAME, revision=revision)
    try:
        # a trickled answer too (headers one line a second never end); a client of its own, so other threads'
        # downloads keep theirs
        with bounded_client(_PROBE_TIMEOUT_S) as client:
            client.request('HEAD', url, timeout=_PROBE_TIMEOUT_S, follow_redirects=False)
    except Exception as err:  # noqa: BLE001  (classified below; everything else is the client's to retry)
        if transport_failure(err) is not None:
            raise HubUnreachableError(f'is unreachable (no answer: {err or type(err).__name__})') from err


def snapshot_commit(path: Union[str, Path]) -> Optional[str]:
    """The commit of the Hub cache snapshot holding ``path`` (``.../snapshots/<commit>/<file>``), or None."""
    path = Path(path)
    commit = path.parent.name
    return commit if path.parent.parent.name == 'snapshots' and re.fullmatch(r'[0-9a-f]{40}', commit) else None


def repo_file(location: Tuple[str, Optional[str]], filename: str) -> Optional[str]:
    """Path of a Hub repo's ``filename`` at the revision its weights were read from (their cache snapshot, else
    ``location``'s), cached like them; ``None`` when the repo has none, or none can be had (offline or Hub
    unreachable, with weights cached by an older timm-cra that did not fetch it)."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub import errors as hf_errors
    repo_id, revision = location
    weights = cached_weights(*location)
    if weights is not None:
        revision = snapshot_commit(weights) or revision
    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if cached is not None:  # a path, or huggingface_hub's marker of a file the repo does not have
        return cached if isinstance(cached, str) else None
    if constants.HF_HUB_OFFLINE:
        return None
    try:
        check_hub_reachable(repo_id, revision)
    except HubUnreachableError:
        return None
    try:
        return hf_hub_download(repo_id, filename, revision=revision)
    except hf_errors.RemoteEntryNotFoundError:  # a 404; offline or unreachable is LocalEntryNotFoundError
        return None


def repo_files(location: Tuple[str, Optional[str]]) -> Optional[List[str]]:
    """The file names at the root of a Hub repo, at the revision its weights (else its ``config.json``) were read
    from: the Hub's listing, or offline / unreachable the files of its cache snapshot (all any client can read
    then); ``None`` when neither can be had."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    repo_id, revision = location
    snapshot = cached_weights(*location)
    if snapshot is None:
        config = try_to_load_from_cache(repo_id, 'config.json', revision=revision)
        snapshot = Path(config) if isinstance(config, str) else None
    if snapshot is not None:
        revision = snapshot_commit(snapshot) or revision
    if not constants.HF_HUB_OFFLINE:
        try:
            check_hub_reachable(repo_id, revision)
            return [f for f in HfApi().list_repo_files(repo_id, revision=revision) if '/' not in f]
        except Exception:  # noqa: BLE001  (no listing: what the cache holds is what a client can read)
            pass
    return sorted(p.name for p in snapshot.parent.iterdir()) if snapshot is not None else None


def other_weights_problem(names: Sequence[str]) -> Tuple[Optional[str], bool]:
    """``(why, refused)`` for a repo whose file ``names`` hold weight files besides ``model.safetensors``
    (:data:`_TRANSFORMERS_WEIGHT_FILES`, timm's ``_PREFERRED_FILES``, shards, PEFT adapters), ``(None, False)`` if
    none, or a lone file both timm and transformers read (timm's ``save_for_hf`` writes a ``pytorch_model.bin``
    alone). ``refused``: clients read different ones (no ``model.safetensors``: timm picks ``pytorch_model.bin``,
    transformers the shards of an index; an adapter: transformers with peft applies it); otherwise timm and
    transformers both read ``model.safetensors`` and the rest are only named (stock timm repos hold a
    ``pytorch_model.bin`` copy)."""
    from timm.models._hub import _PREFERRED_FILES
    known = set(_PREFERRED_FILES) | set(_TRANSFORMERS_WEIGHT_FILES) | set(_ADAPTER_FILES)
    others = sorted((n for n in names if n != WEIGHTS_FILENAME and (n in known or _SHARD_RE.match(n))),
                    key=lambda n: (bool(_SHARD_RE.match(n)), n))  # a shard is named after its index
    if not others:
        return None, False
    more = f' (and {len(others) - 1} more weight files)' if len(others) > 1 else ''
    adapter = next((n for n in others if n in _ADAPTER_FILES), None)
    if adapter:
        return (f"holds {adapter}: transformers (with peft installed) applies that adapter over the weights, timm "
                f"does not, so one repo would give two answers; remove it (a repo's weights are its "
                f"{WEIGHTS_FILENAME})"), True
    if WEIGHTS_FILENAME not in names:
        timm_pick = next((n for n in _PREFERRED_FILES if n in names), None)
        transformers_pick = next((n for n in _TRANSFORMERS_ORDER if n in names), None)
        if others == [timm_pick] and timm_pick == transformers_pick:  # one file both read (timm's save_for_hf)
            return None, False
        return (f"holds {others[0]}{more} and no {WEIGHTS_FILENAME}: timm and transformers pick other files among "
                f"those (timm pytorch_model.bin, transformers an index's shards), so one repo could give two answers; "
                f"a repo's weights are its {WEIGHTS_FILENAME}: save them as that (python -m timm_cra.hub.publish) and "
                f"remove the others"), True
    return (f"holds {others[0]}{more} beside {WEIGHTS_FILENAME}: timm and transformers read {WEIGHTS_FILENAME}, "
            f"other clients (transformers with use_safetensors=False, older timm) {others[0]}; remove it unless it "
            f"holds the same weights"), False


def drop_cached(link: Path) -> None:
    """Remove a cached file: its snapshot link and the blob it points at."""
    blob = link.resolve()
    for path in {link, blob}:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def verify_download(repo_id: str, revision: Optional[str]) -> None:
    """Compare a freshly downloaded weights file with the sha256 the Hub advertised (its ETag, the blob name).

    On a mismatch the file is removed from the cache (so that the next try downloads it again) and
    :class:`WeightsCheckError` is raised. Files whose ETag is not a sha256 (git-stored, not LFS) are skipped.
    """
    link = cached_weights(repo_id, revision)
    if link is None:
        return
    blob = link.resolve()
    if not _SHA256_RE.match(blob.name):
        return
    actual = file_digest(blob)
    if actual != blob.name:
        drop_cached(link)
        raise WeightsCheckError(
            f'the downloaded {WEIGHTS_FILENAME} does not match the sha256 the Hub advertised for it '
            f'(expected {blob.name}, got {actual}): it was altered or damaged in transit')


def hub_differs_from_bundled(repo_id: str, revision: Optional[str]) -> Optional[str]:
    """The sha256 of the cached Hub weights of a bundled repo (default revision) when it is not the bundled copy's,
    else None. The cached blob's name is the sha256 the Hub advertised (:func:`verify_download` holds the bytes to
    it); a git-stored file has no such name and is not compared."""
    expected = BUNDLED_WEIGHTS.get(repo_id)
    link = cached_weights(repo_id, revision) if expected and revision is None else None
    served = link.resolve().name if link is not None else None
    return served if served and _SHA256_RE.match(served) and served != expected else None


def bundled_weights(repo_id: str) -> Optional[Path]:
    """The package's verified copy of ``repo_id``'s weights, ``None`` if it ships none.

    Raises :class:`WeightsCheckError` when the copy is missing or its bytes differ from the recorded sha256.
    """
    expected = BUNDLED_WEIGHTS.get(repo_id)
    if expected is None:
        return None
    path = BUNDLED_DIR.joinpath(*repo_id.split('/'), WEIGHTS_FILENAME)
    fix = 'the timm-cra installation is damaged: reinstall it (pip install --force-reinstall --no-deps timm-cra)'
    if not path.is_file():
        raise WeightsCheckError(f'the copy bundled with timm-cra ({path}) is missing: {fix}')
    actual = file_digest(path)
    if actual != expected:
        raise WeightsCheckError(f'the copy bundled with timm-cra ({path}) does not match its recorded sha256 '
                                f'(expected {expected}, got {actual}): {fix}')
    return path


def dtype_checked_filter(inner: Optional[Callable] = None) -> Callable:
    """A timm ``pretrained_filter_fn`` that refuses integer, bool or complex tensors for floating-point model tensors.

    It sees the state dict timm read before ``load_state_dict`` casts it, so the check holds for every file timm
    may pick (``model.safetensors``, ``pytorch_model.bin``, other names in a folder) and every source. ``inner``:
    a filter to run first (its output is what gets loaded, so that is what is checked)."""
    from ..utils.weights import non_float_weights

    def filter_fn(state_dict, model):
        if inner is not None:
            state_dict = inner(state_dict, model)
        dtypes = {k: str(v.dtype) for k, v in state_dict.items() if hasattr(v, 'dtype')}
        problem = non_float_weights(model.state_dict(), dtypes)
        if problem:
            raise WeightsCheckError(f'the weights hold {problem}')
        return state_dict
    return filter_fn


def check_file_dtypes(model: nn.Module, path: str) -> None:
    """:func:`dtype_checked_filter`'s check after the load, on the weights file ``path`` (read again with the safe
    reader), for builders that take no filter of ours (timm's own architectures in a ``local-dir:`` folder)."""
    from ..utils.weights import non_float_weights, read_weights
    state = read_weights(path)[0]
    problem = non_float_weights(model.state_dict(), {k: str(v.dtype) for k, v in state.items()})
    if problem:
        raise WeightsCheckError(f'the weights hold {problem}')


def check_file_fits(path: str, build: Callable[[], nn.Module]) -> None:
    """Before timm reads a ``.safetensors`` weights file: its header's names and shapes against the model
    ``build()`` makes on the ``meta`` device (no memory). timm reads it with ``safetensors.torch.load_file``, which
    reads every tensor the header declares: one extra tensor claiming 4 GiB (a sparse file of a megabyte) was a
    MemoryError. Then the class names the header records against the ``config.json`` beside it, whose names timm
    labels with (:func:`~timm_cra.utils.weights.recorded_label_names`, the rule ``validate --checkpoint`` and publish
    apply). A file whose header cannot be read is left to the load, which reports it."""
    if not str(path).endswith('.safetensors') or not os.path.isfile(path):
        return
    import torch
    from ..utils.errors import UsageError
    from ..utils.weights import check_state_fits, recorded_label_names, safetensors_header
    try:  # dtypes as float: the load's own check (dtype_checked_filter) words those, as for any file
        header = {k: t.float() for k, t in safetensors_header(path).items()}
    except UsageError:
        return
    with torch.device('meta'):
        model = build()
    try:
        check_state_fits(model, header, source=path,
                         hint="the folder's config.json describes another model than its weights: re-export the "
                              "folder (the trainer and publish write both from one model)")
        recorded_label_names(path)
    except UsageError as e:
        raise WeightsCheckError(str(e).rstrip('.')) from None


_NONFINITE_ALLOWED = contextvars.ContextVar('timm_cra_nonfinite_allowed', default=False)


@contextlib.contextmanager
def allow_nonfinite_weights(allow: bool = True) -> Iterator[None]:
    """Pretrained loads inside the block accept NaN / Inf weights (``timm_cra.create_model(...,
    allow_nonfinite=True)`` uses it; like timm's ``set_layer_config``, a scoped setting for the builders)."""
    token = _NONFINITE_ALLOWED.set(allow)
    try:
        yield
    finally:
        _NONFINITE_ALLOWED.reset(token)


def check_finite_weights(model: nn.Module) -> None:
    """Refuse a model whose loaded weights hold NaN or infinity, unless :func:`allow_nonfinite_weights` is on."""
    from ..utils.weights import NONFINITE_FIX, nonfinite_tensors
    if _NONFINITE_ALLOWED.get():
        return
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise WeightsCheckError(
            f'the weights hold NaN/Inf values: {", ".join(bad[:3])}{" ..." if len(bad) > 3 else ""} (the run that '
            f'wrote them diverged or the file is damaged). Load other weights, or {NONFINITE_FIX}')
