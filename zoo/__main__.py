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

from zoo.settings import parse_pretrained

EPILOG = """examples:
  python -m zoo list
  python -m zoo convert dinov2_salad --checkpoint dino_salad.ckpt --out weights/salad
  python -m zoo convert cvft_vgg.cvusa --checkpoint Model/CVUSA/model.ckpt --out weights/cvft
  python -m zoo export dinov2_salad --pretrained weights/salad --out release/salad
  python -m zoo export dinov2_salad --format onnx --quantize int8 --out release/salad-onnx
  python -m zoo push release/salad --repo my-org/dinov2-salad
  python -m zoo publish --all --org my-org --dry-run
  python -m zoo retrieve --model dinov2_salad --database photos/db --queries photos/q --out results
  python -m zoo index build --model dinov2_salad --images map/ --coords exif --out map.index
  python -m zoo index search --index map.index --queries photos/q --topk 5 --out results
"""


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as JSON where they can be (numbers, booleans, lists)."""
    from zoo.errors import InputError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option expects key=value, got {pair!r}")
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
    from zoo.io import check_output_dir, load_state_dict_strict
    from zoo.models import get_model_info, split_name
    from zoo.variants import check_builder_args

    info = get_model_info(args.name)
    options = _parse_options(args.option)
    if args.whitening:
        options["whitening"] = args.whitening
    check_output_dir(args.out)
    state_dict, config = convert_checkpoint(info, args.checkpoint, **options)
    # The variant named on the command line, else the one the converter read from the checkpoint.
    tag = split_name(args.name)[1] or config.get("variant_tag")
    tag = tag if tag in info.variants else info.default_variant
    # Read from tensor shapes: checked against the cards before the model is built.
    read = check_builder_args(info, config.get("variant", {}), f"{args.checkpoint}: variant read from the checkpoint")
    variant = {**info.variant_kwargs(tag), **read}
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
    from zoo.errors import InputError
    from zoo.export import export_pretrained
    from zoo.io import check_output_dir

    if args.format != "onnx" and (args.opset is not None or args.quantize or args.image_size):
        raise InputError("--opset, --quantize and --image-size apply to --format onnx only")
    if args.image_size is not None and not 1 <= len(args.image_size) <= 2:
        raise InputError(f"--image-size takes H or H W, got {len(args.image_size)} numbers")
    check_output_dir(args.out)
    model = zoo.create_model(args.name, pretrained=parse_pretrained(args.pretrained))
    if args.format == "onnx":
        from zoo.onnx import DEFAULT_OPSET, export_onnx

        size = None if args.image_size is None else (args.image_size * 2)[:2]  # H alone means H x H
        result = export_onnx(model, args.out, opset=args.opset or DEFAULT_OPSET, quantize=args.quantize,
                             image_size=size)
        for line in result.summary_lines():
            print(line)
        return 0
    out = export_pretrained(model, args.out)
    print(f"exported {args.name} to {out} (model.safetensors, config.json, README.md)")
    return 0


#: what ``push`` uploads: the model and its card, never whatever else lies in the folder
PUSHED_FILES = ("model.safetensors", "config.json", "README.md")


def cmd_push(args: argparse.Namespace) -> int:
    from huggingface_hub import HfApi

    from zoo.errors import InputError
    from zoo.hub import CONFIG_NAME, WEIGHTS_NAME
    from zoo.io import sha256_file

    if args.token is not None:
        raise InputError("--token is not accepted (a token on the command line is visible in the process list): "
                         "set HF_TOKEN in the environment or log in once with `hf auth login`")
    folder = Path(args.folder)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (folder / name).is_file():
            raise InputError(f"{folder / name} is missing; write the folder with `python -m zoo export` first")
    files = [name for name in PUSHED_FILES if (folder / name).is_file()]
    # HF_ENDPOINT is read now, as zoo.hub does, not when huggingface_hub was first imported;
    # the token is HF_TOKEN or the stored login (huggingface_hub's own lookup).
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(args.repo, private=args.private, exist_ok=True)
    info = api.upload_folder(repo_id=args.repo, folder_path=str(folder), commit_message=args.message,
                             allow_patterns=files)
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
        model_name=args.model, pretrained=parse_pretrained(args.pretrained), queries=args.queries,
        database=args.database, out_dir=args.out, topk=args.topk, device=args.device,
        batch_size=args.batch_size, precision=args.precision, skip_corrupt=args.skip_corrupt,
        coords=args.coords, utm_zone=args.utm_zone, radius=args.radius)
    for line in result.summary_lines():
        print(line)
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse then answers a bad value in one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def cmd_index(args: argparse.Namespace) -> int:
    from zoo import index

    common = dict(device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                  progress=not args.quiet)
    if args.index_command == "build":
        result = index.build_index(args.model, args.out, images=args.images, list_file=args.list, kind=args.kind,
                                   pretrained=parse_pretrained(args.pretrained), coords=args.coords,
                                   utm_zone=args.utm_zone, cache_dir=args.cache_dir, overwrite=args.overwrite,
                                   precision=args.precision, **common)
    elif args.index_command == "add":
        result = index.add_to_index(args.index, images=args.images, list_file=args.list, coords=args.coords,
                                    pretrained=parse_pretrained(args.pretrained),
                                    utm_zone=args.utm_zone, cache_dir=args.cache_dir, **common)
    else:
        result = index.search_index(args.index, args.queries, args.out, topk=args.topk, rerank_n=args.rerank,
                                    pretrained=parse_pretrained(args.pretrained),
                                    nprobe=args.nprobe, ef=args.ef, coords=args.coords, utm_zone=args.utm_zone,
                                    radius=args.radius, **common)
    for line in result.summary_lines():
        print(line)
    return 0


def _add_coords_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--coords", metavar="SOURCE",
                   help=f"coordinates of {what}: a CSV file with header path,lat,lon (or path,east,north in UTM "
                        "metres), 'exif' (GPS EXIF tags) or 'names' (@UTM_east@UTM_north@ file names of the VPR "
                        "benchmarks)")
    p.add_argument("--utm-zone", metavar="ZONE",
                   help="UTM zone of UTM coordinates, e.g. 17T: converts them to lat/lon (needs the `utm` package); "
                        "without it they stay UTM metres and distances are Euclidean")


def _add_radius_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--radius", type=float, default=None, metavar="M",
                   help="consensus radius in metres: the estimate averages, weighted by similarity, the top-k matches "
                        "within this distance of the best-supported match (default 25, the VPR benchmarks' "
                        "positive threshold)")


def _add_index_parser(sub) -> None:
    from zoo.index import DEFAULT_RERANK

    p = sub.add_parser(
        "index", help="city-scale search: build a faiss index of a map's images, add to it, search and localise",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Descriptors of a map's images (cached, resumable) in a faiss index folder, searched with an "
                    "approximate shortlist re-ranked exactly; with coordinates, each query gets an estimated "
                    "position.\n\nIVF-PQ parameters follow the map's size n and dimension d: nlist = the power of two "
                    "nearest 4*sqrt(n) (at most n/39); M = d/8 code bytes (at most 64); OPQ only when d > 8*M or "
                    "M does not divide d; nbits = 8 (fewer for maps under ~10k images); nprobe = max(16, nlist/64).")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--device", default="cpu", help="where the model runs (default: %(default)s)")
        q.add_argument("--batch-size", type=int, default=32)
        q.add_argument("--num-workers", type=int, default=0, help="image decoding processes")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
        q.set_defaults(func=cmd_index)

    b = isub.add_parser("build", help="embed a map's images and write an index folder",
                        description="Embed every image with the model's encode_database and write INDEX_DIR: "
                                    "index.faiss, descriptors.npy (float16, for exact re-ranking), images.txt, "
                                    "coords.npy (with --coords) and manifest.json. A killed build resumes from "
                                    "INDEX_DIR/cache.")
    b.add_argument("--model", required=True, help="NAME or NAME.VARIANT (python -m zoo list)")
    b.add_argument("--pretrained", default="true", help="weight source: true, false, a path or hf-hub:org/repo[@rev]")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of map images (searched recursively)")
    src.add_argument("--list", metavar="FILE", help="text file with one image path per line (relative to the file)")
    b.add_argument("--out", required=True, metavar="INDEX_DIR")
    b.add_argument("--kind", default="ivfpq", choices=["flat", "ivfpq", "hnsw"],
                   help="flat: exact, for maps up to a few 100k images; ivfpq: compressed codes + exact re-ranking "
                        "(default); hnsw: graph over float32 descriptors")
    _add_coords_options(b, "the map's images")
    b.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    b.add_argument("--cache-dir", help="descriptor cache (default: INDEX_DIR/cache)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index in INDEX_DIR")
    common(b)

    a = isub.add_parser("add", help="append images to an index (with the model its manifest names)")
    a.add_argument("--index", required=True, metavar="INDEX_DIR")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR")
    src.add_argument("--list", metavar="FILE")
    a.add_argument("--pretrained", default=None, help="weight source (default: the one the index was built with)")
    _add_coords_options(a, "the added images")
    a.add_argument("--cache-dir", help="descriptor cache (default: INDEX_DIR/cache)")
    common(a)

    s = isub.add_parser("search", help="search an index with a folder of queries; localise them",
                        description="Embed the queries with the index's model (refused if model, variant or weights "
                                    "differ), take an approximate shortlist of --rerank items, re-rank it exactly, and "
                                    "write OUT/results.csv, results.json and grid.png; when the index has "
                                    "coordinates also OUT/positions.csv and map.png (top-1 and consensus estimates, "
                                    "errors in metres for queries whose own coordinates --coords gives).")
    s.add_argument("--index", required=True, metavar="INDEX_DIR")
    s.add_argument("--queries", required=True, metavar="DIR", help="folder of query images")
    s.add_argument("--out", required=True, metavar="OUT", help="output folder")
    s.add_argument("--topk", type=int, default=5, help="matches per query, also the K of the consensus "
                                                       "(default: %(default)s)")
    s.add_argument("--rerank", type=int, default=DEFAULT_RERANK, metavar="N",
                   help="shortlist size re-ranked exactly (IVF-PQ, HNSW; default: %(default)s)")
    s.add_argument("--nprobe", type=int, help="IVF-PQ lists visited per query (default: the manifest's)")
    s.add_argument("--ef", type=int, help="HNSW candidates explored per query (default: the manifest's)")
    s.add_argument("--pretrained", default=None, help="weight source (default: the one the index was built with)")
    _add_coords_options(s, "the queries (their true positions, for errors in metres)")
    _add_radius_option(s)
    common(s)



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

    p = sub.add_parser("export", help="write a model (any weight source) as safetensors or ONNX, with a model card",
                       description="--format safetensors (default) writes OUT/model.safetensors + config.json, "
                                   "loadable with zoo.create_model(NAME, pretrained=OUT). --format onnx writes "
                                   "OUT/query.onnx and OUT/database.onnx (one OUT/model.onnx when both encoders are "
                                   "the same), dynamic batch and, where the model allows it, dynamic image size; "
                                   "config.json records opset, input sizes and preprocessing. Every graph is run "
                                   "with onnxruntime and compared with PyTorch before the export succeeds.")
    p.add_argument("name", help="model name, optionally NAME.VARIANT (python -m zoo list)")
    p.add_argument("--pretrained", default="true", help="weight source: true, false, a path or hf-hub:org/repo[@rev]")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors",
                   help="output format (default: %(default)s)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, >= 18 (default: 18)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write onnxruntime dynamically quantized graphs (*.int8.onnx) beside the fp32 ones")
    p.add_argument("--image-size", type=int, nargs="+", metavar="PX",
                   help="H [W] of the example traced and checked (default: what the model's transform makes of "
                        "a 640x480 image; fixed-size models always use their own)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="upload an exported folder's model.safetensors, config.json and README.md to the Hub",
                       description="Upload model.safetensors, config.json and README.md (the model card) of FOLDER "
                                   "to a Hugging Face Hub repo; other files in FOLDER stay local. The token is "
                                   "HF_TOKEN from the environment, else the one `hf auth login` stored.")
    p.add_argument("folder")
    p.add_argument("--repo", required=True, help="org/name on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)  # refused with an explanation
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
    p.add_argument("--topk", type=_positive_int, default=5, help="matches per query (default: %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast precision; auto: bf16 on CPUs with native bf16 (avx512_bf16/AMX) and on CUDA "
                        "where supported, fp16 on other GPUs, fp32 on other CPUs (default: %(default)s)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave unreadable images out of the search (listed in the output) instead of stopping")
    _add_coords_options(p, "database and query images (localises each query; errors where its own are known)")
    _add_radius_option(p)
    p.set_defaults(func=cmd_retrieve)

    _add_index_parser(sub)

    # These two parse their own options (python -m zoo train --help).
    sub.add_parser("train", add_help=False, help="train a model from a packaged recipe (same as training/train.py)")
    sub.add_parser("eval", add_help=False, help="rebuild a published table (same as eval/reproduce.py)")
    return parser


_DELEGATED = {"train": "zoo.cli.train", "eval": "zoo.cli.reproduce"}


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    from zoo.cli.guard import run_guarded

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        command = importlib.import_module(_DELEGATED[argv[0]])
        return command.main(argv[1:], prog=f"python -m zoo {argv[0]}")
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args), f"python -m zoo {args.command}")


if __name__ == "__main__":
    sys.exit(main())
