"""Checkpoints: same logits as transformers both ways, the mmseg layout, and clear errors for bad input.

transformers builds its models from a config with random weights; nothing is downloaded.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from segformer_edu import SegFormer, checkpoint
from segformer_edu.checkpoint import save_pretrained
from segformer_edu.convert import from_edu, to_edu

transformers = pytest.importorskip("transformers")

B2 = dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768)
HEIGHT, WIDTH = 97, 130  # not multiples of 32 (nor of 4): exercises the ceil rounding in every stage


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every tensor, norms and BatchNorm statistics included, so that no weight can be silently ignored."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.dim() == 1:  # biases, norm scales and shifts, running means
                tensor.add_(0.1 * torch.randn_like(tensor))
    return model


def hf_segmentation(num_labels=11, **config):
    hf_config = transformers.SegformerConfig(num_labels=num_labels, **config)
    return randomize(transformers.SegformerForSemanticSegmentation(hf_config)).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fuse_first", [False, True], ids=["paper order", "fuse first"])
@pytest.mark.parametrize("config", [{}, B2], ids=["b0", "b2"])
def test_hf_checkpoint_gives_the_same_logits(config, fuse_first, images, tmp_path):
    hf = hf_segmentation(**config)
    hf.save_pretrained(tmp_path)
    ours = SegFormer.from_pretrained(tmp_path).eval()
    ours.decoder.fuse_first = fuse_first
    assert ours.config.variant_name() == ("b2" if config else "b0")
    assert ours.config.num_classes == 11
    with torch.no_grad():
        expected = hf(pixel_values=images).logits
        logits = ours(images)
    assert logits.shape == (2, 11, math.ceil(HEIGHT / 4), math.ceil(WIDTH / 4)) == expected.shape
    assert (logits - expected).abs().max().item() < 1e-4


def test_encoder_only_checkpoint(images, tmp_path):
    """Like nvidia/mit-b0: a SegformerModel without decode head."""
    hf = randomize(transformers.SegformerModel(transformers.SegformerConfig())).eval()
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="only an encoder.*num_classes"):
        SegFormer.from_pretrained(tmp_path)
    ours = SegFormer.from_pretrained(tmp_path, num_classes=11).eval()
    assert ours.decoder.classifier.out_channels == 11
    with torch.no_grad():
        hidden_states = hf(pixel_values=images, output_hidden_states=True).hidden_states
        features = ours.encoder(images)
    assert len(features) == len(hidden_states) == 4
    for feature, hidden in zip(features, hidden_states):
        hidden = hidden if hidden.dim() == 4 else hidden.transpose(1, 2).reshape(feature.shape)
        assert feature.shape == hidden.shape
        assert (feature - hidden).abs().max().item() < 1e-4


def test_our_export_loads_in_transformers(images, tmp_path):
    torch.manual_seed(0)
    ours = randomize(SegFormer.from_config("b0", num_classes=5)).eval()
    save_pretrained(ours, tmp_path)
    hf = transformers.SegformerForSemanticSegmentation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (hf(pixel_values=images).logits - ours(images)).abs().max().item() < 1e-4


def test_mmseg_layout_round_trip():
    state = SegFormer.from_config("b0", num_classes=5).state_dict()
    mmseg = from_edu(state, "mmseg")
    assert "backbone.block1.0.attn.kv.weight" in mmseg
    assert "backbone.patch_embed1.proj.weight" in mmseg
    assert "decode_head.linear_fuse.conv.weight" in mmseg
    assert "decode_head.linear_fuse.bn.running_var" in mmseg
    assert "decode_head.linear_c4.proj.weight" in mmseg
    assert "decode_head.linear_pred.weight" in mmseg
    back, unknown = to_edu(mmseg)
    assert unknown == []
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_hf_layout_round_trip_splits_and_merges_kv():
    state = SegFormer.from_config("b0", num_classes=5).state_dict()
    hf = from_edu(state, "hf")
    key = hf["segformer.encoder.block.0.0.attention.self.key.weight"]
    value = hf["segformer.encoder.block.0.0.attention.self.value.weight"]
    assert torch.equal(torch.cat([key, value]), state["encoder.stages.0.blocks.0.attn.kv.weight"])
    back, unknown = to_edu(hf)
    assert unknown == [] and back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_official_mmseg_file_with_variant_inferred(images, tmp_path):
    torch.manual_seed(0)
    ours = randomize(SegFormer.from_config("b0", num_classes=19)).eval()
    state = from_edu(ours.state_dict(), "mmseg")
    state["decode_head.conv_seg.weight"] = torch.randn(19, 256, 1, 1)  # mmseg's unused default head
    state["head.weight"] = torch.randn(1000, 256)  # an ImageNet classifier left in the file
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "segformer.b0.pth")
    loaded = SegFormer.from_pretrained(tmp_path / "segformer.b0.pth").eval()
    assert loaded.config.variant_name() == "b0" and loaded.config.num_classes == 19
    with torch.no_grad():
        assert torch.equal(loaded(images), ours(images))


# --- bad checkpoints -------------------------------------------------------------------------------


@pytest.fixture
def saved_b0(tmp_path):
    save_pretrained(SegFormer.from_config("b0", num_classes=5), tmp_path)
    return tmp_path


def edit_weights(folder, edit):
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


def drop(key):
    return lambda state: state.pop(key)


def put(key, value):
    return lambda state: state.update({key: value})


@pytest.mark.parametrize("edit, message", [
    (drop("segformer.encoder.block.1.0.mlp.dense1.weight"),
     r"missing keys.*encoder\.stages\.1\.blocks\.0\.ffn\.fc1\.weight"),
    (put("segformer.encoder.mystery.weight", torch.zeros(3)), r"segformer\.encoder\.mystery\.weight"),
    # a block this variant does not have converts fine but does not fit the model
    (put("segformer.encoder.block.0.7.layer_norm_1.weight", torch.ones(32)),
     r"unexpected keys.*encoder\.stages\.0\.blocks\.7\.norm1\.weight"),
    (put("segformer.encoder.layer_norm.2.weight", torch.ones(7)),
     r"shape mismatch.*encoder\.stages\.2\.norm\.weight.*\(7,\).*\(160,\)"),
], ids=["missing", "extra", "extra_block", "wrong_shape"])
def test_checkpoint_that_does_not_fit_names_the_keys(saved_b0, edit, message):
    edit_weights(saved_b0, edit)
    with pytest.raises(ValueError, match=message):
        SegFormer.from_pretrained(saved_b0)


def test_missing_path_is_a_clear_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*config.json"):
        SegFormer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="none of"):
        SegFormer.from_pretrained(tmp_path)  # a folder without weights


def test_hub_id_offline_is_a_clear_os_error(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(checkpoint, "_cached", lambda hub_id: None)  # whatever this machine's cache holds
    monkeypatch.setattr(checkpoint, "hub_reachable", lambda: True)  # the host answers, the download fails
    with pytest.raises(OSError, match=r"could not download 'nvidia/mit-b0'.*network.*local folder"):
        SegFormer.from_pretrained("nvidia/mit-b0", num_classes=11)


def test_an_unreachable_hub_fails_at_once_without_retries(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: pytest.fail("retried"))
    monkeypatch.setattr(checkpoint, "_cached", lambda hub_id: None)
    monkeypatch.setattr(checkpoint, "hub_reachable", lambda: False)
    with pytest.raises(OSError, match=r"could not download 'nvidia/mit-b0': the Hugging Face hub cannot be "
                                      r"reached \(no network\?\)"):
        SegFormer.from_pretrained("nvidia/mit-b0", num_classes=11)


def test_hub_id_downloads_through_huggingface_hub(monkeypatch, images, tmp_path):
    """The real hub code path, with hf_hub_download answering from a local folder."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    hf = hf_segmentation()
    hf.save_pretrained(tmp_path)
    requested = []

    def from_folder(repo_id, filename, **kwargs):
        requested.append((repo_id, filename))
        if not (tmp_path / filename).exists():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", from_folder)
    monkeypatch.setattr(checkpoint, "_cached", lambda hub_id: None)
    monkeypatch.setattr(checkpoint, "hub_reachable", lambda: True)
    ours = SegFormer.from_pretrained("nvidia/segformer-b0-finetuned-ade-512-512").eval()
    assert ("nvidia/segformer-b0-finetuned-ade-512-512", "config.json") in requested
    with torch.no_grad():
        assert (ours(images) - hf(pixel_values=images).logits).abs().max().item() < 1e-4


def test_new_num_classes_keeps_everything_but_the_classifier(saved_b0):
    original = SegFormer.from_pretrained(saved_b0)
    finetune = SegFormer.from_pretrained(saved_b0, num_classes=3)
    assert finetune.decoder.classifier.out_channels == 3
    kept = {k: v for k, v in original.state_dict().items() if not k.startswith("decoder.classifier.")}
    assert all(torch.equal(finetune.state_dict()[k], v) for k, v in kept.items())


def test_missing_classifier_is_an_error_unless_a_new_one_is_asked_for(saved_b0):
    edit_weights(saved_b0, lambda s: s.pop("decode_head.classifier.weight"))
    with pytest.raises(ValueError, match=r"missing keys.*decoder\.classifier\.weight"):
        SegFormer.from_pretrained(saved_b0)
    assert SegFormer.from_pretrained(saved_b0, num_classes=4).decoder.classifier.out_channels == 4


@pytest.mark.parametrize("field, value", [("hidden_act", "relu"), ("hidden_act", "gelu_new"),
                                          ("num_encoder_blocks", 3)])
def test_hf_config_the_package_cannot_reproduce_is_refused_by_name(tmp_path, field, value):
    hf_segmentation(**{field: value} if field == "hidden_act" else {}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        SegFormer.from_pretrained(tmp_path)


def test_smallest_input_gives_the_same_logits_as_transformers(tmp_path):
    hf = hf_segmentation()
    hf.save_pretrained(tmp_path)
    ours = SegFormer.from_pretrained(tmp_path).eval()
    side = ours.config.min_side  # 29: stage 1 has exactly sr = 8 rows
    images = torch.randn(1, 3, side, side + 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(images) - hf(pixel_values=images).logits).abs().max().item() < 1e-4


# --- the API as transformers users meet it -----------------------------------------------------------

def test_from_pretrained_returns_eval_mode_and_save_pretrained_round_trips(tmp_path, images):
    torch.manual_seed(0)
    model = randomize(SegFormer.from_config("b0", num_classes=3))
    model.save_pretrained(tmp_path / "saved", class_names=["road", "car", "sky"])
    loaded = SegFormer.from_pretrained(tmp_path / "saved")
    assert not loaded.training  # as transformers: repeated calls give the same logits
    with torch.no_grad():
        assert torch.equal(loaded(images), loaded(images))
        assert torch.equal(loaded(images), model.eval()(images))
    assert loaded.class_names == ["road", "car", "sky"]
    loaded.save_pretrained(tmp_path / "again")  # the names travel with the model
    assert json.loads((tmp_path / "again" / "config.json").read_text())["id2label"]["2"] == "sky"
    hf = transformers.SegformerForSemanticSegmentation.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert (hf(pixel_values=images).logits - loaded(images)).abs().max().item() < 1e-4


def test_from_pretrained_takes_a_training_run_folder_and_its_checkpoint(tmp_path, images):
    torch.manual_seed(0)
    trained = randomize(SegFormer.from_config("b0", num_classes=4)).eval()
    run = tmp_path / "run"
    run.mkdir()
    state = {"model": trained.state_dict(), "config": {"dataset": "folder", "val_scale": None},
             "classes": ["a", "b", "c", "d"], "palette": [[1, 2, 3]] * 4}
    torch.save(state, run / "best.pt")
    for source in (run, run / "best.pt"):
        loaded = SegFormer.from_pretrained(source)
        assert not loaded.training and loaded.class_names == ["a", "b", "c", "d"]
        with torch.no_grad():
            assert torch.equal(loaded(images), trained(images))
    torch.save(state, run / "latest.pt")
    (run / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"training run without best\.pt .*latest\.pt"):
        SegFormer.from_pretrained(run)


def test_a_new_classifier_is_said_once_naming_the_new_weights(saved_b0, caplog):
    with caplog.at_level("WARNING", logger="segformer_edu.checkpoint"):
        SegFormer.from_pretrained(saved_b0, num_classes=3)
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1
    assert "newly initialised" in said[0] and "decoder.classifier.weight, decoder.classifier.bias" in said[0]
    assert "it has 5 classes; this model has 3 classes" in said[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="segformer_edu.checkpoint"):
        SegFormer.from_pretrained(saved_b0)  # the checkpoint's own classes: nothing new, nothing said
    assert caplog.records == []


def test_a_mistyped_path_is_not_a_hub_id(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: pytest.fail("hub asked"))
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for typo in ("runs/mnie", "./runs/mine2", "weights/b0.pth"):
        with pytest.raises(FileNotFoundError, match="no checkpoint at"):
            SegFormer.from_pretrained(typo)


def run_cli(*args):
    import subprocess
    import sys
    from pathlib import Path

    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, *args], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "model.onnx").write_bytes(b"\x08\x0a\x12\x07pytorch")  # an ONNX header
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.jpg")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole_module.pt")  # a pickled module, not weights
    expected = {"model.onnx": "is an ONNX file, not a model checkpoint: run it with "
                              "segformer_edu.export.OnnxRuntimeModel(path)",
                "photo.jpg": "is an image (JPEG), not a model checkpoint: pass a training run's folder",
                "whole_module.pt": "holds pickled Python objects (torch.nn.modules.linear.Linear), which are "
                                   "not loaded since unpickling can run any code"}
    for name, message in expected.items():
        with pytest.raises(ValueError, match=r"^.*" + message.replace("(", r"\(").replace(")", r"\)")) as raised:
            SegFormer.from_pretrained(tmp_path / name)
        assert "weights_only" not in str(raised.value)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photos / "a.png")
    for command in (["-m", "segformer_edu.predict", "--images", str(photos), "--out", str(tmp_path / "out")],
                    ["-m", "segformer_edu.export", "--out", str(tmp_path / "m.onnx")]):
        for name in ("model.onnx", "photo.jpg"):
            done = run_cli(*command, "--model", str(tmp_path / name))
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert done.stderr.startswith(f"error: {tmp_path / name} {expected[name]}"), done.stderr
            assert len(done.stderr.splitlines()) == 1 and "weights_only" not in done.stderr


def test_save_pretrained_onto_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "model").write_text("my notes")
    model = SegFormer.from_config("b0", num_classes=3)
    for target in (tmp_path / "model", tmp_path / "model" / "inside"):
        with pytest.raises(FileExistsError, match=rf"^cannot save to {target}: {tmp_path / 'model'} is a file, and "
                                                  r"save_pretrained writes a folder \(config.json and "
                                                  r"model.safetensors\); pass a folder path$"):
            model.save_pretrained(target)
    assert (tmp_path / "model").read_text() == "my notes"
