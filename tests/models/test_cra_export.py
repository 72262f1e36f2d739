"""torch.fx, torch.export and torch.compile on the small CRA models."""
import pytest
import torch

import timm
from timm.layers._fx import create_feature_extractor, get_graph_node_names

import timm_cra  # noqa: F401  (registers the models)
from timm_cra.layers import cra_pool

from .archs import SMALL_ARCHS


def _model_and_input(name):
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10).eval(), torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_fx_symbolic_trace(name):
    model, x = _model_and_input(name)
    _, eval_nodes = get_graph_node_names(model)
    out = eval_nodes[-1]
    gm = create_feature_extractor(model, return_nodes={out: 'out'})
    # The shape-dependent pooling dispatch stays one leaf call, traced once per CRA module.
    pools = [n for n in gm.graph.nodes if n.op == 'call_function' and n.target is cra_pool]
    assert len(pools) == sum(isinstance(m, timm_cra.CraAttn) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(gm(x)['out'], model(x))
        # The traced graph is not specialised to the trace-time input size.
        x2 = torch.randn(1, 3, 96, 80)
        torch.testing.assert_close(gm(x2)['out'], model(x2))


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_torch_export(name):
    model, x = _model_and_input(name)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_torch_compile_inductor_cpu(name):
    model, x = _model_and_input(name)
    compiled = torch.compile(model, backend='inductor')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
