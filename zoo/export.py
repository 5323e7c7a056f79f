"""Write a model in the zoo's format: model.safetensors + config.json + a model card (README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from zoo.hub import save_pretrained
from zoo.models import get_model_info


def model_card(name: str, config: dict[str, Any]) -> str:
    """A Hub model card: what the weights are, their licence, published results and citation."""
    info = get_model_info(name)
    lines = [
        "---",
        "library_name: retrieval-zoo",
        "license: other",
        "tags: [image-retrieval, visual-place-recognition, safetensors]",
        "---",
        f"# {name}" + (f" ({config.get('variant_tag')})" if config.get("variant_tag") else ""),
        "",
        info.summary or info.paper,
        "",
        f"- Paper: {info.paper}" + (f" (arXiv:{info.arxiv})" if info.arxiv else ""),
        f"- Original code: {info.original_code} (licence: {info.code_licence})",
        f"- Weights licence: {info.licence}",
        f"- Descriptor size: {config.get('descriptor_dim', '?')}",
        f"- Weights: {config.get('weights', 'unknown')}",
        "",
        "Load with `zoo.create_model(\"%s\", pretrained=\"<this directory or hf-hub:org/repo>\")`." % name,
        "",
    ]
    if config.get("preprocessing"):
        lines += ["## Preprocessing", "", "The evaluation preprocessing record (`config.json`, `preprocessing`); "
                  "`zoo.model_transforms(model)` builds the transforms from it:", "", "```json",
                  json.dumps(config["preprocessing"], indent=2, sort_keys=True), "```", ""]
    tag = config.get("variant_tag")
    published = info.published(tag) if tag in info.variants else ()
    if published:
        lines += ["## Published results (the authors' numbers, not measured on these weights)", "",
                  "| benchmark | metric | value | source |", "|---|---|---|---|"]
        for r in published:
            value = "not yet transcribed" if r.value is None else f"{r.value:g}"
            lines.append(f"| {r.benchmark} | {r.metric} | {value} | {r.source} |")
        lines.append("")
    lines += ["## Citation", "", "```bibtex", info.citation.strip(), "```", ""]
    return "\n".join(lines)


def export_pretrained(model: torch.nn.Module, out_dir: str | Path, extra_config: dict[str, Any] | None = None,
                      card: bool = True) -> Path:
    """Export ``model`` (built by :func:`zoo.create_model`, so it has ``zoo_config``) to ``out_dir``.

    The directory loads back with ``zoo.create_model(name, pretrained=str(out_dir))`` and
    ``torch.hub.load(repo, name, source="local", pretrained=str(out_dir))``.
    """
    config = dict(getattr(model, "zoo_config", None) or {})
    if "architecture" not in config:
        raise ValueError("model has no zoo_config; build it with zoo.create_model() before exporting")
    config.update(extra_config or {})
    extra = {"README.md": model_card(config["architecture"], config)} if card else None
    return save_pretrained(out_dir, model.state_dict(), config, extra_files=extra)
