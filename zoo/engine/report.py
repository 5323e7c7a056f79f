"""Reports of an evaluated table: terminal table, JSON, Markdown, recall@K curves, retrieval grids.

Every metric a row declares is shown as ours, published, and the difference; a difference beyond
the row's tolerance is coloured red on the terminal and marked in the files; a published value of
null is shown as "not yet transcribed", a metric the protocol did not produce as "not computed".
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from zoo.io import atomic_path, atomic_write_text

__all__ = ["compare", "format_terminal", "to_json", "to_markdown", "plot_recall_curves",
           "plot_retrieval_grid", "write_report"]

NOT_TRANSCRIBED = "not yet transcribed"
NOT_COMPUTED = "not computed"
_COLOURS = {"ok": "\033[32m", "beyond tolerance": "\033[31m", NOT_TRANSCRIBED: "\033[33m", NOT_COMPUTED: "\033[33m"}
_RESET = "\033[0m"


def compare(row_result) -> list[dict[str, Any]]:
    """One entry per metric the row declares: ours, published, difference, tolerance, status."""
    out = []
    row = row_result.row
    for metric in row.metrics:
        ours = row_result.metrics.get(metric)
        published = row.published_value(metric)
        diff = None if ours is None or published is None else ours - published
        if ours is None:
            status = NOT_COMPUTED
        elif published is None:
            status = NOT_TRANSCRIBED
        else:
            status = "ok" if abs(diff) <= row.tolerance + 1e-9 else "beyond tolerance"
        out.append({"metric": metric, "ours": ours, "published": published, "difference": diff,
                    "tolerance": row.tolerance, "status": status})
    return out


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _use_colour(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def format_terminal(table_result, colour: bool | None = None) -> str:
    """The comparison as an aligned text table (ANSI colours when ``colour``, default: on a TTY)."""
    colour = _use_colour(sys.stdout) if colour is None else colour
    header = ("row", "data set", "metric", "ours", "published", "diff", "status")
    lines: list[tuple[str, ...]] = [header]
    statuses = []
    for rr in table_result.rows:
        for c in compare(rr):
            lines.append((rr.row.label, rr.dataset.name, c["metric"], _fmt(c["ours"]), _fmt(c["published"]),
                          _fmt(c["difference"], True), c["status"]))
            statuses.append(c["status"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [f"{table_result.table.title}"]
    for i, line in enumerate(lines):
        cells = [cell.ljust(w) for cell, w in zip(line, widths)]
        if colour and i > 0:
            cells[-1] = _COLOURS.get(statuses[i - 1], "") + cells[-1] + _RESET
        text.append("  ".join(cells).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    for rr in table_result.rows:
        n_skip = sum(len(v) for v in rr.skipped.values())
        if n_skip:
            text.append(f"{rr.row.label}: {n_skip} unreadable image(s) skipped "
                        f"({len(rr.skipped['query'])} query, {len(rr.skipped['database'])} database); see the JSON")
        if rr.result.extra.get("note"):
            text.append(f"{rr.row.label}: {rr.result.extra['note']}")
    return "\n".join(text)


def _jsonable(value: Any) -> Any:
    """Small JSON-able extras only (scalars, strings, short lists); tensors and long lists are left out."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        items = {str(k): _jsonable(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not _DROP}
    if isinstance(value, (list, tuple)) and len(value) <= 2000:
        items = [_jsonable(v) for v in value]
        return _DROP if any(v is _DROP for v in items) else items
    return _DROP


_DROP = object()


def to_json(table_result) -> dict[str, Any]:
    import zoo

    rows = []
    for rr in table_result.rows:
        extra = _jsonable(rr.result.extra)
        rows.append({
            "label": rr.row.label, "model": rr.row.model, "pretrained": rr.pretrained, "weights": rr.weights,
            "model_args": rr.row.model_args, "dataset": rr.row.dataset, "dataset_name": rr.dataset.name,
            "data_dir": str(rr.dataset.root), "dataset_args": rr.row.dataset_args, "protocol": rr.row.protocol,
            "protocol_args": rr.row.protocol_args, "n_queries": len(rr.dataset.queries),
            "n_database": len(rr.dataset.database), "comparison": compare(rr), "metrics": rr.metrics,
            "source": rr.row.source, "tolerance": rr.row.tolerance,
            "skipped": {side: [{"index": i, "reason": msg} for i, msg in items] for side, items in rr.skipped.items()},
            "extraction": rr.extraction, "search_seconds": round(rr.search_seconds, 3),
            "extra": extra if extra is not _DROP else {},
        })
    return {"table": table_result.table.name, "title": table_result.table.title,
            "table_file": str(table_result.table.path),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": {"zoo": zoo.__version__, "torch": torch.__version__, "python": sys.version.split()[0]},
            "settings": table_result.settings, "rows": rows}


def to_markdown(table_result) -> str:
    t = table_result.table
    s = table_result.settings
    lines = [f"# {t.title}", "",
             f"Table `{t.name}` ({t.path.name}); device {s.get('device')}, precision {s.get('precision')}. "
             "Differences beyond a row's tolerance are marked **bold**.", "",
             "| Row | Data set | Metric | Ours | Published | Diff | Status |",
             "|---|---|---|---:|---:|---:|---|"]
    for rr in table_result.rows:
        for c in compare(rr):
            diff = _fmt(c["difference"], True)
            if c["status"] == "beyond tolerance":
                diff = f"**{diff}**"
            lines.append(f"| {rr.row.label} | {rr.dataset.name} | {c['metric']} | {_fmt(c['ours'])} | "
                         f"{_fmt(c['published'])} | {diff} | {c['status']} |")
    lines += ["", "Sources of the published numbers:", ""]
    for rr in table_result.rows:
        lines.append(f"- {rr.row.label}: {rr.row.source or 'no source given'} (tolerance {rr.row.tolerance})")
    skipped = [(rr, sum(len(v) for v in rr.skipped.values())) for rr in table_result.rows]
    if any(n for _, n in skipped):
        lines += ["", "Unreadable images skipped (their descriptors are zero):", ""]
        lines += [f"- {rr.row.label}: {n}" for rr, n in skipped if n]
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "row"


def _curve(rr) -> tuple[list[int], list[float]] | None:
    curve = rr.result.extra.get("recall_curve")
    if curve:
        return list(curve["k"]), list(curve["recall"])
    if rr.result.correct is None:
        return None
    hit = torch.cumsum(rr.result.correct.int(), 1) > 0
    n = max(hit.shape[0], 1)
    ks = list(range(1, hit.shape[1] + 1))
    return ks, [100.0 * float(hit[:, k - 1].sum()) / n for k in ks]


def plot_recall_curves(table_result, out_dir: Path) -> list[Path]:
    """One PNG per data set: recall@K against K for every row evaluated on it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list] = {}
    for rr in table_result.rows:
        if _curve(rr) is not None:
            groups.setdefault(rr.dataset.name, []).append(rr)
    paths = []
    for name, members in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for rr in members:
            ks, rec = _curve(rr)
            ax.plot(ks, rec, marker="o" if len(ks) <= 30 else None, markersize=3, label=rr.row.label)
        ax.set_xlabel("K")
        ax.set_ylabel("recall@K (%)")
        ax.set_title(f"{table_result.table.name}: {name}")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"recall_{_slug(name)}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _thumb(record, size: int):
    from PIL import Image

    from zoo.io import load_image
    try:
        img = load_image(record.path)
        if record.box is not None:
            img = img.crop(tuple(record.box))
    except Exception:  # noqa: BLE001 - an unreadable image is drawn as a grey tile
        return Image.new("RGB", (size, size), (128, 128, 128))
    scale = size / max(img.width, img.height)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return tile


def plot_retrieval_grid(rr, path: Path, n_queries: int = 6, k: int = 5, size: int = 112) -> Path | None:
    """Each of ``n_queries`` evenly spaced queries with its top-``k`` database images; correct
    matches framed green, wrong ones red (grey where the protocol has no correctness)."""
    from PIL import Image, ImageDraw

    topk, correct = rr.result.topk, rr.result.correct
    if topk is None or topk.numel() == 0:
        return None
    n_q = topk.shape[0]
    k = min(k, topk.shape[1])
    picks = sorted({round(i * (n_q - 1) / max(n_queries - 1, 1)) for i in range(min(n_queries, n_q))})
    border, gap, label_h = 5, 8, 14
    cell = size + 2 * border
    width = cell * (k + 1) + gap
    grid = Image.new("RGB", (width, len(picks) * (cell + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, qi in enumerate(picks):
        y = r * (cell + label_h)
        draw.text((2, y), f"query {qi}", fill=(0, 0, 0))
        grid.paste(_thumb(rr.dataset.queries[qi], size), (border, y + label_h + border))
        for j in range(k):
            di = int(topk[qi, j])
            ok = None if correct is None else bool(correct[qi, j])
            colour = (128, 128, 128) if ok is None else ((0, 170, 0) if ok else (220, 0, 0))
            x = cell * (j + 1) + gap
            draw.rectangle([x, y + label_h, x + cell - 1, y + label_h + cell - 1], fill=colour)
            grid.paste(_thumb(rr.dataset.database[di], size), (x + border, y + label_h + border))
            draw.text((x + 2, y), f"#{j + 1}: {di}", fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return path


def write_report(table_result, out_dir: str | Path, echo: bool = True) -> dict[str, Any]:
    """Write ``<table>.json``, ``<table>.md``, ``recall_<data set>.png`` and ``grid_<row>.png`` into
    ``out_dir`` (JSON and Markdown atomically); print the terminal table when ``echo``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = table_result.table.name
    paths: dict[str, Any] = {"json": out_dir / f"{name}.json", "markdown": out_dir / f"{name}.md"}
    for key, text in (("json", json.dumps(to_json(table_result), indent=2, default=str)),
                      ("markdown", to_markdown(table_result))):
        atomic_write_text(paths[key], text)
    try:
        paths["curves"] = plot_recall_curves(table_result, out_dir)
    except ImportError:  # matplotlib is an [eval] extra
        paths["curves"] = []
        print("note: matplotlib is not installed; recall curves not drawn (pip install retrieval-zoo[eval])",
              file=sys.stderr)
    paths["grids"] = [p for rr in table_result.rows
                      if (p := plot_retrieval_grid(rr, out_dir / f"grid_{_slug(rr.row.label)}.png")) is not None]
    if echo:
        print(format_terminal(table_result))
        print(f"\nwrote {paths['json']}, {paths['markdown']}, {len(paths['curves'])} recall curve(s), "
              f"{len(paths['grids'])} retrieval grid(s) in {out_dir}")
    return paths
