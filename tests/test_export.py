"""ONNX export (segformer_edu.export): onnxruntime gives PyTorch's logits at sizes the trace never saw; the CLI."""

import logging
import math
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from segformer_edu import SegFormer  # noqa: E402
from segformer_edu import export  # noqa: E402
from segformer_edu.checkpoint import save_pretrained  # noqa: E402

# float32 in both runtimes, different kernels (and op fusions): measured max |difference| 3.4e-6 on logits up to
# 2.4 in magnitude at the sizes below; 1e-4 leaves room for other CPUs' kernels
ATOL = 1e-4


def session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """B0 with random weights and 4 classes, exported once, traced at 64x64: (model, path, session)."""
    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=4).eval()
    path = export.to_onnx(model, tmp_path_factory.mktemp("onnx") / "b0.onnx")
    return model, path, session(path)


# 64x64: the traced size; the rest never seen. 29x45: the smallest side (stage 1's reduced map is 1x1,
# stage 4 is 1x2), odd; 97x130: odd and not a multiple of 32; batch 2
@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 97, 130), (1, 29, 45), (2, 97, 130)])
def test_onnxruntime_matches_pytorch(exported, shape):
    model, _, runtime = exported
    batch, height, width = shape
    images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
    with torch.no_grad():
        expected = model(images).numpy()
    (logits,) = runtime.run(None, {"images": images.numpy()})
    assert logits.shape == (batch, 4, math.ceil(height / 4), math.ceil(width / 4)) == expected.shape
    np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)


def test_axes_are_named_and_min_side_is_not_checked(exported):
    _, path, runtime = exported
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    with pytest.raises(Exception, match="Invalid input shape"):  # below min_side: fails inside the reduction conv
        runtime.run(None, {"images": np.zeros((1, 3, 28, 40), np.float32)})


def test_the_file_says_how_to_feed_it_and_the_wrapper_checks_it(exported):
    """The graph cannot check the smallest side or the normalisation: the file's metadata records them, and
    OnnxRuntimeModel refuses what PyTorch refuses, with PyTorch's message."""
    _, path, _ = exported
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["segformer.min_side"] == "29" and metadata["segformer.mean"] == "[0.485, 0.456, 0.406]"
    assert metadata["segformer.std"] == "[0.229, 0.224, 0.225]" and "bilinear" in metadata["segformer.output"]
    wrapped = export.OnnxRuntimeModel(path, threads=1)
    with pytest.raises(ValueError, match="at least 29x29 pixels"):
        wrapped(torch.zeros(1, 3, 28, 40))
    with pytest.raises(ValueError, match="channels-last input"):
        wrapped(torch.zeros(1, 64, 64, 3))


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_cli_refuses_missing_checkpoint(tmp_path, capsys):
    assert export.main(["--model", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "missing.pth" in one_line_error(capsys)


def test_cli_refuses_unwritable_path(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where the folder should be: unwritable even for root, unlike chmod
    assert export.main(["--model", str(tmp_path / "unused"), "--out", str(blocker / "m.onnx")]) == 1
    assert "cannot write" in one_line_error(capsys)


def test_cli_refuses_a_folder_as_out_and_a_mistyped_flag(tmp_path, capsys):
    assert export.main(["--model", str(tmp_path / "unused"), "--out", str(tmp_path)]) == 1
    assert f"--out {tmp_path} is a folder: pass a file name" in one_line_error(capsys)
    with pytest.raises(SystemExit) as usage:
        export.main(["--model", "m", "--out", "m.onnx", "--int-8"])
    assert usage.value.code == 2
    assert "did you mean --int8?" in capsys.readouterr().err


def run_cli(*args):
    import subprocess
    import sys
    from pathlib import Path

    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "segformer_edu.export", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])


def test_an_opset_is_honoured_or_refused_in_one_line_before_any_work(exported, tmp_path):
    model, _, _ = exported
    save_pretrained(model, tmp_path / "hf")
    done = run_cli("--model", str(tmp_path / "hf"), "--out", str(tmp_path / "m.onnx"), "--opset", "5")
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.startswith("error: --opset 5: pass 17 to ")
    assert len(done.stderr.splitlines()) == 1 and not (tmp_path / "m.onnx").exists()
    with pytest.raises(ValueError, match="--opset 99: pass 17 to"):
        export.to_onnx(model, tmp_path / "m.onnx", opset=99)
    path = export.to_onnx(model, tmp_path / "m17.onnx", opset=17)  # converted down from the exporter's 18
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [17]
    images = torch.randn(1, 3, 64, 96)
    (logits,) = session(path).run(None, {"images": images.numpy()})
    with torch.no_grad():
        assert np.abs(logits - model(images).numpy()).max() < ATOL


def test_an_opset_the_converter_cannot_reach_is_one_line_never_wrote(exported, tmp_path):
    """Opset 26 is within what onnx 1.23 knows; torch 2.13's exporter cannot write SegFormer in it (it kept 18).
    Whichever it does here: the file has the opset asked for, or one line and no file."""
    model, _, _ = exported
    save_pretrained(model, tmp_path / "hf")
    out = tmp_path / "m.onnx"
    done = run_cli("--model", str(tmp_path / "hf"), "--out", str(out), "--opset", "26")
    if done.returncode == 0:
        assert [o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")] == [26]
    else:
        assert done.returncode == 1 and done.stdout == "" and not out.exists(), done.stdout + done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: the ") and \
            "opset 26" in done.stderr, done.stderr


def test_cli_export_onto_a_read_only_disk_is_one_line(exported, tmp_path, monkeypatch, capsys):
    import errno
    from pathlib import Path

    model, _, _ = exported
    save_pretrained(model, tmp_path / "hf")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(export, "open", read_only, raising=False)  # check_writable's trial write
    monkeypatch.setattr(Path, "unlink", read_only)  # even unlinking a file that is not there fails
    out = tmp_path / "m.onnx"
    assert export.main(["--model", str(tmp_path / "hf"), "--out", str(out)]) == 1
    assert one_line_error(capsys) == f"error: cannot write {out}: Read-only file system"


def test_cli_int8(exported, tmp_path, monkeypatch, capsys):
    """The CLI loads a Hugging Face folder, exports, quantizes to --out. The export itself is the fixture's
    (tested above; a second trace would double this file's time): the stand-in checks it gets the same weights."""
    model, fp32_path, _ = exported
    save_pretrained(model, tmp_path / "hf")

    def same_export(loaded, path, *args, class_names=None):
        for (name, ours), theirs in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(ours, theirs), name
        assert class_names == [f"class_{k}" for k in range(4)]  # the folder's id2label, for the file's metadata
        return shutil.copyfile(fp32_path, path)

    monkeypatch.setattr(export, "to_onnx", same_export)
    out = tmp_path / "out" / "b0.int8.onnx"
    assert export.main(["--model", str(tmp_path / "hf"), "--out", str(out), "--int8"]) == 0
    assert "wrote" in capsys.readouterr().out and sorted(p.name for p in out.parent.iterdir()) == ["b0.int8.onnx"]
    assert out.stat().st_size < 0.35 * fp32_path.stat().st_size  # int8 weights: measured 0.29x

    images = torch.randn(2, 3, 97, 130, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images).argmax(1).numpy()
    (logits,) = session(out).run(None, {"images": images.numpy()})
    agreement = (logits.argmax(1) == expected).mean()
    assert agreement > 0.9  # measured 0.978 of the 1/4-resolution pixels (random weights, 4 classes)


# B1: the same depths as B0 but every stage twice as wide (64..512 channels) and a 256-channel decoder, so other
# weight shapes and head widths go through the trace; odd sizes it never saw, batch 2
@pytest.mark.parametrize("shape", [(1, 61, 93), (2, 130, 97)])
def test_second_variant_round_trip(b1_exported, shape):
    model, runtime = b1_exported
    batch, height, width = shape
    images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(width))
    with torch.no_grad():
        expected = model(images)
    logits = runtime(images)
    assert logits.shape == expected.shape == (batch, 7, math.ceil(height / 4), math.ceil(width / 4))
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def b1_exported(tmp_path_factory):
    torch.manual_seed(1)
    model = SegFormer.from_config("b1", num_classes=7).eval()
    path = export.to_onnx(model, tmp_path_factory.mktemp("onnx_b1") / "b1.onnx")
    return model, export.OnnxRuntimeModel(path, threads=1)


def test_onnxruntime_model_runs_the_test_time_protocols(exported):
    """The wrapper is called like the PyTorch model, so sliding windows and multi-scale + flip run through it."""
    from segformer_edu.inference import segment_scores

    model, path, _ = exported
    wrapped = export.OnnxRuntimeModel(path, threads=1)
    images = torch.randn(1, 3, 70, 101, generator=torch.Generator().manual_seed(2))
    for protocol in ({"mode": "slide", "crop_size": (48, 64), "stride": (32, 40)},
                     {"scales": (0.75, 1.25), "flip": True}):
        with torch.no_grad():
            expected = segment_scores(model, images, **protocol)
        np.testing.assert_allclose(segment_scores(wrapped, images, **protocol).numpy(), expected.numpy(), atol=ATOL)


def test_static_int8_is_calibrated_and_close(exported, tmp_path):
    """Static quantization: int8 operands for every Conv and MatMul, float LayerNorm weights; logits stay close."""
    model, path, _ = exported
    generator = torch.Generator().manual_seed(3)
    calibration = [torch.randn(1, 3, 64, 64, generator=generator).numpy() for _ in range(4)]
    out = export.quantize_int8(path, tmp_path / "static.onnx", calibration=calibration)
    graph = onnx.load(str(out)).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    weights = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Conv", "MatMul"):  # both operands come through int8 (weights and activations)
            assert set(node.input[:2]) <= dequantized, node.name
        if node.op_type == "LayerNormalization":  # its scale and shift stay float32 weights
            assert all(weights[name].data_type == onnx.TensorProto.FLOAT for name in node.input[1:]), node.name
    images = torch.randn(1, 3, 97, 130, generator=generator)
    with torch.no_grad():
        expected = model(images)
    logits = export.OnnxRuntimeModel(out, threads=1)(images)
    error = (logits - expected).abs().mean() / expected.abs().mean()
    assert error < 0.1, error  # int8 noise, not a broken graph (which would be ~1)
    assert (logits.argmax(1) == expected.argmax(1)).float().mean() > 0.8


def test_dynamic_int8_of_chosen_ops_keeps_the_others_float(exported, tmp_path):
    """op_types=["MatMul"]: the matrix products become integer ones, every convolution stays a float32 Conv."""
    _, path, _ = exported
    everything = Counter(n.op_type for n in onnx.load(str(export.quantize_int8(path, tmp_path / "all.onnx"))).graph.node)
    matmul_only = export.quantize_int8(path, tmp_path / "matmul.onnx", op_types=["MatMul"])
    ops = Counter(node.op_type for node in onnx.load(str(matmul_only)).graph.node)
    assert everything["ConvInteger"] == 20 and everything["MatMulInteger"] == ops["MatMulInteger"] > 0
    assert ops["ConvInteger"] == 0 and ops["Conv"] == 20  # B0: 4 patch embeddings, 6 reductions, 8 depth-wise, 2 head


def test_cli_static_int8_calibrates_on_a_folder(exported, tmp_path, monkeypatch, capsys):
    """--calibration IMAGES: the static int8 file (QDQ pairs), calibrated on the folder's images; bad folders are
    one line before any export."""
    from PIL import Image

    model, fp32_path, _ = exported
    save_pretrained(model, tmp_path / "hf")
    monkeypatch.setattr(export, "to_onnx", lambda loaded, path, *args, **kwargs: shutil.copyfile(fp32_path, path))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(images / f"{k}.png")
    out = tmp_path / "b0.static.onnx"
    argv = ["--model", str(tmp_path / "hf"), "--out", str(out), "--calibration", str(images)]
    assert export.main(argv) == 0
    assert "static int8, calibrated on 3 images" in capsys.readouterr().out
    ops = Counter(node.op_type for node in onnx.load(str(out)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # weights: DQ only

    written = out.read_bytes()
    assert export.main(argv) == 1  # a second export to the same file: refused, the file kept
    assert f"{out} exists: pass another --out, or --overwrite" in one_line_error(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export.main(argv[:-1] + [str(empty), "--overwrite"]) == 1
    assert "no images" in one_line_error(capsys)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(empty / "tiny.png")
    assert export.main(argv[:-1] + [str(empty), "--overwrite"]) == 1
    assert "29" in one_line_error(capsys)  # the smallest side, named
    assert out.read_bytes() == written  # failed exports leave the earlier file as it was


def test_the_exporters_logger_is_left_as_it_was(exported):
    """to_onnx quiets the exporter's registration notes while it exports, and gives the logger its level back."""
    assert logging.getLogger("torch.onnx._internal.exporter._registration").level == logging.NOTSET
