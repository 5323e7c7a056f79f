"""What the zoo knows about a model: one :class:`ModelInfo` per architecture, one :class:`Variant` card per
``arch.variant``.

A variant card is the one place a newcomer reads: the builder arguments, where ``pretrained=True``
takes its weights from (none, one, or several sources tried in order), the preprocessing record
its transforms are built from, the numbers the authors published for it (each with its source),
and the names of the recipe that trains it and the evaluation table that checks it. Weights
belong to a variant, as a timm ``arch.tag`` names one set of weights.

Nothing here downloads or builds anything: :mod:`zoo.hub` resolves weight sources and
:func:`zoo.create_model` builds models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

import torch

from zoo.errors import UnknownNameError
from zoo.registry import did_you_mean


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub repository, pinned to a commit and checked by sha256.

    ``sha256=None`` means the file is not pinned yet: loading it warns once.
    """

    repo_id: str
    filename: str
    revision: str
    sha256: str | None = None
    repo_type: str = "model"


@dataclass(frozen=True)
class UrlFile:
    """A file at a plain URL (e.g. a GitHub release asset), checked by sha256 when pinned.

    ``env_base`` names an environment variable that, when set, replaces everything in ``url``
    before the file name, so that tests can serve the file from a loopback server.
    """

    url: str
    sha256: str | None = None
    env_base: str | None = None


@dataclass(frozen=True)
class DriveFile:
    """A file inside a public Google Drive archive (downloaded with gdown, unpacked, cached).

    ``file_id`` names the Drive file (the ``/file/d/<id>/`` part of its link) and ``sha256`` pins
    the archive. ``member`` is the path of the wanted file inside the archive, matched as a path
    suffix so that the archive's top-level folder name does not matter; a TensorFlow checkpoint is
    named by its prefix (``.../model.ckpt`` for ``model.ckpt.index`` + ``model.ckpt.data-*``).
    """

    file_id: str
    member: str
    sha256: str | None = None

    @property
    def url(self) -> str:
        return f"https://drive.google.com/file/d/{self.file_id}/view"


FileRef = Union[HubFile, UrlFile, DriveFile]
_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_pinned(ref: FileRef) -> bool:
    """A file is pinned when its content is fixed: a sha256 and, on the Hub, a commit (not a branch)."""
    if isinstance(ref, HubFile):
        return bool(ref.sha256) and bool(_COMMIT.fullmatch(ref.revision))
    return bool(ref.sha256)


def describe_file(ref: FileRef) -> str:
    """One line naming a file and its pin state, e.g. ``https://.../x.ckpt (unpinned)``."""
    if isinstance(ref, HubFile):
        where = f"hf-hub:{ref.repo_id}/{ref.filename}@{ref.revision}"
    elif isinstance(ref, DriveFile):
        where = f"{ref.url} :: {ref.member}"
    else:
        where = ref.url
    return f"{where} ({'sha256 ' + ref.sha256 if is_pinned(ref) else 'unpinned'})"


@dataclass(frozen=True)
class WeightSource:
    """One way to obtain weights.

    kind:
      ``"zoo"``      our converted safetensors + config.json on the Hub (``file`` is the weights file),
      ``"release"``  the authors' original checkpoint (``file``: a URL, a Hub file or a member of a Drive
                     archive), converted with the model's converter on
                     first use and cached; ``extra_files`` maps further converter options to files fetched
                     beside it (e.g. AML's whitening file or the teacher of an asymmetric pair),
      ``"init"``     a training initialisation (e.g. an ImageNet backbone) applied by
                     ``init_fn(model, *paths)``, ``paths`` being the downloaded ``file`` and ``extra_files``.
    """

    kind: str
    description: str
    file: FileRef | None = None
    extra_files: Mapping[str, FileRef] = field(default_factory=dict)
    init_fn: Callable[..., None] | None = None
    licence: str | None = None

    def files(self) -> list[FileRef]:
        return [f for f in (self.file, *self.extra_files.values()) if f is not None]

    def unpinned(self) -> list[FileRef]:
        """The files of this source whose content is not fixed by a sha256 (and a commit on the Hub)."""
        return [f for f in self.files() if not is_pinned(f)]


@dataclass(frozen=True)
class PublishedResult:
    """A number the authors published, and where. ``value=None``: not transcribed yet."""

    benchmark: str
    metric: str
    value: float | None
    source: str


def results(benchmark: str, values: Mapping[str, float | None], source: str) -> tuple[PublishedResult, ...]:
    """``PublishedResult`` for each ``metric: value`` of one benchmark, all from ``source``."""
    return tuple(PublishedResult(benchmark, metric, value, source) for metric, value in values.items())


@dataclass(frozen=True)
class Variant:
    """The card of one ``arch.variant``.

    Attributes:
        args: keyword arguments of the architecture's builder.
        weights: what ``pretrained=True`` loads, tried in order (our Hub repo first, then the
            authors' release); empty when nothing was published for this variant.
        published: the authors' numbers for this variant, each with its source.
        recipe: the packaged training recipe that trains this variant (``python -m zoo train --recipe``).
        table: the packaged evaluation table that checks it (``python -m zoo eval --table``).
        preprocessing: the evaluation preprocessing record (``None``: the architecture's default for
            ``args``); the transforms are built from it and exported config.json files carry it.
        description: one line on what this variant is.
    """

    args: Mapping[str, Any] = field(default_factory=dict)
    weights: tuple[WeightSource, ...] = ()
    published: tuple[PublishedResult, ...] = ()
    recipe: str | None = None
    table: str | None = None
    preprocessing: Mapping[str, Any] | None = None
    description: str = ""


@dataclass
class ModelInfo:
    """Everything the zoo knows about one architecture (``arch``) and its variants.

    Attributes:
        name: entry point name, e.g. ``"dinov2_salad"``.
        builder: ``builder(**variant.args) -> nn.Module``, randomly initialised, without any download.
        variants: tag -> :class:`Variant`; the first is the default.
        preprocessing: ``preprocessing(args) -> record``, the default evaluation preprocessing record.
        transforms: ``transforms(**record) -> (query_transform, database_transform)``, each PIL image ->
            float tensor (C, H, W), as the original evaluation prepares it.
        weights: named weight sources any variant can load (``pretrained="<name>"``), e.g. training
            initialisations.
        converter: ``converter(path, **options) -> (state_dict, config)`` reading the authors'
            checkpoint format; ``config`` holds at least ``{"variant": {...}}``.
        no_weights_reason: why no variant has published weights (e.g. nothing was released), and
            what to do instead.
    """

    name: str
    builder: Callable[..., torch.nn.Module]
    paper: str
    arxiv: str | None
    task: str
    licence: str
    code_licence: str
    original_code: str
    citation: str
    descriptor_dim: Callable[[dict], int] | int
    variants: dict[str, Variant]
    preprocessing: Callable[[dict[str, Any]], dict[str, Any]]
    transforms: Callable[..., tuple[Callable, Callable]]
    weights: dict[str, WeightSource] = field(default_factory=dict)
    converter: Callable[..., tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None
    no_weights_reason: str | None = None
    summary: str = ""

    @property
    def default_variant(self) -> str:
        return next(iter(self.variants))

    def variant(self, tag: str | None = None) -> Variant:
        """The card of ``tag`` (default variant when None); unknown tags name the known ones."""
        tag = tag or self.default_variant
        if tag not in self.variants:
            raise UnknownNameError(f"{self.name}: unknown variant {tag!r}.{did_you_mean(tag, self.variants, 0.4)} "
                                   f"Known variants: {', '.join(self.variants)}")
        return self.variants[tag]

    def variant_kwargs(self, tag: str | None = None) -> dict[str, Any]:
        return dict(self.variant(tag).args)

    def preprocessing_record(self, tag: str | None = None, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The evaluation preprocessing record of a variant (its card's, else the default for ``args``)."""
        card = self.variant(tag)
        if card.preprocessing is not None:
            return dict(card.preprocessing)
        return self.preprocessing(dict(card.args if args is None else args))

    def pretrained_variants(self) -> list[str]:
        """Tags of the variants that ``pretrained=True`` can load."""
        return [tag for tag, card in self.variants.items() if card.weights]

    def dim(self, variant_kwargs: Mapping[str, Any]) -> int:
        return self.descriptor_dim(dict(variant_kwargs)) if callable(self.descriptor_dim) else self.descriptor_dim

    def published(self, tag: str | None = None) -> tuple[PublishedResult, ...]:
        return self.variant(tag).published
