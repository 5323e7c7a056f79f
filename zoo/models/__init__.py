"""The zoo's models: one folder per method, each holding its network, converter, loss, training task and cards.

``MODELS`` is the registry of architectures (:class:`zoo.models.cards.ModelInfo`); each method
folder registers its own when it is first needed. Names follow timm's ``arch.variant``
convention: ``dinov2_salad`` is the architecture, ``dinov2_salad.8192_256`` one of its variants.
"""

from __future__ import annotations

from zoo.models.cards import ModelInfo
from zoo.registry import Registry, import_submodules

#: The five entry points of the zoo (``hubconf.py``), in the README's order.
ENTRY_POINTS = ("dinov2_salad", "dycl_resnet", "cvft_vgg", "ucdir_moco", "aml_student")

MODELS: Registry[ModelInfo] = Registry("model", discover=lambda: import_submodules("zoo.models", packages_only=True))


def split_name(name: str) -> tuple[str, str | None]:
    """``"dinov2_salad.8192_256"`` -> ``("dinov2_salad", "8192_256")``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name`` (an architecture, optionally with ``.variant``, which is checked)."""
    arch, tag = split_name(name)
    info = MODELS.get(arch)
    if tag is not None:
        info.variant(tag)
    return info


def list_models(include_variants: bool = False) -> list[str]:
    """Names of the models (``arch`` or, with ``include_variants``, every ``arch.variant``)."""
    names = []
    for arch, info in MODELS.items():
        names.extend(f"{arch}.{tag}" for tag in info.variants) if include_variants else names.append(arch)
    return names


def list_pretrained() -> list[str]:
    """Every ``arch.variant`` that ``pretrained=True`` can load (published weights)."""
    return [f"{arch}.{tag}" for arch, info in MODELS.items() for tag in info.pretrained_variants()]
