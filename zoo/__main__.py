"""``python -m zoo``: list models, convert original checkpoints, export, push and publish to the Hub, retrieve, train, eval.

Run ``python -m zoo <command> --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

EPILOG = """examples:
  python -m zoo list
  python -m zoo convert dinov2_salad --checkpoint dino_salad.ckpt --out weights/salad
  python -m zoo convert cvft_vgg --checkpoint Model/CVUSA/model.ckpt --out weights/cvft
  python -m zoo export dinov2_salad --pretrained weights/salad --out release/salad
  python -m zoo push release/salad --repo my-org/dinov2-salad
  python -m zoo publish --all --org my-org --dry-run
  python -m zoo retrieve --model dinov2_salad --database photos/db --queries photos/q --out results
"""


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as JSON where they can be (numbers, booleans, lists)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option expects key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _weights_kind(info: Any, tag: str) -> str:
    sources = info.variant(tag).weights
    if not sources:
        return "-"
    names = {"zoo": "our Hub repo", "release": "authors' release", "init": "authors' release"}
    return " -> ".join(dict.fromkeys(names[s.kind] for s in sources))


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(row[-1]))


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.models import ENTRY_POINTS, get_model_info

    infos = [get_model_info(name) for name in ENTRY_POINTS]
    if args.json:
        print(json.dumps([{
            "model": info.name, "task": info.task, "licence": info.licence, "code_licence": info.code_licence,
            "paper": info.paper, "arxiv": info.arxiv, "named_weight_sources": list(info.weights),
            "no_weights_reason": info.no_weights_reason,
            "variants": {tag: {"args": dict(card.args), "descriptor_dim": info.dim(card.args),
                               "pretrained=True": [s.description for s in card.weights],
                               "recipe": card.recipe, "table": card.table,
                               "preprocessing": info.preprocessing_record(tag),
                               "published": [vars(r) for r in card.published]}
                         for tag, card in info.variants.items()},
        } for info in infos], indent=2))
        return 0
    if args.markdown:
        print(markdown_model_table())
        return 0
    if args.variants:
        rows = [("variant", "dim", "pretrained=True", "recipe", "table", "description")]
        for info in infos:
            for tag, card in info.variants.items():
                rows.append((f"{info.name}.{tag}", str(info.dim(card.args)), _weights_kind(info, tag),
                             card.recipe or "-", card.table or "-", _short(card.description, 60)))
        _print_table(rows)
        return 0
    rows = [("model", "variants", "with weights", "dim", "task", "licence", "paper")]
    for info in infos:
        having = info.pretrained_variants()
        rows.append((info.name, str(len(info.variants)), ", ".join(having[:2]) + (f" (+{len(having) - 2})" if len(having) > 2 else "")
                     or ("manual download" if "http" in (info.no_weights_reason or "") else "none released"),
                     str(info.dim(info.variant_kwargs())), _short(info.task, 34), _short(info.licence, 38),
                     f"arXiv:{info.arxiv}" if info.arxiv else _short(info.paper, 30)))
    _print_table(rows)
    print("\nEvery variant (name.variant, e.g. dinov2_salad.512_32): python -m zoo list --variants; "
          "all fields: python -m zoo list --json")
    return 0


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _headline(info: Any) -> str:
    """The first published numbers of the model's variants, e.g. "msls_challenge R@1/R@5/R@10 75.0/88.8/91.3"."""
    for tag in info.variants:
        known = [r for r in info.published(tag) if r.value is not None]
        if known:
            first = known[0]
            same = [r for r in known if r.benchmark == first.benchmark and r.source == first.source][:4]
            values = "/".join(str(r.value) for r in same)
            return f"{tag}: {first.benchmark} {'/'.join(r.metric for r in same)} {values} ({first.source})"
    return "not yet transcribed"


def markdown_model_table() -> str:
    """The README's model table, generated from the cards so the two cannot drift apart."""
    from zoo.models import ENTRY_POINTS, get_model_info

    lines = []
    for name in ENTRY_POINTS:
        info = get_model_info(name)
        paper = info.paper + (f", arXiv:{info.arxiv}" if info.arxiv else "")
        lines.append(f"| `{name}` | {paper} | {info.task} | {info.dim(info.variant_kwargs())} | "
                     f"{_headline(info)} | {info.licence} |")
    return "\n".join(lines)


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from zoo.export import model_card
    from zoo.hub import convert_checkpoint, save_pretrained
    from zoo.io import load_state_dict_strict
    from zoo.models import get_model_info, split_name

    info = get_model_info(args.name)
    options = _parse_options(args.option)
    if args.whitening:
        options["whitening"] = args.whitening
    state_dict, config = convert_checkpoint(info, args.checkpoint, **options)
    # The variant named on the command line, else the one the converter read from the checkpoint.
    tag = split_name(args.name)[1] or config.get("variant_tag")
    tag = tag if tag in info.variants else info.default_variant
    variant = {**info.variant_kwargs(tag), **config.get("variant", {})}
    # Build the architecture and load strictly before writing anything: a converter that
    # produced keys the model does not have must fail here, not at first use.
    model = info.builder(**variant)
    load_state_dict_strict(model, state_dict, str(args.checkpoint))
    config = {**config, "variant": variant, "variant_tag": tag, "descriptor_dim": info.dim(variant),
              "preprocessing": info.preprocessing_record(tag, variant),
              "weights": f"converted from {Path(args.checkpoint).name}"}
    with torch.no_grad():
        out = save_pretrained(args.out, state_dict, config, extra_files={"README.md": model_card(info.name, config)})
    print(f"wrote {out / 'model.safetensors'} and config.json ({len(state_dict)} tensors, "
          f"variant {json.dumps(variant)}); load it with pretrained={str(out)!r}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import zoo
    from zoo.export import export_pretrained

    model = zoo.create_model(args.name, pretrained=_pretrained_arg(args.pretrained))
    out = export_pretrained(model, args.out)
    print(f"exported {args.name} to {out} (model.safetensors, config.json, README.md)")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from huggingface_hub import HfApi

    from zoo.hub import CONFIG_NAME, WEIGHTS_NAME
    from zoo.io import sha256_file

    folder = Path(args.folder)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (folder / name).is_file():
            raise SystemExit(f"error: {folder / name} is missing; write the folder with `python -m zoo export` first")
    # HF_ENDPOINT is read now, as zoo.hub does, not when huggingface_hub was first imported.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=args.token)
    api.create_repo(args.repo, private=args.private, exist_ok=True)
    info = api.upload_folder(repo_id=args.repo, folder_path=str(folder), commit_message=args.message)
    commit = getattr(info, "oid", None) or str(info)
    print(f"pushed {folder} to {args.repo} at commit {commit}")
    print("registry entry: HubFile(" + json.dumps(args.repo) + f', "{WEIGHTS_NAME}", "{commit}", '
          f'"{sha256_file(folder / WEIGHTS_NAME)}")')
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from zoo.publish import print_rows, publish_cli, source_order

    if args.pins:
        print_rows([("variant", "pretrained=True tries", "file (pin)"), *source_order()])
        return 0
    return publish_cli(args.names, org=args.org, all_variants=args.all, out=args.out, dry_run=args.dry_run,
                       token=args.token, samples=args.samples)


def cmd_retrieve(args: argparse.Namespace) -> int:
    from zoo.retrieve import retrieve_folders

    result = retrieve_folders(
        model_name=args.model, pretrained=_pretrained_arg(args.pretrained), queries=args.queries,
        database=args.database, out_dir=args.out, topk=args.topk, device=args.device,
        batch_size=args.batch_size, precision=args.precision)
    for line in result.summary_lines():
        print(line)
    return 0


def _pretrained_arg(value: str) -> bool | str:
    return {"true": True, "false": False}.get(value.lower(), value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="print every model of the registry as a table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--markdown", action="store_true", help="the README's model table")
    p.add_argument("--variants", action="store_true",
                   help="one row per variant card: dimension, weights, recipe, evaluation table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("convert", help="convert an authors' checkpoint into model.safetensors + config.json",
                       description="Read an original checkpoint (only tensors and plain values are unpickled), "
                                   "map it to the zoo's layout, check it loads strictly, and write OUT/model.safetensors, "
                                   "OUT/config.json (variant read from tensor shapes, source sha256) and a model card.")
    p.add_argument("name", help="model name, e.g. dinov2_salad, or name.variant, e.g. cvft_vgg.cvact")
    p.add_argument("--checkpoint", required=True, help="the original file (a TF checkpoint: its PREFIX)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--whitening", help="aml_student: learned whitening file to fold in")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="converter-specific option (repeatable), e.g. --option teacher_checkpoint=t.pth")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="write a model (any weight source) in the zoo's format with a model card")
    p.add_argument("name")
    p.add_argument("--pretrained", default="true", help="weight source: true, false, a path or hf-hub:org/repo[@rev]")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="upload an exported folder to a Hugging Face Hub repo")
    p.add_argument("folder")
    p.add_argument("--repo", required=True, help="org/name on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one / HF_TOKEN)")
    p.add_argument("--message", default="Upload weights converted with retrieval-zoo")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "publish", help="convert the authors' releases (or a run's OUT/export), self-check, upload to ORG's Hub repos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For each variant: download the authors' files (sha256 checked when pinned, printed either way),\n"
                    "convert them to model.safetensors + config.json, self-check on assets/samples (finite, L2-normalised\n"
                    "descriptors, whose fingerprint goes into config.json and the model card), write the model card,\n"
                    "re-load the folder and compare with the fingerprint, upload to ORG/<arch>.<variant>, and print the\n"
                    "registry lines to paste into the variant's card (repo, commit, sha256).",
        epilog="examples:\n  python -m zoo publish dinov2_salad.8192_256 --org my-org --dry-run\n"
               "  python -m zoo publish --all --org my-org\n  python -m zoo publish runs/ucdir/export --org my-org\n"
               "needs: network, and a Hub token with write access in HF_TOKEN (not for --dry-run). See MAINTAINERS.md.")
    p.add_argument("names", nargs="*", metavar="NAME[.VARIANT]|OUT/export",
                   help="variants to publish, or a training run's export folder")
    p.add_argument("--all", action="store_true", help="every variant whose card names an authors' release")
    p.add_argument("--org", help="Hub organisation (or user) owning the repos ORG/<arch>.<variant>")
    p.add_argument("--pins", action="store_true",
                   help="print every variant's weight sources in the order pretrained=True tries them, with pin states")
    p.add_argument("--out", default="publish", help="folder for the converted repos (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="do everything but the upload")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the logged-in one)")
    p.add_argument("--samples", default=None, help="self-check images: a folder with queries/ and database/ "
                                                   "(default: the repository's assets/samples)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("retrieve", help="embed two image folders and write each query's top-k matches",
                       description="Embeds every image of --queries with encode_query and of --database with "
                                   "encode_database, searches exactly, and writes OUT/results.csv, OUT/results.json "
                                   "and OUT/grid.png (each query with its top matches).")
    p.add_argument("--model", required=True, help="model name (python -m zoo list)")
    p.add_argument("--pretrained", default="true", help="weight source: true, false, a path or hf-hub:org/repo[@rev]")
    p.add_argument("--queries", required=True, help="folder of query images")
    p.add_argument("--database", required=True, help="folder of database images")
    p.add_argument("--out", default="outputs/retrieve", help="output folder (default: %(default)s)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.set_defaults(func=cmd_retrieve)

    # These two parse their own options (python -m zoo train --help).
    sub.add_parser("train", add_help=False, help="train a model from a packaged recipe (same as training/train.py)")
    sub.add_parser("eval", add_help=False, help="rebuild a published table (same as eval/reproduce.py)")
    return parser


_DELEGATED = {"train": "zoo.cli.train", "eval": "zoo.cli.reproduce"}


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    from zoo.errors import ZooError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        command = importlib.import_module(_DELEGATED[argv[0]])
        return command.main(argv[1:], prog=f"python -m zoo {argv[0]}")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ZooError, KeyError, NotImplementedError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
