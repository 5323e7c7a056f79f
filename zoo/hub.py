"""Weight resolution: our Hub repos, the authors' releases, local files.

``pretrained`` (see :func:`zoo.create_model`) resolves in this order:

* ``False``: nothing; the model keeps its random initialisation and nothing is downloaded.
* ``True``: the weight sources of the variant's card, tried in order. A ``"zoo"`` source is our
  safetensors + config.json on the Hub (pinned revision, sha256 checked); a ``"release"`` source
  is the authors' checkpoint, downloaded once, converted and cached as safetensors. A source that
  does not exist or cannot be reached passes to the next; a file whose sha256 differs from its pin
  is refused outright. A variant without sources fails before any network access.
* a name of one of the architecture's named sources (e.g. ``"moco_v2"``, ``"backbone"``).
* ``"hf-hub:org/repo[@revision]"``: a repo laid out as ``python -m zoo export`` writes it.
* a path: a directory (or ``model.safetensors``) written by ``python -m zoo convert``/``export``,
  or an original checkpoint, converted on the fly.

Environment: ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME``/``HF_HUB_CACHE`` are read at call
time (not only when huggingface_hub is first imported); ``TORCH_HOME`` locates the cache of
converted releases (``$TORCH_HOME/zoo``); a :class:`~zoo.models.cards.UrlFile`'s ``env_base`` variable
overrides its base URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from zoo.errors import (
    CheckpointError,
    ChecksumError,
    DownloadError,
    InputError,
    WeightsNotFoundError,
    WeightsUnavailableError,
    ZooError,
)
from zoo.io import atomic_path, atomic_write_text, sha256_file, zoo_cache_dir
from zoo.models.cards import DriveFile, FileRef, HubFile, ModelInfo, UrlFile, WeightSource, describe_file, is_pinned

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_TRUE = {"1", "true", "yes", "on"}


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _hf_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


_SUPPLY_HINT = ("Supply the weights yourself with pretrained=PATH (command line: --pretrained PATH), a directory from "
                "`python -m zoo convert` or the authors' checkpoint file, "
                "or build without weights with pretrained=False.")


def download_hub_file(ref: HubFile) -> Path:
    """Download (or find in the cache) one pinned Hub file and check its sha256."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{ref.repo_id}/{ref.filename}@{ref.revision}"
    try:
        path = hf_hub_download(
            ref.repo_id, ref.filename, revision=ref.revision, repo_type=ref.repo_type,
            endpoint=os.environ.get("HF_ENDPOINT") or None, cache_dir=_hf_cache_dir(),
            local_files_only=is_offline(),
        )
    except LocalEntryNotFoundError as err:  # subclasses EntryNotFoundError: check it first
        state = "offline (HF_HUB_OFFLINE is set)" if is_offline() else "the Hub cannot be reached"
        raise WeightsUnavailableError(f"{where} is not in the local cache and {state}. {_SUPPLY_HINT}") from err
    except RevisionNotFoundError as err:
        raise WeightsNotFoundError(f"revision {ref.revision!r} not found in Hub repo {ref.repo_id}") from err
    except EntryNotFoundError as err:
        raise WeightsNotFoundError(f"file {ref.filename!r} not found in Hub repo {ref.repo_id} at {ref.revision}") from err
    except RepositoryNotFoundError as err:
        raise WeightsNotFoundError(f"Hub repo {ref.repo_id!r} not found (or private)") from err
    except OSError as err:  # connection refused, truncated transfer ...
        raise DownloadError(f"downloading {where} failed: {err}") from err
    if ref.sha256:
        actual = sha256_file(path)
        if actual != ref.sha256:
            _evict_hub_file(Path(path))
            raise ChecksumError(f"{where}: sha256 {actual} differs from the pinned {ref.sha256}; "
                                "the downloaded file was deleted from the cache")
    return Path(path)


def _evict_hub_file(path: Path) -> None:
    """Remove a bad file from the Hub cache: the snapshot link and the blob it points to."""
    blob = path.resolve()
    for p in (path, blob):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def download_url(ref: UrlFile, dest_dir: Path | None = None) -> Path:
    """Download a release asset once into ``$TORCH_HOME/zoo/downloads`` (atomic, checksummed)."""
    url = ref.url
    if ref.env_base and os.environ.get(ref.env_base):
        url = os.environ[ref.env_base].rstrip("/") + "/" + url.rsplit("/", 1)[-1]
    name = url.rsplit("/", 1)[-1]
    dest_dir = dest_dir or zoo_cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    dest = dest_dir / name
    if dest.is_file():
        return dest
    if is_offline():
        raise WeightsUnavailableError(f"{url} is not in the local cache ({dest}) and HF_HUB_OFFLINE is set. {_SUPPLY_HINT}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        received = 0
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                for block in _progress(iter(lambda: response.read(1 << 20), b""), name,
                                       int(expected) if expected else None):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise WeightsNotFoundError(f"{url}: not found (HTTP 404)") from err
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError) as err:
            raise WeightsUnavailableError(f"{url} cannot be reached ({err}) and it is not cached. {_SUPPLY_HINT}") from err
        if expected is not None and received != int(expected):
            raise DownloadError(f"{url}: download truncated ({received} of {expected} bytes)")
        if ref.sha256 and digest.hexdigest() != ref.sha256:
            raise ChecksumError(f"{url}: sha256 {digest.hexdigest()} differs from the pinned {ref.sha256}")
    return dest


def _progress(blocks: Any, name: str, total: int | None) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return blocks

    def gen() -> Any:
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False) as bar:
            for block in blocks:
                bar.update(len(block))
                yield block
    return gen()


# --------------------------------------------------------------------------- zoo format


def save_pretrained(out_dir: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ extra text files) atomically into ``out_dir``.

    Each file is written with :func:`zoo.io.atomic_path`, so a reader never sees a half-written
    file; every text is serialised before the first file is replaced.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    texts = {CONFIG_NAME: json.dumps(config, indent=2, sort_keys=True) + "\n", **(extra_files or {})}
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    for name, text in texts.items():
        atomic_write_text(out_dir / name, text)
    return out_dir


def load_pretrained_dir(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a directory (or its ``model.safetensors``) in the zoo's format."""
    path = Path(path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    config_path = weights.parent / CONFIG_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such file (expected the output of `python -m zoo convert`)")
    try:
        state_dict = load_file(str(weights))
    except Exception as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from err
    if not config_path.is_file():
        return state_dict, {}
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return state_dict, config


# --------------------------------------------------------------------------- resolution


@dataclass
class ResolvedWeights:
    """What :func:`resolve_weights` found: a state dict + config, or an initialiser to run."""

    description: str
    state_dict: dict[str, torch.Tensor] | None = None
    config: dict[str, Any] | None = None
    init_fn: Callable[[torch.nn.Module], None] | None = None


def convert_checkpoint(info: ModelInfo, checkpoint: str | Path, **options: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an original checkpoint with the model's converter; config records its sha256.

    Raises CheckpointError (naming the file) when the converter meets a structure it does not
    know, which means the file is another model's checkpoint.
    """
    checkpoint = Path(checkpoint)
    if info.converter is None:
        raise CheckpointError(f"{checkpoint}: {info.name} has no converter for original checkpoints")
    if not checkpoint.exists() and not list(checkpoint.parent.glob(checkpoint.name + ".*")):
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    _check_converter_options(info, options)
    try:
        state_dict, config = info.converter(checkpoint, **options)
    except ZooError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        # A converter meeting an unexpected structure means the file is another model's checkpoint.
        raise CheckpointError(f"{checkpoint} cannot be read as a {info.name} checkpoint "
                              f"({type(err).__name__}: {err})") from err
    source = {"file": checkpoint.name, **config.get("source", {})}
    if checkpoint.is_file():
        source["sha256"] = sha256_file(checkpoint)
    elif Path(f"{checkpoint}.index").is_file():
        source["index_sha256"] = sha256_file(f"{checkpoint}.index")
    return state_dict, {**config, "architecture": info.name, "source": source}


def _check_converter_options(info: ModelInfo, options: dict[str, Any]) -> None:
    """Options a converter does not name are refused (a converter's ``**_`` would ignore them silently)."""
    import inspect

    assert info.converter is not None
    params = list(inspect.signature(info.converter).parameters.values())[1:]  # after the checkpoint path
    known = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"{info.name}: unknown converter option(s) {', '.join(map(repr, unknown))}; "
                         f"its converter takes {', '.join(known) or 'no options'}")


def download(ref: FileRef) -> Path:
    """One file, from the Hub, a URL or a Google Drive archive (cached; sha256 checked when pinned)."""
    if isinstance(ref, DriveFile):
        from zoo.drive import download_drive

        path = download_drive(ref)
    else:
        path = download_hub_file(ref) if isinstance(ref, HubFile) else download_url(ref)
    warn_unpinned(ref)  # said once the file is here and used, not before a download that may fail
    return path


_WARNED_UNPINNED: set[FileRef] = set()


def warn_unpinned(ref: FileRef) -> None:
    """Warn, once per file and process, that a card's file is used without a sha256 (and commit) pin."""
    if is_pinned(ref) or ref in _WARNED_UNPINNED:
        return
    _WARNED_UNPINNED.add(ref)
    warnings.warn(f"{describe_file(ref)}: this file is not pinned by a sha256 (and a commit on the Hub), so a changed "
                  "file would not be noticed; `python -m zoo publish` prints its sha256 to pin it", stacklevel=3)


def _convert_cached(info: ModelInfo, checkpoint: Path, options: dict[str, Path] | None = None) -> ResolvedWeights:
    """Convert an original checkpoint (with its option files) once; later calls read the cached safetensors."""
    # A TensorFlow checkpoint is a prefix (PREFIX.index + PREFIX.data-*): key it by its index.
    inputs = [checkpoint if checkpoint.is_file() else Path(f"{checkpoint}.index"), *(options or {}).values()]
    digest = sha256_file(inputs[0]) if len(inputs) == 1 else \
        hashlib.sha256("|".join(sha256_file(f) for f in inputs).encode()).hexdigest()
    cache = zoo_cache_dir() / "converted" / info.name / digest[:20]
    if (cache / WEIGHTS_NAME).is_file():
        state_dict, config = load_pretrained_dir(cache)
        return ResolvedWeights(f"{checkpoint} (converted, cached in {cache})", state_dict, config)
    state_dict, config = convert_checkpoint(info, checkpoint, **(options or {}))
    save_pretrained(cache, state_dict, config)
    return ResolvedWeights(f"{checkpoint} (converted)", state_dict, config)


def _resolve_source(info: ModelInfo, name: str, source: WeightSource) -> ResolvedWeights:
    if source.kind == "init":
        init_fn = source.init_fn
        assert init_fn is not None
        paths = [download(ref) for ref in source.files()]
        return ResolvedWeights(f"{info.name}:{name} ({source.description})",
                               init_fn=lambda model: init_fn(model, *paths))
    if source.kind == "zoo":
        assert isinstance(source.file, HubFile)
        weights = download(source.file)
        download_hub_file(HubFile(source.file.repo_id, CONFIG_NAME, source.file.revision, None, source.file.repo_type))
        state_dict, config = load_pretrained_dir(weights)
        return ResolvedWeights(f"hf-hub:{source.file.repo_id}@{source.file.revision}", state_dict, config)
    if source.kind == "release":
        assert source.file is not None
        path = download(source.file)
        options = {option: download(ref) for option, ref in source.extra_files.items()}
        return _convert_cached(info, path, options)
    raise ValueError(f"{info.name}:{name}: unknown weight source kind {source.kind!r}")


def _no_weights_message(info: ModelInfo, tag: str) -> str:
    having = [f"{info.name}.{t}" for t in info.pretrained_variants()]
    if info.no_weights_reason and not having:
        return info.no_weights_reason
    where = (f"variants with published weights: {', '.join(having)}" if having
             else f"no variant of {info.name} has published weights")
    return (f"{info.name}.{tag} has no published weights ({where}). Pass pretrained=PATH (a folder from "
            "`python -m zoo convert` or a training run's export), or pretrained=False for random weights."
            + (f" {info.no_weights_reason}" if info.no_weights_reason else ""))


# Errors after which the next source of a variant is tried: the source is absent or unreachable.
_TRY_NEXT = (WeightsNotFoundError, WeightsUnavailableError, DownloadError)


def resolve_weights(info: ModelInfo, pretrained: bool | str, tag: str | None = None) -> ResolvedWeights | None:
    """Find the weights ``pretrained`` names for variant ``tag`` of model ``info`` (see the module docstring)."""
    if pretrained is False or pretrained is None:
        return None
    tag = tag or info.default_variant
    if pretrained is True:
        sources = info.variant(tag).weights
        if not sources:
            raise WeightsUnavailableError(_no_weights_message(info, tag))
        failures: list[str] = []
        for i, source in enumerate(sources):
            try:
                return _resolve_source(info, tag, source)
            except _TRY_NEXT as err:
                if i == len(sources) - 1:
                    if failures:
                        raise type(err)(f"{err} (tried before: {'; '.join(failures)})") from err
                    raise
                failures.append(f"{source.description}: {err}")
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f"pretrained must be True, False or a string, not {type(pretrained).__name__}")
    pretrained = str(pretrained)
    if pretrained in info.weights:
        return _resolve_source(info, pretrained, info.weights[pretrained])
    if pretrained.startswith("hf-hub:"):
        repo, _, revision = pretrained[len("hf-hub:"):].partition("@")
        _check_repo_id(pretrained, repo)
        weights = download_hub_file(HubFile(repo, WEIGHTS_NAME, revision or "main"))
        download_hub_file(HubFile(repo, CONFIG_NAME, revision or "main"))
        state_dict, config = load_pretrained_dir(weights)
        return ResolvedWeights(pretrained, state_dict, config)
    path = Path(pretrained).expanduser()
    if path.is_dir() or path.suffix == ".safetensors":
        state_dict, config = load_pretrained_dir(path)
        arch = config.get("architecture")
        if arch and arch != info.name:
            raise CheckpointError(f"{path} holds weights of {arch}, not {info.name}")
        return ResolvedWeights(str(path), state_dict, config)
    if path.is_file() or Path(f"{path}.index").is_file():
        return _convert_cached(info, path)
    names = ", ".join(repr(t) for t in info.weights) or "none"
    raise WeightsNotFoundError(
        f"pretrained={pretrained!r} for {info.name}: no such file or directory, and not a weight source "
        f"name (known: {names}) nor 'hf-hub:org/repo[@revision]'")


def _check_repo_id(pretrained: str, repo: str) -> None:
    """An ``hf-hub:`` id must be a repo id as the Hub spells them; checked before any request."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise WeightsNotFoundError(f"pretrained={pretrained!r}: {repo!r} is not a Hub repo id "
                                   f"(expected hf-hub:org/repo[@revision]; {err})") from None


def clear_converted_cache(name: str | None = None) -> None:
    """Delete converted releases from ``$TORCH_HOME/zoo/converted`` (all, or one model's)."""
    root = zoo_cache_dir() / "converted"
    shutil.rmtree(root / name if name else root, ignore_errors=True)
