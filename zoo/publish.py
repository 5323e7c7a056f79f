"""Publish weights to our Hub repos: convert the authors' release (or take a training run's export),
self-check, write a model card, upload, and print the registry lines that make it ``pretrained=True``.

One variant goes through these steps (:func:`publish_variant`; :func:`publish_run` for ``OUT/export``):

1. download the authors' files of the variant's first ``"release"`` source (sha256 verified when
   pinned; the sha256 is printed either way, so an unpinned file can be pinned);
2. convert them to our state dict, build the variant and load it strictly;
3. self-check: the model encodes the bundled sample images (``assets/samples``: queries with
   ``encode_query``, database with ``encode_database``) to finite, L2-normalised descriptors; a
   *fingerprint* of them (each descriptor's first values and the query x database cosine
   similarities) is recorded in config.json and the model card;
4. write ``OUT/<arch>.<variant>/`` (model.safetensors, config.json, README.md), load it back from
   there and check that it reproduces the fingerprint;
5. upload the folder to ``ORG/<arch>.<variant>`` with huggingface_hub (large files take the Hub's
   large-file path) unless ``dry_run``, and return the lines to paste into the variant's card.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from zoo.errors import SelfCheckError, UnknownNameError, ZooError
from zoo.hub import CONFIG_NAME, WEIGHTS_NAME, convert_checkpoint, download, load_pretrained_dir, save_pretrained
from zoo.io import list_images, load_image, load_state_dict_strict, sha256_file
from zoo.models import ENTRY_POINTS, get_model_info, split_name
from zoo.models.cards import DriveFile, FileRef, HubFile, ModelInfo, UrlFile, WeightSource, describe_file, is_pinned

#: The images of the self-check, shipped in the repository.
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "samples"
#: How many leading values of each descriptor the fingerprint keeps.
FINGERPRINT_VALUES = 8
#: Largest difference a re-loaded copy may show against the fingerprint (float32 on CPU; the
#: converted-versus-original tolerance of the zoo).
FINGERPRINT_ATOL = 1e-4


@dataclass
class SourceFile:
    """One file the published weights were made from."""

    role: str                 # "checkpoint" or a converter option, e.g. "whitening"
    ref: FileRef | None       # the card's reference (None: a training run's export)
    location: str             # URL / Hub path / local path
    sha256: str
    commit: str | None = None  # the Hub commit that served a HubFile

    @property
    def pinned(self) -> bool:
        return self.ref is not None and is_pinned(self.ref)


@dataclass
class PublishResult:
    """What :func:`publish_variant` / :func:`publish_run` did."""

    name: str                               # arch.variant
    folder: Path                            # the written folder
    repo_id: str                            # ORG/arch.variant
    weights_sha256: str
    sources: list[SourceFile]
    fingerprint_error: float                # max |difference| of the re-loaded folder against the fingerprint
    commit: str | None = None               # None on a dry run
    cards_file: str = ""
    licence: str | None = None
    notes: list[str] = field(default_factory=list)

    def registry_lines(self) -> list[str]:
        """The Python lines to paste into the card (``cards_file``) of this variant."""
        arch, tag = split_name(self.name)
        commit = self.commit or "<commit printed by the upload>"
        lines = [f"# {self.cards_file}, variant {tag!r}: first entry of weights=(...)",
                 f'WeightSource("zoo", "our safetensors copy (hf-hub:{self.repo_id}), pinned",',
                 f'             file=HubFile("{self.repo_id}", "{WEIGHTS_NAME}", "{commit}", "{self.weights_sha256}"),'
                 + (f"\n             licence={self.licence!r})," if self.licence else ")")]
        for source in self.sources:
            if source.ref is not None and not source.pinned:
                lines.append(f"# pin the authors' {source.role} ({source.location}): {_pin_hint(source.ref, source.sha256, source.commit)}")
        return lines


def _pin_hint(ref: FileRef, sha256: str, commit: str | None = None) -> str:
    if isinstance(ref, HubFile):
        return f'HubFile("{ref.repo_id}", "{ref.filename}", "{commit or ref.revision}", "{sha256}")' + \
            (f" (the commit {ref.revision!r} pointed to when this file was fetched)" if commit else "")
    if isinstance(ref, DriveFile):
        return f'DriveFile("{ref.file_id}", "{ref.member}", sha256="{sha256}")  (sha256 of the archive)'
    return f'UrlFile("{ref.url}", sha256="{sha256}"' + (f', env_base="{ref.env_base}")' if ref.env_base else ")")


# --------------------------------------------------------------------------- fingerprint


def sample_images(samples: str | Path | None = None) -> tuple[list[Path], list[Path]]:
    """The self-check's query and database images (``samples/queries``, ``samples/database``)."""
    root = Path(samples) if samples else SAMPLES_DIR
    return list_images(root / "queries"), list_images(root / "database")


def _encode(encode: Callable[[torch.Tensor], torch.Tensor], transform: Callable, paths: Sequence[Path]) -> torch.Tensor:
    rows = []
    for path in paths:  # one at a time: transforms may keep each image's own size (AML)
        rows.append(encode(transform(load_image(path)).unsqueeze(0)).float())
    return torch.cat(rows)


def sample_descriptors(model: torch.nn.Module, samples: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(queries (Q, D), database (N, D))`` descriptors of the sample images, float32 on CPU.

    Raises:
        SelfCheckError: a descriptor is not finite or not L2-normalised.
    """
    from zoo import model_transforms

    queries, database = sample_images(samples)
    query_tf, database_tf = model_transforms(model)
    model = model.eval()
    with torch.no_grad():
        q = _encode(model.encode_query, query_tf, queries)
        d = _encode(model.encode_database, database_tf, database)
    for side, x in (("query", q), ("database", d)):
        if not torch.isfinite(x).all():
            raise SelfCheckError(f"self-check: {side} descriptors of the sample images are not finite")
        norms = x.norm(dim=1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise SelfCheckError(f"self-check: {side} descriptors are not L2-normalised (norms {norms.tolist()})")
    return q, d


def fingerprint(model: torch.nn.Module, samples: str | Path | None = None) -> dict[str, Any]:
    """The fingerprint of a model: its sample descriptors' first values and query x database similarities."""
    queries, database = sample_images(samples)
    q, d = sample_descriptors(model, samples)
    return {
        "images": {"queries": [p.name for p in queries], "database": [p.name for p in database]},
        "descriptor_dim": q.shape[1],
        "first_values": {"queries": _rounded(q[:, :FINGERPRINT_VALUES]), "database": _rounded(d[:, :FINGERPRINT_VALUES])},
        "similarity": _rounded(q @ d.T),
        "atol": FINGERPRINT_ATOL,
        "how": f"{'assets/samples' if samples is None else Path(samples).name}, the model's evaluation transforms, "
               f"float32 on CPU (torch {torch.__version__})",
    }


def _rounded(x: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 7) for v in row] for row in x]


def check_fingerprint(model: torch.nn.Module, recorded: dict[str, Any], samples: str | Path | None = None) -> float:
    """Recompute ``model``'s fingerprint and compare it with ``recorded``; the largest difference.

    Raises:
        SelfCheckError: other images, another dimension, or a difference above ``recorded["atol"]``.
    """
    ours = fingerprint(model, samples)
    if ours["images"] != recorded.get("images") or ours["descriptor_dim"] != recorded.get("descriptor_dim"):
        raise SelfCheckError("fingerprint: recorded for other sample images or another descriptor size "
                             f"({recorded.get('images')}, {recorded.get('descriptor_dim')}-d)")
    pairs = [(ours["similarity"], recorded["similarity"])] + \
        [(ours["first_values"][k], recorded["first_values"][k]) for k in ("queries", "database")]
    diff = max(abs(a - b) for mine, theirs in pairs for r1, r2 in zip(mine, theirs) for a, b in zip(r1, r2))
    atol = float(recorded.get("atol", FINGERPRINT_ATOL))
    if diff > atol:
        raise SelfCheckError(f"fingerprint: descriptors of the sample images differ from the recorded ones by "
                             f"{diff:.3g} (> {atol:g}): these are not the published weights")
    return diff


# --------------------------------------------------------------------------- model card


def _cards_file(info: ModelInfo) -> str:
    module = info.builder.__module__  # zoo.models.<method>.modeling
    return module.rsplit(".", 1)[0].replace(".", "/") + "/cards.py"


def model_card(info: ModelInfo, tag: str, config: dict[str, Any], repo_id: str,
               sources: list[SourceFile], measured: dict[str, Any] | None = None) -> str:
    """The Hub model card of a published variant: the export card plus task, sources, fingerprint, loading."""
    from zoo.export import model_card as export_card

    name = f"{info.name}.{tag}"
    lines = [export_card(info.name, config).rstrip("\n"), "",
             "## Task", "", info.task, "",
             "## Where these weights come from", ""]
    if measured is None:
        lines += [f"Converted with retrieval-zoo from the authors' release ({info.original_code}):", ""]
    else:
        lines += [f"Trained by us with retrieval-zoo (recipe `{measured.get('recipe')}`), not by the authors:", ""]
    lines += ["| file | role | sha256 | pinned in the registry |", "|---|---|---|---|"]
    for s in sources:
        lines.append(f"| {s.location} | {s.role} | `{s.sha256}` | {'yes' if s.pinned else 'no (unpinned)'} |")
    lines.append("")
    if measured is not None:
        lines += [f"## Our numbers (measured by us, not the authors': {measured['source']})", ""]
        if measured["metrics"]:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in measured["metrics"].items()]
        else:
            lines.append("The run recorded no evaluation.")
        lines.append("")
    fp = config["fingerprint"]
    lines += ["## Self-check fingerprint", "",
              f"Cosine similarities of the descriptors of the sample images ({fp['how']}); any copy of these "
              f"weights reproduces them within {fp['atol']:g} "
              "(`zoo.publish.check_fingerprint(model, config['fingerprint'])`). config.json also keeps the "
              f"first {FINGERPRINT_VALUES} values of every descriptor.", "",
              "| query \\ database | " + " | ".join(fp["images"]["database"]) + " |",
              "|---|" + "---|" * len(fp["images"]["database"])]
    for qname, row in zip(fp["images"]["queries"], fp["similarity"]):
        lines.append(f"| {qname} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    lines += ["", "## How to load", "", "```python", "import torch", "import zoo", "",
              f'model = zoo.create_model("{name}", pretrained="hf-hub:{repo_id}")',
              f'model = torch.hub.load("<org>/zoo", "{info.name}", variant="{tag}", pretrained="hf-hub:{repo_id}")',
              "```", "",
              f"Once its commit and sha256 are in the registry ({_cards_file(info)}), `pretrained=True` loads this "
              "repository first and the authors' release only when it cannot be reached.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- publishing


def release_source(info: ModelInfo, tag: str) -> WeightSource:
    """The variant's first ``"release"`` source; the error names the variants that have one."""
    for source in info.variant(tag).weights:
        if source.kind == "release":
            return source
    having = [f"{info.name}.{t}" for t, card in info.variants.items() if any(s.kind == "release" for s in card.weights)]
    reason = f" {info.no_weights_reason}" if info.no_weights_reason else ""
    raise ZooError(f"{info.name}.{tag} has no authors' release to publish"
                   + (f" (variants with one: {', '.join(having)})" if having else "")
                   + f". A training run's export is published with `python -m zoo publish OUT/export`.{reason}")


def _location(ref: FileRef) -> str:
    if isinstance(ref, HubFile):
        return f"https://huggingface.co/{ref.repo_id}/blob/{ref.revision}/{ref.filename}"
    if isinstance(ref, DriveFile):
        return f"{ref.url} (archive), member {ref.member}"
    assert isinstance(ref, UrlFile)
    return ref.url


def _snapshot_commit(path: Path) -> str | None:
    """The commit of a file in the Hub cache (``.../snapshots/<commit>/<filename>``)."""
    parts = path.parts
    if "snapshots" in parts[:-1]:
        commit = parts[parts.index("snapshots") + 1]
        return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None
    return None


def _fetch(role: str, ref: FileRef) -> tuple[Path, SourceFile]:
    path = download(ref)
    if isinstance(ref, DriveFile):
        from zoo.drive import download_drive_archive

        hashed = download_drive_archive(ref)   # cached by download(): the archive is what gets pinned
    else:
        hashed = path
    commit = _snapshot_commit(path) if isinstance(ref, HubFile) else None
    return path, SourceFile(role, ref, _location(ref), sha256_file(hashed), commit)


def _write_and_verify(info: ModelInfo, tag: str, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                      out_root: Path, repo_id: str, sources: list[SourceFile], samples: str | Path | None,
                      measured: dict[str, Any] | None = None) -> tuple[Path, float]:
    import zoo

    model = info.builder(**config["variant"])
    load_state_dict_strict(model, state_dict, config.get("weights", info.name))
    model.zoo_config = {"architecture": info.name, "preprocessing": config["preprocessing"]}
    config = {**config, "fingerprint": fingerprint(model, samples)}
    folder = out_root / f"{info.name}.{tag}"
    save_pretrained(folder, state_dict, config,
                    extra_files={"README.md": model_card(info, tag, config, repo_id, sources, measured)})
    again = zoo.create_model(f"{info.name}.{tag}", pretrained=str(folder))
    return folder, check_fingerprint(again, config["fingerprint"], samples)


def publish_variant(name: str, org: str, out_root: str | Path, dry_run: bool = False, token: str | None = None,
                    samples: str | Path | None = None) -> PublishResult:
    """Convert, self-check, write and (unless ``dry_run``) upload the authors' release of ``arch.variant``."""
    arch, tag = split_name(name)
    info = get_model_info(arch)
    tag = tag or info.default_variant
    source = release_source(info, tag)
    assert source.file is not None
    checkpoint, main = _fetch("checkpoint", source.file)
    sources = [main]
    options = {}
    for option, ref in source.extra_files.items():
        options[option], extra = _fetch(option, ref)
        sources.append(extra)
    state_dict, config = convert_checkpoint(info, checkpoint, **options)
    read_tag = config.get("variant_tag")
    if read_tag and read_tag != tag and read_tag in info.variants:
        raise ZooError(f"{source.file and describe_file(source.file)} holds {info.name}.{read_tag} weights, "
                       f"not {info.name}.{tag}: the card's release is wrong")
    variant = {**info.variant_kwargs(tag), **config.get("variant", {})}
    repo_id = f"{org}/{info.name}.{tag}"
    config = {**config, "variant": variant, "variant_tag": tag, "descriptor_dim": info.dim(variant),
              "preprocessing": info.preprocessing_record(tag, variant),
              "weights": f"{source.description}; published as hf-hub:{repo_id}",
              "source": {**config.get("source", {}),
                         "files": [{"role": s.role, "location": s.location, "sha256": s.sha256, "pinned": s.pinned}
                                   for s in sources]}}
    folder, error = _write_and_verify(info, tag, state_dict, config, Path(out_root), repo_id, sources, samples)
    result = PublishResult(f"{info.name}.{tag}", folder, repo_id, sha256_file(folder / WEIGHTS_NAME), sources, error,
                           cards_file=_cards_file(info), licence=source.licence)
    if not dry_run:
        result.commit = upload(folder, repo_id, token, f"{info.name}.{tag}: converted from the authors' release")
    return result


def _run_metrics(export: Path) -> dict[str, Any]:
    """The last evaluation row of the run that wrote ``export`` (``OUT/metrics.jsonl``), if any."""
    log = export.parent / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    evals = [r for r in rows if r.get("kind") == "eval"]
    if not evals:
        return {"source": f"no evaluation rows in {log}" if log.is_file() else f"{log} not found", "metrics": {}}
    last = evals[-1]
    metrics = {k: float(v) for k, v in last.items() if k not in ("kind", "step", "epoch") and isinstance(v, (int, float))}
    return {"source": f"{log.name} of the run, evaluation at step {last.get('step')} (epoch {last.get('epoch')})",
            "metrics": metrics}


def publish_run(export: str | Path, org: str, out_root: str | Path, dry_run: bool = False, token: str | None = None,
                samples: str | Path | None = None) -> PublishResult:
    """Publish a training run's ``OUT/export`` (config.json names architecture and variant) the same way."""
    export = Path(export)
    if not (export / CONFIG_NAME).is_file() or not (export / WEIGHTS_NAME).is_file():
        raise ZooError(f"{export}: not a training run's export (needs {WEIGHTS_NAME} and {CONFIG_NAME}, as "
                       "`python -m zoo train` writes them to OUT/export)")
    state_dict, config = load_pretrained_dir(export)
    for key in ("architecture", "variant_tag", "variant"):
        if key not in config:
            raise ZooError(f"{export / CONFIG_NAME}: no {key!r}; publish needs the config.json of a training run's export")
    info = get_model_info(config["architecture"])
    tag = config["variant_tag"]
    if tag not in info.variants:
        raise UnknownNameError(f"{export / CONFIG_NAME}: variant_tag {tag!r} is not a variant of {info.name} "
                               f"(known: {', '.join(info.variants)})")
    card_args = info.variant_kwargs(tag)
    differ = {k: (config["variant"].get(k), v) for k, v in card_args.items() if config["variant"].get(k, v) != v}
    if differ:
        raise ZooError(f"{export / CONFIG_NAME}: the run's {info.name} differs from the card of {info.name}.{tag} in "
                       + ", ".join(f"{k}={a!r} (card: {b!r})" for k, (a, b) in differ.items())
                       + f"; `zoo.create_model('{info.name}.{tag}', pretrained=True)` could not load these weights")
    recipe = (config.get("training") or {}).get("recipe")
    measured = {"recipe": recipe, **_run_metrics(export)}
    repo_id = f"{org}/{info.name}.{tag}"
    sources = [SourceFile("training run export", None, str(export.resolve()), sha256_file(export / WEIGHTS_NAME))]
    config = {**config, "preprocessing": config.get("preprocessing") or info.preprocessing_record(tag, config["variant"]),
              "descriptor_dim": info.dim(config["variant"]),
              "weights": f"trained by us with recipe {recipe!r}; published as hf-hub:{repo_id}",
              "measured_by_us": measured}
    folder, error = _write_and_verify(info, tag, state_dict, config, Path(out_root), repo_id, sources, samples, measured)
    result = PublishResult(f"{info.name}.{tag}", folder, repo_id, sha256_file(folder / WEIGHTS_NAME), sources, error,
                           cards_file=_cards_file(info), licence=info.licence)
    if not dry_run:
        result.commit = upload(folder, repo_id, token, f"{info.name}.{tag}: trained with recipe {recipe}")
    return result


def require_token(token: str | None) -> None:
    """Fail before any work when an upload will need a token and none is configured."""
    from huggingface_hub import get_token

    if token is None and get_token() is None:
        raise ZooError("uploading needs a Hub token with write access: set HF_TOKEN (or run `hf auth login`, or pass "
                       "--token), or pass --dry-run")


def upload(folder: Path, repo_id: str, token: str | None, message: str) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; the commit sha.

    ``HF_ENDPOINT`` is read now. huggingface_hub sends files above the Hub's small-file limit
    through its large-file path (Xet when ``hf_xet`` is installed, else Git LFS).
    """
    from huggingface_hub import HfApi

    require_token(token)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    commit = getattr(info, "oid", None)
    if not commit or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ZooError(f"{repo_id}: the Hub answered the upload without a commit sha ({info!r})")
    return commit


def publishable_variants() -> list[str]:
    """Every ``arch.variant`` of the entry points whose card names an authors' release."""
    return [f"{name}.{tag}" for name in ENTRY_POINTS for tag, card in get_model_info(name).variants.items()
            if any(s.kind == "release" for s in card.weights)]


def unpinned_sources() -> set[tuple[str, str]]:
    """``(arch.variant or arch:source name, file)`` for every card file without a sha256 (and commit) pin."""
    out = set()
    for name in ENTRY_POINTS:
        info = get_model_info(name)
        named = [(f"{name}.{tag}", s) for tag, card in info.variants.items() for s in card.weights]
        named += [(f"{name}:{key}", s) for key, s in info.weights.items()]
        for owner, source in named:
            out.update((owner, describe_file(ref)) for ref in source.unpinned())
    return out


def source_order() -> list[tuple[str, str, str]]:
    """``(arch.variant, source kind, file and pin state)`` for every weight source of every variant, in
    the order ``pretrained=True`` tries them."""
    rows = []
    for name in ENTRY_POINTS:
        for tag, card in get_model_info(name).variants.items():
            if not card.weights:
                rows.append((f"{name}.{tag}", "-", "no published weights"))
            for i, source in enumerate(card.weights, 1):
                kind = {"zoo": "our Hub repo", "release": "authors' release"}.get(source.kind, source.kind)
                for ref in source.files():
                    rows.append((f"{name}.{tag}", f"{i}. {kind}", describe_file(ref)))
    return rows


def print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def publish_cli(names: Sequence[str], org: str | None, all_variants: bool = False, out: str | Path = "publish",
                dry_run: bool = False, token: str | None = None, samples: str | Path | None = None) -> int:
    """``python -m zoo publish``: publish each name (``arch.variant`` or an ``OUT/export`` folder), print
    what was done, the registry lines to paste, and a summary table; 0 when every one succeeded."""
    targets = list(names) + (publishable_variants() if all_variants else [])
    if org is None:
        raise ZooError("publish: --org ORG is needed (the Hub organisation owning the repos ORG/<arch>.<variant>)")
    if not dry_run:
        require_token(token)
    if not targets:
        raise ZooError("publish: name a variant (e.g. dinov2_salad.8192_256), a run's OUT/export folder, or pass --all")
    done: list[PublishResult] = []
    failed: list[tuple[str, str]] = []
    for target in dict.fromkeys(targets):
        print(f"== {target}", flush=True)
        try:
            if Path(target).is_dir():
                result = publish_run(target, org, out, dry_run=dry_run, token=token, samples=samples)
            else:
                result = publish_variant(target, org, out, dry_run=dry_run, token=token, samples=samples)
        except ZooError as err:
            if len(targets) == 1:
                raise
            print(f"   failed: {err}", flush=True)
            failed.append((target, str(err)))
            continue
        done.append(result)
        for s in result.sources:
            print(f"   {s.role}: {s.location}\n      sha256 {s.sha256} ({'pinned, verified' if s.pinned else 'UNPINNED'})")
        print(f"   wrote {result.folder} (self-check passed; re-loaded copy within {result.fingerprint_error:.2g} "
              "of the fingerprint)")
        print(f"   {'dry run: not uploaded to' if dry_run else 'uploaded to'} {result.repo_id}"
              + (f" at commit {result.commit}" if result.commit else ""))
        print("   registry lines:")
        print("\n".join("      " + line for line in result.registry_lines()), flush=True)
    rows = [("variant", "repo", "commit", "model.safetensors sha256", "source pins")]
    rows += [(r.name, r.repo_id, (r.commit or "(dry run)")[:12], r.weights_sha256[:16] + "…",
              "all pinned" if all(s.pinned for s in r.sources) else "UNPINNED: pin with the lines above")
             for r in done]
    rows += [(t, "-", "-", "-", "FAILED: " + e.splitlines()[0][:70]) for t, e in failed]
    print()
    print_rows(rows)
    return 1 if failed else 0
