"""A model zoo for visual place recognition, cross-view geo-localization and image retrieval.

>>> import zoo
>>> zoo.list_models()                                   # doctest: +SKIP
['aml_student', 'cvft_vgg', 'dinov2_salad', 'dycl_resnet', 'ucdir_moco']
>>> model = zoo.create_model("dinov2_salad", pretrained=False)   # doctest: +SKIP
>>> query_tf, database_tf = zoo.get_transforms("dinov2_salad")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from zoo.registry import ENTRY_POINTS, get_model_info, list_models, split_name

__version__ = "0.1.0"
__all__ = ["ENTRY_POINTS", "create_model", "get_model_info", "get_transforms", "list_models", "__version__"]


def _variant_from(name: str, variant: str | None, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    info = get_model_info(name)
    _, tag = split_name(name)
    if tag and variant and tag != variant:
        raise ValueError(f"{name!r} names variant {tag!r} but variant={variant!r} was passed")
    tag = tag or variant or info.default_variant
    return tag, {**info.variant_kwargs(tag), **overrides}


def create_model(name: str, pretrained: bool | str = True, variant: str | None = None,
                 **kwargs: Any) -> torch.nn.Module:
    """Build a zoo model, eval-ready.

    Args:
        name: ``arch`` or ``arch.variant`` (see :func:`list_models`).
        pretrained: ``True`` for the default published weights, ``False`` for random
            initialisation with no download at all, or a string: the name of another weight
            source of the model (e.g. ``"backbone"``), ``"hf-hub:org/repo[@rev]"``, or a local
            path (``python -m zoo convert`` output, or an original checkpoint).
        variant: variant tag (same as the ``.variant`` suffix of ``name``).
        **kwargs: builder arguments overriding the variant's.

    Returns:
        An ``nn.Module`` in eval mode with ``encode_query`` / ``encode_database`` returning
        L2-normalised ``(B, D)`` descriptors. Its ``zoo_config`` attribute records architecture,
        variant and weight source (what ``export`` writes to config.json).
    """
    from zoo.hub import load_state_dict_strict, resolve_weights

    info = get_model_info(name)
    tag, variant_kwargs = _variant_from(name, variant, kwargs)
    resolved = resolve_weights(info, pretrained)
    if resolved is not None and resolved.config and resolved.config.get("variant"):
        # Converted weights carry the variant they were made with (read from tensor shapes, or
        # recorded at export, e.g. a smoke model's depth). What the caller named explicitly (a
        # ``.variant`` tag, ``variant=`` or keyword arguments) wins and is never swapped silently:
        # weights that do not fit it fail the strict load below, listing the keys.
        asked = set(kwargs) | (set(variant_kwargs) if (split_name(name)[1] or variant) else set())
        stored = {k: v for k, v in resolved.config["variant"].items() if k not in asked}
        variant_kwargs = {**variant_kwargs, **stored}
        if not asked:
            tag = resolved.config.get("variant_tag", tag)
    model = info.builder(**variant_kwargs)
    source = "random initialisation"
    if resolved is not None:
        if resolved.init_fn is not None:
            resolved.init_fn(model)
        if resolved.state_dict is not None:
            load_state_dict_strict(model, resolved.state_dict, resolved.description)
        source = resolved.description
    model.zoo_config = {
        "architecture": info.name,
        "variant_tag": tag,
        "variant": variant_kwargs,
        "weights": source,
        "descriptor_dim": info.dim(variant_kwargs),
    }
    return model.eval()


def get_transforms(name: str, variant: str | None = None, **kwargs: Any) -> tuple[Callable, Callable]:
    """The evaluation preprocessing ``(query_transform, database_transform)`` of a model.

    Each maps a PIL image to a float tensor ``(3, H, W)`` exactly as the original evaluation
    code prepares it (resize, crop, colour order, normalisation).
    """
    info = get_model_info(name)
    _, variant_kwargs = _variant_from(name, variant, kwargs)
    return info.transforms(**variant_kwargs)
