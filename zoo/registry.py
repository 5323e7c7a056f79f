"""The one table of every model in the zoo.

Each method registers one :class:`ModelInfo` from its own module under ``zoo/models``. A
model info names its builder, its variants, where its pretrained weights come from (our Hub
repo, the authors' release, or an initialisation for training), its evaluation transforms,
licence, paper and the published numbers it should reach, in the spirit of torchvision's
``Weights`` enums and timm's pretrained configs.

Names follow timm's ``arch.tag`` convention: ``dinov2_salad`` is the architecture,
``dinov2_salad.8192_256`` one of its variants.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

#: The five entry points of the zoo. A name listed here whose module has not registered it
#: yet raises ``NotImplementedError`` instead of building anything.
ENTRY_POINTS = ("dinov2_salad", "dycl_resnet", "cvft_vgg", "ucdir_moco", "aml_student")

_MODEL_MODULES = {
    "dinov2_salad": "zoo.models.salad",
    "dycl_resnet": "zoo.models.dycl",
    "cvft_vgg": "zoo.models.cvft",
    "ucdir_moco": "zoo.models.ucdir",
    "aml_student": "zoo.models.aml",
}


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub repository, pinned to a commit and checked by sha256."""

    repo_id: str
    filename: str
    revision: str
    sha256: str | None = None
    repo_type: str = "model"


@dataclass(frozen=True)
class UrlFile:
    """A file at a plain URL (e.g. a GitHub release asset), checked by sha256 when known.

    ``env_base`` names an environment variable that, when set, replaces everything in ``url``
    before the file name, so that tests can serve the file from a loopback server.
    """

    url: str
    sha256: str | None = None
    env_base: str | None = None


@dataclass(frozen=True)
class WeightSource:
    """One way to obtain weights for a model.

    kind:
      ``"zoo"``      our converted safetensors + config.json on the Hub (``hub_files``),
      ``"release"``  the authors' original checkpoint (``file``: a :class:`HubFile` or :class:`UrlFile`),
                     converted with the model's converter on first use and cached,
      ``"init"``     a training initialisation (e.g. backbone only) built by ``init_fn(model)``.
    """

    kind: str
    description: str
    file: HubFile | UrlFile | None = None
    init_fn: Callable[[torch.nn.Module], None] | None = None
    licence: str | None = None


@dataclass(frozen=True)
class PublishedResult:
    """A number published by the authors, with where it was published."""

    dataset: str
    metric: str
    value: float | None
    source: str


@dataclass
class ModelInfo:
    """Everything the zoo knows about one architecture.

    Attributes:
        name: entry point name, e.g. ``"dinov2_salad"``.
        builder: ``builder(**variant_kwargs) -> nn.Module`` building a randomly initialised model
            without any download.
        variants: tag -> keyword arguments for ``builder``; the first is the default.
        weights: tag -> :class:`WeightSource`; ``"default"`` is what ``pretrained=True`` loads, if any.
        converter: ``converter(path, **options) -> (state_dict, config)`` reading the authors'
            checkpoint format into ours; ``config`` holds at least ``{"variant": {...}}``.
        transforms: ``transforms(**variant_kwargs) -> (query_transform, database_transform)``,
            each PIL image -> float tensor (C, H, W), as the original evaluation does it.
        no_weights_reason: why ``pretrained=True`` cannot work (e.g. nothing was released).
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
    variants: dict[str, dict[str, Any]]
    transforms: Callable[..., tuple[Callable, Callable]]
    weights: dict[str, WeightSource] = field(default_factory=dict)
    converter: Callable[..., tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None
    published: list[PublishedResult] = field(default_factory=list)
    no_weights_reason: str | None = None
    summary: str = ""

    @property
    def default_variant(self) -> str:
        return next(iter(self.variants))

    def variant_kwargs(self, tag: str | None = None) -> dict[str, Any]:
        tag = tag or self.default_variant
        if tag not in self.variants:
            raise ValueError(
                f"{self.name}: unknown variant {tag!r}; known variants: {', '.join(self.variants)}"
            )
        return dict(self.variants[tag])

    def dim(self, variant_kwargs: dict[str, Any]) -> int:
        return self.descriptor_dim(variant_kwargs) if callable(self.descriptor_dim) else self.descriptor_dim


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    """Add a model to the registry (called once, at import of its module)."""
    if info.name in _REGISTRY and _REGISTRY[info.name] is not info:
        raise ValueError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def _import_all() -> None:
    for name, module in _MODEL_MODULES.items():
        if name in _REGISTRY:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            # Only a model whose own module is absent is "not implemented yet"; a missing
            # dependency inside an existing module is a real error and must surface.
            if err.name != module:
                raise


def split_name(name: str) -> tuple[str, str | None]:
    """``"dinov2_salad.8192_256"`` -> ``("dinov2_salad", "8192_256")``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name`` (an architecture, optionally with ``.variant``)."""
    arch, _ = split_name(name)
    _import_all()
    if arch in _REGISTRY:
        return _REGISTRY[arch]
    if arch in ENTRY_POINTS:
        raise NotImplementedError(
            f"{arch} is one of the zoo's entry points but its port has not landed yet "
            f"(module {_MODEL_MODULES[arch]} is missing); see the project's issues."
        )
    known = sorted(set(_REGISTRY) | set(ENTRY_POINTS))
    close = difflib.get_close_matches(arch, known, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown model {name!r}.{hint} Known models: {', '.join(known)}")


def list_models(include_variants: bool = False) -> list[str]:
    """Names of the registered models (``arch`` or, with ``include_variants``, ``arch.variant``)."""
    _import_all()
    names = []
    for arch in sorted(_REGISTRY):
        if include_variants:
            names.extend(f"{arch}.{tag}" for tag in _REGISTRY[arch].variants)
        else:
            names.append(arch)
    return names
