"""ONNX export of the five models: onnxruntime equals PyTorch on both sides, at two batch sizes (and
for SALAD at a second image size); int8 graphs; the runner in the evaluation engine; errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import zoo  # noqa: E402
from zoo.errors import InputError  # noqa: E402
from zoo.onnx import OnnxModel, check_backend, export_onnx, load_onnx_model  # noqa: E402

# Small members of each family: builder arguments that shrink the model where the builder has them.
MODELS = {
    "dinov2_salad": ("dinov2_salad.512_32", {"depth": 2, "num_trainable_blocks": 1}),
    "dycl_resnet": ("dycl_resnet", {}),
    "ucdir_moco": ("ucdir_moco", {"arch": "resnet18"}),
    "aml_student": ("aml_student.teacher_vgg16", {}),
    "cvft_vgg": ("cvft_vgg", {"ground_size": (32, 160), "aerial_size": (64, 64)}),
}
#: example size traced (None: the model's own, fixed size)
EXPORT_SIZE = {"dinov2_salad": (56, 70), "dycl_resnet": (64, 64), "ucdir_moco": (64, 64), "aml_student": (64, 64),
               "cvft_vgg": None}


def _build(key: str) -> torch.nn.Module:
    name, kwargs = MODELS[key]
    torch.manual_seed(0)
    return zoo.create_model(name, pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def salad_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """SALAD through the command line: saved weights -> ``export --format onnx --quantize int8``."""
    from zoo.__main__ import main
    from zoo.export import export_pretrained

    root = tmp_path_factory.mktemp("salad")
    model = _build("dinov2_salad")
    export_pretrained(model, root / "weights", card=False)
    h, w = EXPORT_SIZE["dinov2_salad"]
    assert main(["export", "dinov2_salad", "--pretrained", str(root / "weights"), "--format", "onnx",
                 "--quantize", "int8", "--image-size", str(h), str(w), "--out", str(root / "onnx")]) == 0
    return model, root / "onnx"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, salad_export) -> dict[str, tuple[torch.nn.Module, Path]]:
    out = {"dinov2_salad": salad_export}
    for key in MODELS:
        if key not in out:
            model = _build(key)
            folder = tmp_path_factory.mktemp(key)
            export_onnx(model, folder, image_size=EXPORT_SIZE[key], log=lambda _: None)
            out[key] = (model, folder)
    return out


def _inputs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("key", list(MODELS))
def test_onnxruntime_equals_pytorch(exports, key: str) -> None:
    model, folder = exports[key]
    runner = OnnxModel(folder)
    config = json.loads((folder / "config.json").read_text())
    sizes = {"query": EXPORT_SIZE[key], "database": EXPORT_SIZE[key]}
    if key == "cvft_vgg":  # fixed sizes, one per side, recorded in the export
        sizes = {"query": (32, 160), "database": (64, 64)}
        for side in sizes:
            assert config["graphs"][side]["image_size"] == list(sizes[side])
            assert not config["graphs"][side]["dynamic_image_size"] and config["graphs"][side]["fixed_size_reason"]
    else:
        assert all(config["graphs"][s]["dynamic_image_size"] for s in ("query", "database"))
    extra_sizes = [(84, 98)] if key == "dinov2_salad" else []  # another multiple of 14, non-square
    for side in ("query", "database"):
        for i, (batch, size) in enumerate([(2, sizes[side]), (3, sizes[side])] + [(2, s) for s in extra_sizes]):
            x = _inputs((batch, 3, *size), seed=i)
            with torch.no_grad():
                expected = getattr(model, f"encode_{side}")(x)
            got = getattr(runner, f"encode_{side}")(x)
            assert got.shape == expected.shape == (batch, config["descriptor_dim"])
            assert (got - expected).abs().max().item() < 1e-4, (side, batch, size)
        # The comparison has teeth: the descriptors of the batch differ from each other.
        assert (expected[0] - expected[1]).abs().max().item() > 1e-3


def test_graph_files_config_and_card(exports) -> None:
    for key, (_, folder) in exports.items():
        config = json.loads((folder / "config.json").read_text())
        assert config["format"] == "onnx" and config["opset"] == 18 and config["architecture"] == key
        two_graphs = key == "cvft_vgg"  # ground and aerial branches; the others share one encoder
        assert config["shared_graph"] is not two_graphs
        expected = {"query.onnx", "database.onnx"} if two_graphs else {"model.onnx"}
        assert {p.name for p in folder.glob("*.onnx") if ".int8." not in p.name} == expected
        assert config["graphs"]["query"]["check"]["max_abs_diff_vs_pytorch"] < 1e-4
        assert "## ONNX" in (folder / "README.md").read_text()
    steps = json.loads((exports["dinov2_salad"][1] / "config.json").read_text())["preprocessing_steps"]["query"]["steps"]
    assert [s["op"] for s in steps] == ["resize", "to_tensor", "normalize"] and steps[0]["size"] == [322, 322]
    assert steps[2]["mean"] == [0.485, 0.456, 0.406]
    cvft = json.loads((exports["cvft_vgg"][1] / "config.json").read_text())["preprocessing_steps"]
    assert "CaffeBGRTransform" in cvft["query"]["steps"][0]["repr"]


def test_int8_graph_is_quantized_and_close(salad_export) -> None:
    import onnx

    _, folder = salad_export
    config = json.loads((folder / "config.json").read_text())
    assert config["graphs"]["query"]["int8"]["file"] == "model.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    fp32, int8 = OnnxModel(folder), OnnxModel(folder, quantized=True)
    x = _inputs((3, 3, 56, 70), seed=5)
    a, b = fp32.encode_query(x), int8.encode_database(x)
    assert torch.nn.functional.cosine_similarity(a, b).min().item() > 0.99
    assert not torch.equal(a, b)  # the int8 graph really ran
    assert fp32.state_dict()["graph_sha256"].tolist() != int8.state_dict()["graph_sha256"].tolist()


def test_salad_transport_plan_follows_the_patch_count(tmp_path: Path) -> None:
    """The Sinkhorn marginals depend on the number of patches: exported at one count, the plan must
    still be right at another (a frozen count moves every entry by a factor (n + m) / (n' + m))."""
    import onnxruntime as ort

    aggregator = _build("dinov2_salad").aggregator.eval()

    class Plan(torch.nn.Module):
        def forward(self, scores: torch.Tensor) -> torch.Tensor:
            return aggregator.assignment(scores)

    patches = torch.export.Dim("patches", min=17, max=4096)
    program = torch.onnx.export(Plan(), (_inputs((2, 16, 20), 0),), dynamo=True, verbose=False,
                                input_names=["scores"], dynamic_shapes=({2: patches},))
    program.save(str(tmp_path / "plan.onnx"))
    session = ort.InferenceSession(str(tmp_path / "plan.onnx"), providers=["CPUExecutionProvider"])
    for n in (20, 57):
        scores = _inputs((2, 16, n), n)
        got = torch.from_numpy(session.run(None, {"scores": scores.numpy()})[0])
        assert (got - aggregator.assignment(scores)).abs().max().item() < 1e-5, n


def test_evaluation_engine_runs_the_export(tmp_path: Path) -> None:
    """The tiny engine table through --backend onnxruntime: same metrics, same descriptors as torch."""
    import tests.fixtures.tiny_eval_plugin  # noqa: F401 - registers tiny_eval_cnn and tiny_eval
    from tests.engine.test_evaluate import TABLE
    from tests.fixtures.eval_data import make_tiny_eval
    from zoo.engine.evaluate import evaluate_table

    make_tiny_eval(tmp_path / "data" / "tiny", n_database=12, n_queries=6)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny.yaml").write_text(TABLE)
    torch.manual_seed(0)  # the engine seeds random rows the same way
    export_onnx(zoo.create_model("tiny_eval_cnn.d8", pretrained=False), tmp_path / "onnx", log=lambda _: None)
    common = dict(tables_dir=tmp_path / "tables", num_workers=0, batch_size=4, device="cpu", progress=False,
                  write=False, precision="fp32")
    ours = evaluate_table("tiny", tmp_path / "data", out_dir=tmp_path / "ort", backend="onnxruntime",
                          onnx=tmp_path / "onnx", **common)
    reference = evaluate_table("tiny", tmp_path / "data", out_dir=tmp_path / "torch", **common)
    for a, b in zip(ours.rows, reference.rows):
        assert a.metrics == b.metrics
        assert "onnxruntime" in a.weights
    # Query and database sides are different graphs here (the query side mirrors the image).
    assert {p.name for p in (tmp_path / "onnx").glob("*.onnx")} == {"query.onnx", "database.onnx"}
    q_ort = OnnxModel(tmp_path / "onnx").encode_query(torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(0)
    q_torch = zoo.create_model("tiny_eval_cnn.d8", pretrained=False).encode_query(
        torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1)))
    assert (q_ort - q_torch).abs().max().item() < 1e-5


def test_bad_input_is_named(exports, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere: no config.json"):
        OnnxModel(tmp_path / "nowhere")
    cvft = OnnxModel(exports["cvft_vgg"][1])
    with pytest.raises(InputError, match=r"takes 32x160 images only, got 64x64"):
        cvft.encode_query(torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputError, match="no int8 graph"):
        OnnxModel(exports["cvft_vgg"][1], quantized=True)
    salad = OnnxModel(exports["dinov2_salad"][1])
    with pytest.raises(InputError, match="multiples of 14, got 56x60"):
        salad.encode_query(torch.zeros(1, 3, 56, 60))
    with pytest.raises(InputError, match="holds dinov2_salad, but the row evaluates dycl_resnet"):
        load_onnx_model(exports["dinov2_salad"][1], "dycl_resnet")
    with pytest.raises(InputError, match="exported from variant '512_32'"):
        load_onnx_model(exports["dinov2_salad"][1], "dinov2_salad.8192_256")
    assert load_onnx_model(exports["dinov2_salad"][1], "dinov2_salad",
                           {"num_clusters": 16, "cluster_dim": 32, "token_dim": 32, "depth": 2})
    with pytest.raises(InputError, match="--backend onnxruntime needs --onnx"):
        check_backend("onnxruntime", None)
    with pytest.raises(InputError, match="--backend: expected one of"):
        check_backend("tensorrt", "x")
    model = _build("ucdir_moco")
    with pytest.raises(InputError, match="--quantize: expected int8"):
        export_onnx(model, tmp_path / "x", quantize="int4")
    with pytest.raises(InputError, match="no zoo_config"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x")


def test_cli_refuses_onnx_options_for_safetensors(tmp_path: Path, capsys) -> None:
    from zoo.__main__ import main

    assert main(["export", "ucdir_moco", "--pretrained", "false", "--quantize", "int8", "--out", str(tmp_path / "o")]) == 2
    assert "apply to --format onnx only" in capsys.readouterr().err
