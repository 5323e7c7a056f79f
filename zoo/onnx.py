"""ONNX export of zoo models, int8 quantization, and an onnxruntime runner with the zoo's interface.

:func:`export_onnx` writes, into one folder:

* ``query.onnx`` and ``database.onnx`` (input ``images`` ``(B, 3, H, W)`` float32, output
  ``descriptors`` ``(B, D)`` float32, L2-normalised), or a single ``model.onnx`` when both
  encoders are the same computation (the two traced programs are compared, nothing is assumed);
* with ``quantize="int8"`` also ``*.int8.onnx``: onnxruntime's dynamic quantization (int8
  weights, activations quantized per call) of the MatMul/Gemm nodes;
* ``config.json``: architecture, variant, weights, opset, which file serves which side, the
  input shape (batch always dynamic; height and width dynamic where the model allows it, else
  the fixed size), the preprocessing of each side, and the check of every graph against
  PyTorch made at export (largest absolute difference, sizes checked);
* ``README.md``: the model card (licence, paper, citation) with an ONNX section.

Graphs come from ``torch.onnx.export(dynamo=True)`` (torch.export). Height and width are
exported as symbolic sizes (multiples of the patch size for ViTs); a model that ties its graph
to one size (CVFT: its transport layer has a fixed number of positions) is exported at that size
and the folder records it. Because an exporter can silently freeze a value computed from a shape,
every graph is run with onnxruntime at export and compared with PyTorch at the export size, at
another batch size and, for dynamic graphs, at another image size; a difference above
``tolerance`` fails the export.

:class:`OnnxModel` loads such a folder and offers ``encode_query`` / ``encode_database`` on torch
tensors, so that :func:`zoo.engine.extract.extract_descriptors` and the evaluation engine
(``eval/reproduce.py --backend onnxruntime --onnx DIR``) use it in place of a torch model.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from zoo.errors import InputError, ZooError

__all__ = ["SIDES", "DEFAULT_OPSET", "BACKENDS", "OnnxExportError", "OnnxExport", "export_onnx", "OnnxModel",
           "check_backend", "load_onnx_model", "describe_transform"]

SIDES = ("query", "database")
INPUT_NAME, OUTPUT_NAME = "images", "descriptors"
#: opset 18 is the first with ``Resize(antialias=...)``; the torch.export-based exporter starts there.
DEFAULT_OPSET = 18
CONFIG_NAME = "config.json"
SHARED_GRAPH = "model.onnx"
#: Dynamic quantization covers the matrix products (the bulk of a ViT, the heads of CNNs). ORT's
#: dynamically quantized convolution (ConvInteger) has no fast CPU kernel: it would slow CNNs down.
QUANTIZED_OPS = ("MatMul", "Gemm")
#: the image shown to the transforms to learn each side's input size
_PROBE_SIZE = (640, 480)


class OnnxExportError(ZooError):
    """A model could not be exported, or its graph disagrees with PyTorch; the message says where."""


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"ONNX export and the onnxruntime backend need {', '.join(missing)}: "
                          "pip install 'retrieval-zoo[onnx]'")
    if not hasattr(torch.onnx, "ops"):
        raise ImportError(f"ONNX export needs torch >= 2.8 (torch.onnx.ops); this is torch {torch.__version__}")


# --------------------------------------------------------------------------- preprocessing record


def describe_transform(transform: Callable) -> list[dict[str, Any]]:
    """The steps of a preprocessing transform as plain data (what a non-Python runtime must reproduce).

    torchvision's Resize, CenterCrop, ToTensor and Normalize are spelled out; any other step is
    recorded by its class name and repr (the zoo's own transforms describe themselves there).
    """
    from torchvision import transforms as T

    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    out: list[dict[str, Any]] = []
    for step in steps:
        if isinstance(step, T.Resize):
            size = step.size if isinstance(step.size, int) else list(step.size)
            out.append({"op": "resize", "size": size, "interpolation": step.interpolation.value,
                        "antialias": step.antialias,
                        "note": "an int resizes the shorter side, [h, w] squashes to that size"})
        elif isinstance(step, T.CenterCrop):
            out.append({"op": "center_crop", "size": list(step.size)})
        elif isinstance(step, T.ToTensor):
            out.append({"op": "to_tensor", "note": "RGB, HWC uint8 -> CHW float32 in [0, 1]"})
        elif isinstance(step, T.Normalize):
            out.append({"op": "normalize", "mean": list(step.mean), "std": list(step.std)})
        else:
            out.append({"op": type(step).__name__, "repr": repr(step)})
    return out


def _probe_shapes(transforms: tuple[Callable, Callable]) -> dict[str, tuple[int, int]]:
    """``{side: (H, W)}`` that each side's transform makes of a 640x480 image."""
    from PIL import Image

    image = Image.new("RGB", _PROBE_SIZE, (128, 128, 128))
    return {side: tuple(int(v) for v in tf(image).shape[-2:]) for side, tf in zip(SIDES, transforms)}


# --------------------------------------------------------------------------- export


class _Encoder(nn.Module):
    """One side of a zoo model as a module with a single input (what torch.export traces)."""

    def __init__(self, model: nn.Module, side: str) -> None:
        super().__init__()
        self.model = model
        self.side = side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, f"encode_{self.side}")(images)


def _size_multiple(model: nn.Module) -> int:
    """The step image sizes must keep: a ViT's patch size, else 1."""
    for module in model.modules():
        patch = getattr(module, "patch_size", None)
        if isinstance(patch, (tuple, list)) and patch and isinstance(patch[0], int):
            return int(patch[0])
        if isinstance(patch, int) and not isinstance(patch, bool):
            return patch
    return 1


def _dynamic_shapes(multiple: int, dynamic_size: bool) -> tuple[dict[int, Any]]:
    from torch.export import Dim

    shapes: dict[int, Any] = {0: Dim("batch", min=1, max=1 << 16)}
    if dynamic_size:
        if multiple > 1:
            shapes[2] = multiple * Dim("height_patches", min=1, max=1 << 12)
            shapes[3] = multiple * Dim("width_patches", min=1, max=1 << 12)
        else:
            shapes[2] = Dim("height", min=1, max=1 << 16)
            shapes[3] = Dim("width", min=1, max=1 << 16)
    return (shapes,)


def _torch_export(model: nn.Module, side: str, example: torch.Tensor,
                  fixed_example: torch.Tensor, multiple: int) -> tuple[Any, Any, str | None, torch.Tensor]:
    """``(ExportedProgram, dynamic shapes or None, why not dynamic, example used)``: symbolic
    height/width first; where the model's code specialises on the size, ``fixed_example``'s size
    (the size the model's own transform produces) with a symbolic batch only."""
    wrapper = _Encoder(model, side).eval()
    shapes = _dynamic_shapes(multiple, True)
    try:
        # As torch.onnx.export captures: sizes of 1 are not special cases (a stride that leaves a
        # 1-pixel map must not make the graph branch), and suggested range fixes are taken.
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            try:
                program = torch.export.export(wrapper, (example,), dynamic_shapes=shapes)
            except torch._dynamo.exc.UserError as err:
                shapes = torch.export.dynamic_shapes.refine_dynamic_shapes_from_suggested_fixes(err.msg, shapes)
                program = torch.export.export(wrapper, (example,), dynamic_shapes=shapes)
                if not _symbolic_image_size(program):  # the fix pinned the size: a fixed-size model
                    raise OnnxExportError(_first_line(err)) from err
        return program, shapes, None, example
    except Exception as dynamic_err:  # noqa: BLE001 - any failure: try the fixed size, report both
        reason = _first_line(dynamic_err)
        try:
            program = torch.export.export(wrapper, (fixed_example,), dynamic_shapes=_dynamic_shapes(multiple, False))
        except Exception as static_err:
            raise OnnxExportError(
                f"{side} encoder: torch.export failed with a dynamic image size ({reason}) and at the fixed "
                f"size {tuple(fixed_example.shape[-2:])} ({_first_line(static_err)})") from static_err
        return program, None, reason, fixed_example


def _symbolic_image_size(program: Any) -> bool:
    """Whether the exported program's image input has symbolic height and width."""
    images = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == INPUT_NAME)
    return all(isinstance(d, torch.SymInt) for d in images.meta["val"].shape[2:])


def _first_line(err: BaseException) -> str:
    """The line of an export error that says what happened (torch.export's own first line is a
    generic "Constraints violated"; the specialisation it found follows)."""
    lines = [line.strip(" -") for line in str(err).strip().splitlines() if line.strip()]
    telling = [line for line in lines if "specialized" in line or "Not all values" in line]
    return ((telling or lines or [type(err).__name__])[0])[:300]


def _same_program(a: Any, b: Any) -> bool:
    """Whether two exported programs of one model are the same computation: same graph code, same
    parameters and buffers bound to the same inputs, equal constants (tensors made in forward)."""
    return (a.graph_module.code == b.graph_module.code
            and [(s.kind, s.target) for s in a.graph_signature.input_specs]
            == [(s.kind, s.target) for s in b.graph_signature.input_specs]
            and a.constants.keys() == b.constants.keys()
            and all(torch.equal(torch.as_tensor(a.constants[k]), torch.as_tensor(b.constants[k]))
                    for k in a.constants if isinstance(a.constants[k], torch.Tensor)))


def _atomic_save_onnx(onnx_program: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    onnx_program.save(str(tmp), external_data=False)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_sizes(example: torch.Tensor, dynamic: bool, multiple: int) -> list[tuple[int, ...]]:
    """Input shapes the export check runs: the example, another batch size and (dynamic graphs)
    another image size (one more patch row and two more columns, or +32 / +16 pixels)."""
    b, c, h, w = example.shape
    shapes = [(b, c, h, w), (b + 1, c, h, w)]
    if dynamic:
        step_h, step_w = (multiple, 2 * multiple) if multiple > 1 else (32, 16)
        shapes.append((b, c, h + step_h, w + step_w))
    return shapes


def _validate(model: nn.Module, side: str, path: Path, shapes: Sequence[tuple[int, ...]], seed: int) -> dict[str, Any]:
    """Largest |onnxruntime - PyTorch| over random inputs of ``shapes``, and the shapes checked."""
    session = _session(path)
    encode = getattr(model, f"encode_{side}")
    generator = torch.Generator().manual_seed(seed)
    worst, checked = 0.0, []
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = encode(x).float()
        got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        if got.shape != expected.shape:
            raise OnnxExportError(f"{path.name}: input {shape} gave descriptors {tuple(got.shape)}, "
                                  f"PyTorch {tuple(expected.shape)}")
        worst = max(worst, (got - expected).abs().max().item())
        checked.append(list(shape))
    return {"max_abs_diff_vs_pytorch": worst, "inputs_checked": checked}


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    quantize_dynamic(src, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS))
    os.replace(tmp, dst)


def _quantized_agreement(fp32: Path, int8: Path, shape: tuple[int, ...], seed: int) -> float:
    """Smallest cosine between fp32 and int8 descriptors of a random batch of ``shape``."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).numpy()
    a = torch.from_numpy(_session(fp32).run([OUTPUT_NAME], {INPUT_NAME: x})[0])
    b = torch.from_numpy(_session(int8).run([OUTPUT_NAME], {INPUT_NAME: x})[0])
    return torch.nn.functional.cosine_similarity(a, b, dim=1).min().item()


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    out_dir: Path
    config: dict[str, Any]
    files: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        lines = []
        for side in SIDES:
            g = self.config["graphs"][side]
            size = "dynamic height x width" if g["dynamic_image_size"] else f"fixed {g['image_size']}"
            if g["dynamic_image_size"] and g["size_multiple"] > 1:
                size += f" (multiples of {g['size_multiple']})"
            check = g["check"]
            lines.append(f"{side}: {g['file']}, input (batch, 3, H, W) {size}; onnxruntime vs PyTorch max abs diff "
                         f"{check['max_abs_diff_vs_pytorch']:.2e} over inputs {check['inputs_checked']}")
            if "int8" in g:
                lines.append(f"{side} int8: {g['int8']['file']}, min cosine to fp32 {g['int8']['min_cosine_vs_fp32']:.5f}")
        lines.append(f"wrote {', '.join(self.files)} in {self.out_dir}")
        return lines


def export_onnx(model: nn.Module, out_dir: str | Path, *, opset: int = DEFAULT_OPSET, quantize: str | None = None,
                image_size: tuple[int, int] | None = None, batch_size: int = 2, tolerance: float = 1e-4,
                log: Callable[[str], None] | None = None) -> OnnxExport:
    """Export both encoders of a zoo model to ONNX in ``out_dir`` (see the module docstring).

    Args:
        model: built by :func:`zoo.create_model` (its ``zoo_config`` names the architecture).
        out_dir: output folder (created; files in it are replaced atomically).
        opset: ONNX opset (>= 18).
        quantize: ``None`` or ``"int8"`` (also write dynamically quantized graphs).
        image_size: ``(H, W)`` of the example input traced and checked; default: what the model's
            transforms make of a 640x480 image (a fixed-size graph always uses that size).
        batch_size: batch of the example input (>= 2, so that the batch stays symbolic).
        tolerance: largest |onnxruntime - PyTorch| accepted by the export check.
        log: called with a line per stage (default: print to stderr).

    Returns:
        :class:`OnnxExport` with the written config.

    Raises:
        OnnxExportError: torch.export failed, or a graph disagrees with PyTorch beyond ``tolerance``.
        InputError: a bad argument (names it).
    """
    import zoo
    from zoo.export import model_card

    _require_onnx()
    import onnx
    import onnxruntime

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    config = dict(getattr(model, "zoo_config", None) or {})
    if "architecture" not in config:
        raise InputError("model has no zoo_config; build it with zoo.create_model() before exporting")
    if quantize not in (None, "int8"):
        raise InputError(f"--quantize: expected int8, got {quantize!r}")
    if opset < DEFAULT_OPSET:
        raise InputError(f"--opset {opset}: the exporter needs opset >= {DEFAULT_OPSET}")
    if batch_size < 2:
        raise InputError(f"batch_size must be >= 2 (a batch of 1 would be traced as a constant), got {batch_size}")
    name = config["architecture"]
    transforms = zoo.model_transforms(model)
    probed = _probe_shapes(transforms)
    model = model.eval().cpu()
    multiple = _size_multiple(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    programs: dict[str, tuple[Any, Any, str | None, torch.Tensor]] = {}
    generator = torch.Generator().manual_seed(0)
    for side in SIDES:
        own = torch.randn(batch_size, 3, *probed[side], generator=generator)
        example = torch.randn(batch_size, 3, *image_size, generator=generator) if image_size else own
        start = time.perf_counter()
        say(f"{side}: torch.export at {tuple(example.shape)} ...")
        programs[side] = _torch_export(model, side, example, own, multiple)
        say(f"{side}: traced in {time.perf_counter() - start:.1f} s")
    shared = _same_program(programs["query"][0], programs["database"][0])

    graphs: dict[str, dict[str, Any]] = {}
    written: list[str] = []
    for side in SIDES:
        _, shapes, reason, example = programs[side]
        dynamic = shapes is not None
        if shared and side == "database":
            graphs[side] = graphs["query"]
            continue
        file = SHARED_GRAPH if shared else f"{side}.onnx"
        start = time.perf_counter()
        say(f"{file}: converting to ONNX (opset {opset}) ...")
        # From the module, not from ``program``: converting an ExportedProgram loses derived
        # symbolic sizes (14 * patches) and freezes them at the example's value.
        onnx_program = torch.onnx.export(_Encoder(model, side).eval(), (example,), dynamo=True, opset_version=opset,
                                         input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                                         dynamic_shapes=shapes or _dynamic_shapes(multiple, False))
        _atomic_save_onnx(onnx_program, out / file)
        written.append(file)
        say(f"{file}: written in {time.perf_counter() - start:.1f} s; checking against PyTorch ...")
        check = _validate(model, side, out / file, _check_sizes(example, dynamic, multiple), seed=1)
        if check["max_abs_diff_vs_pytorch"] > tolerance:
            raise OnnxExportError(
                f"{out / file}: onnxruntime differs from PyTorch by {check['max_abs_diff_vs_pytorch']:.2e} "
                f"(> tolerance {tolerance:g}) on inputs {check['inputs_checked']}")
        graph = {"file": file, "input": INPUT_NAME, "output": OUTPUT_NAME, "dynamic_batch": True,
                 "dynamic_image_size": dynamic, "size_multiple": multiple if dynamic else None,
                 "image_size": None if dynamic else list(example.shape[-2:]), "check": check}
        if not dynamic:
            graph["fixed_size_reason"] = reason
        if quantize == "int8":
            int8_file = file.replace(".onnx", ".int8.onnx")
            say(f"{int8_file}: dynamic int8 quantization of {', '.join(QUANTIZED_OPS)} ...")
            _quantize(out / file, out / int8_file)
            written.append(int8_file)
            graph["int8"] = {"file": int8_file, "quantization": "onnxruntime quantize_dynamic, QInt8 weights, "
                                                                 f"ops {', '.join(QUANTIZED_OPS)}",
                             "min_cosine_vs_fp32": _quantized_agreement(out / file, out / int8_file,
                                                                        tuple(example.shape), seed=2)}
        graphs[side] = graph

    config.update({
        "format": "onnx",
        "opset": opset,
        "shared_graph": shared,
        "graphs": graphs,
        # The zoo's preprocessing record (config["preprocessing"], from the model) builds the transforms;
        # the steps spell them out for runtimes without Python.
        "preprocessing_steps": {side: {"steps": describe_transform(tf), "output_size": list(probed[side]),
                                       "output_size_note": "for a 640x480 input image"}
                                for side, tf in zip(SIDES, transforms)},
        "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__,
                          "onnxruntime": onnxruntime.__version__, "zoo": zoo.__version__},
    })
    _atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    _atomic_write_text(out / "README.md", model_card(name, config) + _onnx_card_section(config))
    return OnnxExport(out, config, written + [CONFIG_NAME, "README.md"])


def _onnx_card_section(config: dict[str, Any]) -> str:
    exported = f"Exported with opset {config['opset']} by retrieval-zoo (torch {config['exported_with']['torch']})."
    lines = ["## ONNX", "", exported, "", "| side | file | input | int8 file |", "|---|---|---|---|"]
    for side in SIDES:
        g = config["graphs"][side]
        size = "(B, 3, H, W)" if g["dynamic_image_size"] else f"(B, 3, {g['image_size'][0]}, {g['image_size'][1]})"
        if g["dynamic_image_size"] and g["size_multiple"] > 1:
            size += f", H and W multiples of {g['size_multiple']}"
        lines.append(f"| {side} | `{g['file']}` | `{g['input']}` {size} float32 | "
                     f"{'`' + g['int8']['file'] + '`' if 'int8' in g else '-'} |")
    usage = ("Output `descriptors` (B, D) float32, L2-normalised. Preprocessing of each side: `preprocessing_steps` "
             "in config.json (built from the record `preprocessing`). With the zoo installed: `zoo.onnx.OnnxModel(\"<this folder>\").encode_query(images)`.")
    lines += ["", usage, ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- runner


class OnnxModel(nn.Module):
    """An exported folder run by onnxruntime, with the zoo model interface.

    ``encode_query`` / ``encode_database``: ``(B, 3, H, W)`` float tensor (any device) ->
    ``(B, D)`` float32 descriptors on the input's device. It is an ``nn.Module`` without
    parameters so that code written for zoo models (``.eval()``, ``.to()``, ``state_dict``)
    accepts it; its one buffer, ``graph_sha256``, is the digest of the graphs it runs, so
    descriptor caches keyed by the state dict tell exports apart.

    Args:
        path: a folder written by :func:`export_onnx`.
        quantized: run the ``*.int8.onnx`` graphs (exported with ``quantize="int8"``).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, path: str | Path, quantized: bool = False, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        super().__init__()
        _require_onnx()
        import onnxruntime as ort

        self.path = Path(path)
        config_path = self.path / CONFIG_NAME
        if not config_path.is_file():
            raise InputError(f"--onnx {self.path}: no {CONFIG_NAME} (write the folder with "
                             "`python -m zoo export NAME --format onnx --out DIR`)")
        config = json.loads(config_path.read_text())
        if config.get("format") != "onnx" or "graphs" not in config:
            raise InputError(f"{config_path}: not an ONNX export (format {config.get('format')!r})")
        self.config = config
        self.zoo_config = {k: config[k] for k in ("architecture", "variant_tag", "variant", "weights",
                                                  "descriptor_dim", "preprocessing") if k in config}
        self.zoo_config.update({"backend": "onnxruntime", "onnx": str(self.path), "quantized": quantized})
        # What reports print as the row's weights: say that the export ran, and which graphs.
        self.zoo_config["weights"] = (f"{config.get('weights', 'unknown weights')}, run by onnxruntime from "
                                      f"{self.path}{' (int8)' if quantized else ''}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._sessions: dict[str, Any] = {}
        self._graphs: dict[str, dict[str, Any]] = {}
        digest = hashlib.sha256()
        for side in SIDES:
            graph = config["graphs"][side]
            if quantized and "int8" not in graph:
                raise InputError(f"{self.path}: no int8 graph for the {side} side; export with --quantize int8")
            file = self.path / (graph["int8"]["file"] if quantized else graph["file"])
            if not file.is_file():
                raise InputError(f"{file}: missing ({config_path} names it for the {side} side)")
            self._graphs[side] = graph
            shared = next((s for s, g in self._graphs.items() if s != side and g["file"] == graph["file"]), None)
            if shared:
                self._sessions[side] = self._sessions[shared]
            else:
                self._sessions[side] = ort.InferenceSession(str(file), options,
                                                            providers=list(providers or ["CPUExecutionProvider"]))
                digest.update(file.read_bytes())
        self.register_buffer("graph_sha256", torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8))

    def transforms(self) -> tuple[Callable, Callable]:
        """The exported model's ``(query_transform, database_transform)``, from its preprocessing record."""
        import zoo

        return zoo.model_transforms(self)

    def _run(self, side: str, images: torch.Tensor) -> torch.Tensor:
        graph = self._graphs[side]
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"{self.path} ({side}): expected images (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if not graph["dynamic_image_size"] and [h, w] != graph["image_size"]:
            raise InputError(f"{self.path} ({side}): this graph takes {graph['image_size'][0]}x{graph['image_size'][1]} "
                             f"images only, got {h}x{w}")
        multiple = graph.get("size_multiple") or 1
        if h % multiple or w % multiple:
            raise InputError(f"{self.path} ({side}): height and width must be multiples of {multiple}, got {h}x{w}")
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self._sessions[side].run([graph["output"]], {graph["input"]: x})[0]
        return torch.from_numpy(out).to(images.device)

    def encode_query(self, images: torch.Tensor) -> torch.Tensor:
        return self._run("query", images)

    def encode_database(self, images: torch.Tensor) -> torch.Tensor:
        return self._run("database", images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The query encoder (the only one of single-branch models)."""
        return self.encode_query(images)


BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")


def check_backend(backend: str, onnx_dir: str | Path | None) -> None:
    """Refuse an unknown ``--backend``, or an onnxruntime backend without ``--onnx`` (and vice versa)."""
    if backend not in BACKENDS:
        raise InputError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "torch" and onnx_dir is None:
        raise InputError(f"--backend {backend} needs --onnx DIR (written by `python -m zoo export NAME --format onnx`)")
    if backend == "torch" and onnx_dir is not None:
        raise InputError("--onnx DIR is only read with --backend onnxruntime or onnxruntime-int8")


def load_onnx_model(path: str | Path, model_name: str, model_args: dict[str, Any] | None = None,
                    quantized: bool = False) -> OnnxModel:
    """:class:`OnnxModel` of ``path``, checked to be the export of ``model_name`` (``arch[.variant]``)
    built with ``model_args``: the evaluation engine's way to put an export in a table row's place."""
    from zoo.models import get_model_info, split_name

    model = OnnxModel(path, quantized=quantized)
    arch, tag = split_name(model_name)
    exported = model.zoo_config.get("architecture")
    if exported != arch:
        raise InputError(f"--onnx {path} holds {exported}, but the row evaluates {model_name}")
    info = get_model_info(model_name)
    tag = tag or info.default_variant
    wanted = {**info.variant_kwargs(tag), **dict(model_args or {})}
    have = model.zoo_config.get("variant", {})
    differing = {k: (v, have.get(k)) for k, v in wanted.items() if k in have and have[k] != v}
    if differing or (split_name(model_name)[1] and model.zoo_config.get("variant_tag") != tag):
        shown = ", ".join(f"{k}: row {a!r} vs export {b!r}" for k, (a, b) in differing.items())
        raise InputError(f"--onnx {path} was exported from variant {model.zoo_config.get('variant_tag')!r}, "
                         f"the row evaluates {model_name} {model_args or ''} ({shown or 'another variant'}); "
                         "export that variant")
    return model
