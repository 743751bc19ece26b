"""Export of the compressed module: torch.export (.pt2), ONNX when installed and TorchScript on
request, each a round trip through a file checked against the module on fresh inputs."""

import warnings

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


def constant_network():
    bnn, _ = compressed(mlp([6, 5, 4, 3]))
    with torch.no_grad():  # every indicator off: the output is the folded bias
        for name, p in bnn.named_parameters():
            if name.endswith("logits"):
                p.fill_(-30.0)
    with pytest.warns(psb.DegenerateNetworkWarning):
        result = compress(bnn)
    assert result.report.architecture_after[0] == 0
    assert isinstance(result.module[0], psb.analysis.ConstantOutput)
    return bnn, result


@pytest.mark.parametrize("kind", ["mlp", "max-pool", "padding", "avg-pool", "constant"])
def test_pt2_round_trip_gives_the_same_outputs_at_every_batch_size(kind, tmp_path):
    if kind == "constant":
        bnn, result = constant_network()
    else:
        bnn, result = compressed(mlp([6, 5, 4, 3]) if kind == "mlp" else conv_net(kind))
    assert any(isinstance(m, psb.analysis.SelectInputs) for m in result.module) or kind == "constant"
    module = result.module
    path = export(result, tmp_path / "m.pt2", example_input=torch.randn(4, *bnn.input_shape))
    assert path == tmp_path / "m.pt2"
    loaded = torch.export.load(str(path)).module()
    for batch in (1, 3, 9):  # other batch sizes than the example's, fresh inputs
        x = torch.randn(batch, *bnn.input_shape)
        with torch.no_grad():
            assert torch.allclose(loaded(x), module(x), rtol=1e-6, atol=1e-7)
            assert torch.allclose(loaded(x), psb.analysis.masked_posterior_mean(bnn)(x), rtol=1e-5, atol=1e-5)


def test_an_example_batch_of_one_still_gives_a_dynamic_batch(tmp_path):
    bnn, (module, _) = compressed(conv_net("max-pool"))
    export(module, tmp_path / "m.pt2", example_input=torch.randn(1, *bnn.input_shape))
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    for batch in (1, 2, 5):
        x = torch.randn(batch, *bnn.input_shape)
        with torch.no_grad():
            assert torch.equal(loaded(x), module(x))


@pytest.mark.parametrize("batch", [1, 2])
def test_an_example_sliced_from_a_large_data_set_does_not_store_the_data_set(tmp_path, batch):
    """torch.export keeps the example input in the file; a slice of a data set is a view that
    would pickle the whole set (here 20,000 x 6 floats, 480 kB) with it."""
    bnn, (module, _) = compressed(mlp([6, 5, 4, 3]))
    data = torch.randn(20_000, 6)
    export(module, tmp_path / "sliced.pt2", example_input=data[:batch])
    export(module, tmp_path / "copied.pt2", example_input=data[:batch].clone())
    sliced, copied = (tmp_path / "sliced.pt2").stat().st_size, (tmp_path / "copied.pt2").stat().st_size
    assert sliced == copied and sliced < data.numel() * data.element_size() / 4, (sliced, copied)


def test_a_lone_constant_output_module_exports(tmp_path):
    module = nn.Sequential(psb.analysis.ConstantOutput(torch.tensor([1.0, -2.0])))
    export(module, tmp_path / "c.pt2", example_input=torch.randn(3, 4))
    assert torch.equal(torch.export.load(str(tmp_path / "c.pt2")).module()(torch.randn(5, 4)),
                       torch.tensor([[1.0, -2.0]] * 5))


def test_export_keeps_the_training_mode(tmp_path):
    bnn, (module, _) = compressed(mlp([4, 3, 2]))
    module.train()
    export(module, tmp_path / "m.pt2", example_input=torch.randn(3, 4))
    assert module.training


def test_export_emits_no_deprecation_warning(tmp_path):
    bnn, (module, _) = compressed(conv_net("padding"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(module, tmp_path / "m.pt2", example_input=torch.randn(4, *bnn.input_shape))
        torch.export.load(str(tmp_path / "m.pt2")).module()(torch.randn(2, *bnn.input_shape))
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))], \
        [f"{w.category.__name__}: {w.message}" for w in caught]


def test_export_detects_a_file_that_computes_something_else(tmp_path, monkeypatch):
    _, (module, _) = compressed(mlp([4, 3, 2]))
    real_load = torch.export.load

    def tampered(*args, **kwargs):
        program = real_load(*args, **kwargs)
        with torch.no_grad():
            program.state_dict[[k for k in program.state_dict if k.endswith("bias")][-1]].add_(1.0)
        return program

    monkeypatch.setattr(torch.export, "load", tampered)
    with pytest.raises(ExportError, match=r"the torch.export file .* computes different outputs .*difference 1\.0"):
        export(module, tmp_path / "m.pt2", example_input=torch.randn(3, 4))


def test_export_detects_a_batch_size_fixed_while_tracing(tmp_path):
    class BatchSpecific(nn.Module):  # traces, but only for the example's batch size
        def forward(self, x):
            return x * 2.0 if x.shape[0] == 4 else x

    with pytest.raises(ExportError, match="torch.export.export failed on BatchSpecific with a dynamic batch"):
        export(BatchSpecific(), tmp_path / "m.pt2", example_input=torch.randn(4, 3))


def test_export_rejects_bad_arguments(tmp_path):
    bnn, (module, _) = compressed(mlp([4, 3, 2]))
    x = torch.randn(3, 4)
    with pytest.raises(InputError, match="not the SparseBNN"):
        export(bnn, tmp_path / "m.pt2")
    with pytest.raises(InputError, match="must be an nn.Module"):
        export("module", tmp_path / "m.pt2")
    with pytest.raises(InputError, match="format must be one of"):
        export(module, tmp_path / "m.pt2", format="tflite")
    with pytest.raises(InputError, match=r"cannot tell the export format from the file name 'm.bin'"):
        export(module, tmp_path / "m.bin", example_input=x)
    with pytest.raises(InputError, match=r"'m.ts'.*TorchScript is deprecated in torch: pass format='torchscript'"):
        export(module, tmp_path / "m.ts", example_input=x)
    with pytest.raises(InputError, match=r"format='pt2' but the file name 'm.onnx' has the suffix of format 'onnx'"):
        export(module, tmp_path / "m.onnx", format="pt2", example_input=x)
    with pytest.raises(InputError, match="need a file name in an existing directory"):
        export(module, tmp_path / "missing" / "m.pt2", example_input=x)
    with pytest.raises(InputError, match="torch.export traces the module: pass example_input"):
        export(module, tmp_path / "m.pt2")
    with pytest.raises(InputError, match="example_input must be a floating-point tensor"):
        export(module, tmp_path / "m.pt2", example_input=torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(InputError, match=r"shape \(batch, \*input_shape\) with batch >= 1, got \(4,\)"):
        export(module, tmp_path / "m.pt2", example_input=torch.randn(4))
    with pytest.raises(InputError, match="NaN"):
        export(module, tmp_path / "m.pt2", example_input=torch.full((3, 4), float("nan")))
    _, conv = compressed(conv_net("max-pool"))
    with pytest.raises(InputError, match=r"example_input of shape \(3, 5\) does not fit the module"):
        export(conv, tmp_path / "m.pt2", example_input=torch.randn(3, 5))
    assert not (tmp_path / "m.pt2").exists()


def test_explicit_format_writes_any_file_name(tmp_path):
    _, (module, _) = compressed(mlp([4, 3, 2]))
    export(module, tmp_path / "model.bin", format="pt2", example_input=torch.randn(3, 4))
    x = torch.randn(6, 4)
    assert torch.equal(torch.export.load(str(tmp_path / "model.bin")).module()(x), module(x))


@pytest.mark.skipif(not hasattr(torch.jit, "script"), reason="this torch no longer ships TorchScript")
def test_torchscript_on_request_warns_that_it_is_deprecated(tmp_path):
    bnn, (module, _) = compressed(conv_net("avg-pool"))
    with pytest.warns(DeprecationWarning, match=r"format='torchscript' writes TorchScript, which torch has deprecated"):
        export(module, tmp_path / "m.ts", format="torchscript", example_input=torch.randn(4, *bnn.input_shape))
    with pytest.warns(DeprecationWarning, match=r"torch\.jit\.load"):  # torch's own, on reading it back
        loaded = torch.jit.load(str(tmp_path / "m.ts"))
    x = torch.randn(7, *bnn.input_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))


def test_onnx_round_trip(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    bnn, (module, _) = compressed(conv_net("max-pool"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(module, tmp_path / "m.onnx", example_input=torch.randn(1, *bnn.input_shape))
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))], \
        [f"{w.category.__name__}: {w.message}" for w in caught]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 8):
        x = torch.randn(batch, *bnn.input_shape)
        out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            assert torch.allclose(out, module(x), rtol=1e-4, atol=1e-5)
