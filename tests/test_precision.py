"""The autocast precision a run picks (segformer_edu.system.choose_precision): on simulated CPUs and GPUs,
what each does natively, and a precision a device only emulates refused in one line."""

import pytest
import torch

from segformer_edu import system

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)
# (name, compute capability): Colab's and the common data-centre GPUs
GPUS = {"Tesla T4": (7, 5), "Tesla V100-SXM2-16GB": (7, 0), "NVIDIA A100-SXM4-40GB": (8, 0),
        "NVIDIA L4": (8, 9), "NVIDIA H100 80GB HBM3": (9, 0)}


def cpu_with(monkeypatch, flags: str):
    info = f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 {flags}\n"
    monkeypatch.setattr(system, "cpu_info", lambda: info)


def gpu(monkeypatch, name: str):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: GPUS[name])
    # torch >= 2.3 counts emulation here: True on a T4, which must not decide
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.parametrize("flags, expected", [
    ("avx512f avx512_bf16", torch.bfloat16),          # AMD EPYC (Zen 4): 1.5-1.75x faster in bf16
    ("avx512f avx512_bf16 amx_bf16 amx_tile", torch.bfloat16),  # Intel Xeon with AMX
    ("avx512f avx512bw", None),                        # AVX-512 without BF16: emulated, fp32
    ("", None),
])
def test_cpu_auto_is_bf16_where_the_processor_has_it(monkeypatch, flags, expected):
    cpu_with(monkeypatch, flags)
    precision = system.choose_precision(CPU, "auto")
    assert precision.dtype == expected
    assert precision.reason.startswith("auto: this CPU")
    assert ("natively" in precision.reason) == (expected is not None)


def test_cpu_explicit_choices(monkeypatch):
    cpu_with(monkeypatch, "")
    assert system.choose_precision(CPU, "bf16").dtype == torch.bfloat16
    assert system.choose_precision(CPU, "fp32").dtype is None
    with pytest.raises(ValueError, match="--amp fp16 needs a GPU"):
        system.choose_precision(CPU, "fp16")
    with pytest.raises(ValueError, match="--amp must be one of auto, bf16, fp16, fp32, not 'half'"):
        system.choose_precision(CPU, "half")


@pytest.mark.parametrize("name", GPUS)
def test_gpu_auto_is_bf16_only_on_bf16_tensor_cores_else_fp16(monkeypatch, name):
    gpu(monkeypatch, name)
    native = GPUS[name] >= (8, 0)
    precision = system.choose_precision(GPU, "auto")
    assert precision.dtype == (torch.bfloat16 if native else torch.float16)
    assert name in precision.reason and ("gradient scaler" in precision.reason) != native
    assert system.choose_precision(GPU, "fp16").dtype == torch.float16
    assert system.choose_precision(GPU, "fp32").dtype is None


@pytest.mark.parametrize("name", ["Tesla T4", "Tesla V100-SXM2-16GB"])
def test_gpu_bf16_where_only_emulated_is_one_line_that_says_fp16(monkeypatch, name):
    gpu(monkeypatch, name)
    with pytest.raises(ValueError) as error:
        system.choose_precision(GPU, "bf16")
    message = str(error.value)
    assert "\n" not in message and name in message and "pass --amp fp16" in message


@pytest.mark.parametrize("name", ["NVIDIA A100-SXM4-40GB", "NVIDIA L4", "NVIDIA H100 80GB HBM3"])
def test_gpu_bf16_where_native(monkeypatch, name):
    gpu(monkeypatch, name)
    assert system.choose_precision(GPU, "bf16").dtype == torch.bfloat16


def test_this_machine_is_named():
    assert system.cpu_name()
