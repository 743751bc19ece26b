"""Export of the compressed module: TorchScript (and ONNX when installed), round trip through a file."""

import pytest
import torch
from torch import nn

import pyro_sparse_bnn as psb
from pyro_sparse_bnn import ExportError, InputError, SparseBNN, SpikeSlab, compress, export
from tests.conftest import conv_net, mlp, randomize_guide


def compressed(net, seed=0, logit_scale=4.0):
    torch.manual_seed(seed)
    bnn = randomize_guide(SparseBNN(net, SpikeSlab(prior_inclusion=0.2)), seed, logit_scale)
    return bnn, compress(bnn)  # a Compressed (module, report)


@pytest.mark.parametrize("kind", ["mlp", "max-pool", "padding", "avg-pool", "constant"])
def test_torchscript_round_trip_gives_the_same_outputs(kind, tmp_path):
    net = mlp([6, 5, 4, 3]) if kind in ("mlp", "constant") else conv_net(kind)
    bnn, result = compressed(net)
    if kind == "constant":  # every indicator off: the output is the folded bias
        with torch.no_grad():
            for name, p in bnn.named_parameters():
                if name.endswith("logits"):
                    p.fill_(-30.0)
        with pytest.warns(psb.DegenerateNetworkWarning):
            result = compress(bnn)
        assert result.report.architecture_after[0] == 0
    module = result.module
    x = torch.randn(9, *bnn.input_shape)
    path = export(result, tmp_path / "m.ts", example_input=x[:4])
    loaded = torch.jit.load(str(path))
    assert torch.equal(loaded(x), module(x))  # another batch size than the example's
    assert torch.allclose(loaded(x), psb.analysis.masked_posterior_mean(bnn)(x), rtol=1e-5, atol=1e-5)


def test_constant_output_module_scripts(tmp_path):
    module = nn.Sequential(psb.analysis.ConstantOutput(torch.tensor([1.0, -2.0])))
    export(module, tmp_path / "c.ts", example_input=torch.randn(3, 4))
    assert torch.equal(torch.jit.load(str(tmp_path / "c.ts"))(torch.randn(5, 4)), torch.tensor([[1.0, -2.0]] * 5))


def test_export_detects_a_file_that_computes_something_else(tmp_path, monkeypatch):
    _, (module, _) = compressed(mlp([4, 3, 2]))
    real_load = torch.jit.load

    def tampered(*args, **kwargs):
        scripted = real_load(*args, **kwargs)
        with torch.no_grad():
            scripted.state_dict()[[k for k in scripted.state_dict() if k.endswith("bias")][-1]].add_(1.0)
        return scripted

    monkeypatch.setattr(torch.jit, "load", tampered)
    with pytest.raises(ExportError, match="computes different outputs"):
        export(module, tmp_path / "m.ts", example_input=torch.randn(3, 4))


def test_export_rejects_bad_arguments(tmp_path):
    bnn, (module, _) = compressed(mlp([4, 3, 2]))
    with pytest.raises(InputError, match="not the SparseBNN"):
        export(bnn, tmp_path / "m.ts")
    with pytest.raises(InputError, match="format must be one of"):
        export(module, tmp_path / "m.ts", format="tflite")
    with pytest.raises(InputError, match="example_input must be a floating-point tensor"):
        export(module, tmp_path / "m.ts", example_input=torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(InputError, match=r"shape \(batch, \*input_shape\) with batch >= 1, got \(4,\)"):
        export(module, tmp_path / "m.ts", example_input=torch.randn(4))
    conv_bnn, conv = compressed(conv_net("max-pool"))
    with pytest.raises(InputError, match=r"example_input of shape \(3, 5\) does not fit the module"):
        export(conv, tmp_path / "m.ts", example_input=torch.randn(3, 5))


def test_onnx_round_trip(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    bnn, (module, _) = compressed(conv_net("max-pool"))
    x = torch.randn(5, *bnn.input_shape)
    export(module, tmp_path / "m.onnx", format="onnx", example_input=x)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(8, *bnn.input_shape)
    out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert torch.allclose(out, module(x), rtol=1e-4, atol=1e-5)
