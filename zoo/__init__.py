"""A model zoo for visual place recognition, cross-view geo-localization and image retrieval.

>>> import zoo
>>> zoo.list_models()                                   # doctest: +SKIP
['aml_student', 'cvft_vgg', 'dinov2_salad', 'dycl_resnet', 'ucdir_moco']
>>> zoo.list_pretrained()                               # doctest: +SKIP
['aml_student.mobilenetv2_resnet101', ..., 'dinov2_salad.8192_256', 'dycl_resnet.resnet50_512']
>>> model, (query_tf, database_tf) = zoo.create_model_and_transforms("dinov2_salad")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from zoo.models import ENTRY_POINTS, get_model_info, list_models, list_pretrained, split_name

__version__ = "0.1.0"
__all__ = ["ENTRY_POINTS", "create_model", "create_model_and_transforms", "get_model_info", "get_transforms",
           "list_models", "list_pretrained", "model_transforms", "__version__"]


def _variant_from(name: str, variant: str | None) -> tuple[str, bool]:
    """The variant tag ``name``/``variant`` ask for, and whether it was named explicitly."""
    info = get_model_info(name)
    _, tag = split_name(name)
    if tag and variant and tag != variant:
        raise ValueError(f"{name!r} names variant {tag!r} but variant={variant!r} was passed")
    tag = tag or variant
    if tag is not None:
        info.variant(tag)
    return tag or info.default_variant, tag is not None


def create_model(name: str, pretrained: bool | str = True, variant: str | None = None,
                 **kwargs: Any) -> torch.nn.Module:
    """Build a zoo model, eval-ready.

    Args:
        name: ``arch`` or ``arch.variant`` (see :func:`list_models`; :func:`list_pretrained` names the
            variants with published weights).
        pretrained: ``True`` for the variant's published weights (a variant without any fails at once,
            before any download, naming those that have them), ``False`` for random initialisation with
            no download at all, or a string: the name of another weight source of the model (e.g.
            ``"backbone"``), ``"hf-hub:org/repo[@rev]"``, or a local path (``python -m zoo convert`` or
            ``export`` output, or an original checkpoint).
        variant: variant tag (same as the ``.variant`` suffix of ``name``).
        **kwargs: builder arguments overriding the variant's.

    Returns:
        An ``nn.Module`` in eval mode with ``encode_query`` / ``encode_database`` mapping images
        ``(B, 3, H, W)`` to L2-normalised ``(B, D)`` descriptors. Its ``zoo_config`` attribute records
        architecture, variant, weight source and the evaluation preprocessing record (what ``export``
        writes to config.json).
    """
    from zoo.hub import resolve_weights
    from zoo.io import load_state_dict_strict
    from zoo.variants import check_builder_args, check_config

    info = get_model_info(name)
    tag, named = _variant_from(name, variant)
    check_builder_args(info, kwargs, f"{info.name} arguments", bounded=False)
    variant_kwargs = {**info.variant_kwargs(tag), **kwargs}
    resolved = resolve_weights(info, pretrained, tag)
    preprocessing = None
    if resolved is not None and resolved.config:
        # Converted weights carry the variant they were made with (read from tensor shapes, or
        # recorded at export, e.g. a smoke model's depth). What the caller named explicitly (a
        # ``.variant`` tag, ``variant=`` or keyword arguments) wins and is never swapped silently:
        # weights that do not fit it fail the strict load below, listing the keys.
        asked = set(kwargs) | (set(variant_kwargs) if named else set())
        # The rest is checked against the cards before building: a config asking for a huge
        # variant fails here, not after allocating it.
        check_config(info, resolved.config, resolved.description, asked)
        stored = {k: v for k, v in (resolved.config.get("variant") or {}).items() if k not in asked}
        variant_kwargs = {**variant_kwargs, **stored}
        if not asked and resolved.config.get("variant_tag") in info.variants:
            tag = resolved.config["variant_tag"]
        # A folder written by export/convert carries its preprocessing record: it is the one used.
        preprocessing = resolved.config.get("preprocessing")
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
        "preprocessing": dict(preprocessing) if isinstance(preprocessing, dict)
        else info.preprocessing_record(tag, variant_kwargs),
    }
    return model.eval()


def get_transforms(name: str, variant: str | None = None, **overrides: Any) -> tuple[Callable, Callable]:
    """The evaluation preprocessing ``(query_transform, database_transform)`` of a variant.

    Built from the variant's preprocessing record (``overrides`` replace fields of it, e.g.
    ``image_size=224`` for SALAD). Each maps a PIL image to a float tensor ``(3, H, W)`` exactly as
    the original evaluation code prepares it (resize, crop, colour order, normalisation).
    """
    info = get_model_info(name)
    tag, _ = _variant_from(name, variant)
    return info.transforms(**{**info.preprocessing_record(tag), **overrides})


def model_transforms(model: torch.nn.Module) -> tuple[Callable, Callable]:
    """The transforms of a model built by :func:`create_model`, from its own preprocessing record."""
    config = getattr(model, "zoo_config", None)
    if not config or "preprocessing" not in config:
        raise ValueError("model_transforms needs a model built by zoo.create_model (it has no zoo_config)")
    return get_model_info(config["architecture"]).transforms(**config["preprocessing"])


def create_model_and_transforms(name: str, pretrained: bool | str = True, variant: str | None = None,
                                **kwargs: Any) -> tuple[torch.nn.Module, tuple[Callable, Callable]]:
    """``create_model(...)`` and the ``(query_transform, database_transform)`` of the model it built."""
    model = create_model(name, pretrained=pretrained, variant=variant, **kwargs)
    return model, model_transforms(model)
