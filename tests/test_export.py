"""ONNX export (segformer_edu.export): onnxruntime gives PyTorch's logits at sizes the trace never saw; the CLI."""

import math
import shutil

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


def test_cli_int8(exported, tmp_path, monkeypatch, capsys):
    """The CLI loads a Hugging Face folder, exports, quantizes to --out. The export itself is the fixture's
    (tested above; a second trace would double this file's time): the stand-in checks it gets the same weights."""
    model, fp32_path, _ = exported
    save_pretrained(model, tmp_path / "hf")

    def same_export(loaded, path, *args):
        for (name, ours), theirs in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(ours, theirs), name
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
