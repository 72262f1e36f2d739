"""timm_cra.detection: torchvision Faster R-CNN / RetinaNet on timm (CRA-)ResNet FPN backbones.

Backbone weights come from a real trainer checkpoint (``save_checkpoint``, as ``last.pth``) of a classifier whose
BNs were re-initialised: random-init timm ResNets zero-init each block's last BN, which (frozen) silences every
CRA gate, so gradient checks on them would prove nothing.
"""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import timm_cra
from timm_cra.detection import create_fasterrcnn, create_fpn_backbone, create_retinanet
from timm_cra.utils.errors import UsageError

TINY = dict(layers=(1, 1, 1, 1))  # cra_resnet18 with one block per stage
SMALL_RCNN = dict(min_size=128, max_size=128, out_channels=32, rpn_pre_nms_top_n_train=200,
                  rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                  rpn_batch_size_per_image=64, box_batch_size_per_image=32)
SMALL_RETINA = dict(min_size=128, max_size=128, out_channels=32, topk_candidates=100, score_thresh=0.0)


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def reinit_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope='module')
def classifier():
    torch.manual_seed(0)
    return reinit_bn(timm_cra.create_model('cra_resnet18', num_classes=7, **TINY)).eval()


@pytest.fixture(scope='module')
def classifier_ckpt(classifier, tmp_path_factory):
    """A trainer-format ``last.pth`` of the classifier (head ``fc`` with 7 classes)."""
    from timm_cra.train.checkpoint import save_checkpoint
    path = tmp_path_factory.mktemp('cls') / 'last.pth'
    opt = torch.optim.SGD(classifier.parameters(), lr=0.1)
    save_checkpoint(str(path), model=classifier, optimizer=opt, scheduler=None, epoch=1, num_updates=1,
                    history=[], args=dict(model='cra_resnet18', num_classes=7))
    return path


def batch(n=2, size=128):
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = [dict(boxes=torch.tensor([[10., 12., 60., 70.], [70., 30., 120., 90.]]),
                    labels=torch.tensor([1, 3])) for _ in range(n)]
    return images, targets


def cra_kernel_grads(model):
    grads = {n: p.grad for n, p in model.named_parameters() if n.endswith('se.conv.weight')}
    assert len(grads) == 4  # one CRA block per stage
    return grads


def test_fasterrcnn_train_loss_backpropagates_into_cra_kernels(classifier_ckpt):
    model = create_fasterrcnn('cra_resnet18', weights=str(classifier_ckpt), trainable_layers=5, num_classes=4,
                              model_kwargs=TINY, **SMALL_RCNN)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.body.modules())  # frozen by default
    model.train()
    losses = model(*batch())
    assert set(losses) == {'loss_classifier', 'loss_box_reg', 'loss_objectness', 'loss_rpn_box_reg'}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, g in cra_kernel_grads(model).items():
        assert g is not None and g.abs().sum() > 0, name


def test_zero_init_frozen_bn_silences_cra_gradients():
    """The control for the test above: random init (last BN of each block zero) + frozen BN gives the CRA
    kernels exactly zero gradient, which is why the weights there have re-initialised BNs."""
    torch.manual_seed(0)
    model = create_fasterrcnn('cra_resnet18', frozen_bn=True, num_classes=4, model_kwargs=TINY, **SMALL_RCNN)
    sum(model(*batch()).values()).backward()
    assert all(g is None or g.abs().sum() == 0 for g in cra_kernel_grads(model).values())


def test_retinanet_train_and_eval(classifier_ckpt):
    model = create_retinanet('cra_resnet18', weights=str(classifier_ckpt), trainable_layers=5, num_classes=4,
                             model_kwargs=TINY, **SMALL_RETINA)
    losses = model(*batch())
    assert set(losses) == {'classification', 'bbox_regression'}
    sum(losses.values()).backward()
    for name, g in cra_kernel_grads(model).items():
        assert g is not None and g.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        out = model(batch()[0])
    assert len(out) == 2 and out[0]['boxes'].shape[1] == 4 and len(out[0]['boxes']) > 0
    assert len(out[0]['boxes']) == len(out[0]['labels']) == len(out[0]['scores'])


def test_fasterrcnn_eval_returns_boxes(classifier_ckpt):
    model = create_fasterrcnn('cra_resnet18', weights=str(classifier_ckpt), num_classes=4, model_kwargs=TINY,
                              **SMALL_RCNN).eval()
    with torch.no_grad():
        out = model(batch(size=100)[0])
    assert len(out) == 2
    for det in out:
        assert det['boxes'].shape == (len(det['labels']), 4) and len(det['scores']) == len(det['labels'])
        assert len(det['boxes']) > 0 and det['labels'].min() >= 1 and det['labels'].max() <= 3
        assert det['boxes'][:, 2:].max() <= 100.5  # boxes come back in the input image's coordinates


def test_checkpoint_loads_all_but_the_head(classifier, classifier_ckpt):
    backbone = create_fpn_backbone('cra_resnet18', weights=str(classifier_ckpt), frozen_bn=False, **TINY)
    own = backbone.body.state_dict()
    want = classifier.state_dict()
    assert set(want) - set(own) == {'fc.weight', 'fc.bias'}
    for k, v in own.items():
        assert torch.equal(v, want[k]), k
    frozen = create_fpn_backbone('cra_resnet18', weights=str(classifier_ckpt), **TINY).body
    bn = frozen.layer2[0].bn2
    assert isinstance(bn, FrozenBatchNorm2d)
    assert torch.equal(bn.weight, classifier.layer2[0].bn2.weight)
    assert torch.equal(bn.running_var, classifier.layer2[0].bn2.running_var)


def test_safetensors_with_a_foreign_key_is_refused(classifier, tmp_path):
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in classifier.state_dict().items()}
    ok = tmp_path / 'model.safetensors'
    save_file(state, str(ok))
    create_fpn_backbone('cra_resnet18', weights=str(ok), **TINY)  # the head alone is dropped
    bad = tmp_path / 'extra.safetensors'
    save_file({**state, 'neck.weight': torch.zeros(3)}, str(bad))
    with pytest.raises(UsageError, match='unexpected keys: neck.weight'):
        create_fpn_backbone('cra_resnet18', weights=str(bad), **TINY)
    with pytest.raises(UsageError, match='missing keys: layer1.1'):  # two blocks per stage: not this file
        create_fpn_backbone('cra_resnet18', weights=str(ok))


def test_local_dir_weights(classifier, tmp_path):
    from timm.models import save_for_hf
    save_for_hf(classifier, str(tmp_path), model_config=dict(model_args=TINY))
    backbone = create_fpn_backbone(f'local-dir:{tmp_path}', pretrained=True, frozen_bn=False)
    assert torch.equal(backbone.body.layer3[0].se.conv.weight, classifier.layer3[0].se.conv.weight)
    assert torch.equal(backbone.body.layer3[0].bn2.running_mean, classifier.layer3[0].bn2.running_mean)


@pytest.mark.parametrize('frozen_bn', [True, False])
@pytest.mark.parametrize('trainable_layers', [0, 1, 3, 4, 5])
def test_trainable_layers_match_torchvision(trainable_layers, frozen_bn):
    """timm's resnet18 and torchvision's share parameter names: the trainable sets must be the same."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    ours = create_fpn_backbone('resnet18', trainable_layers=trainable_layers, frozen_bn=frozen_bn)
    ref = resnet_fpn_backbone(backbone_name='resnet18', weights=None, trainable_layers=trainable_layers,
                              norm_layer=FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d)
    trainable = lambda m: {n for n, p in m.body.named_parameters() if p.requires_grad}  # noqa: E731
    assert trainable(ours) == trainable(ref)
    assert len(trainable(ours)) > 0 or trainable_layers == 0
    assert all(p.requires_grad for p in ours.fpn.parameters())


def test_frozen_bn_has_no_trainable_params():
    body = create_fpn_backbone('cra_resnet18', frozen_bn=True, trainable_layers=5, **TINY).body
    bns = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(bns) == sum(1 for m in timm_cra.create_model('cra_resnet18', **TINY).modules()
                           if isinstance(m, nn.BatchNorm2d))
    assert all(len(list(m.parameters())) == 0 for m in bns)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())


def test_defaults_follow_torchvision(classifier_ckpt):
    """No weights: everything trains with live BatchNorm; with weights: 3 stages, frozen BN."""
    random = create_fpn_backbone('cra_resnet18', **TINY).body
    assert all(p.requires_grad for p in random.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in random.modules())
    loaded = create_fpn_backbone('cra_resnet18', weights=str(classifier_ckpt), **TINY).body
    trainable = {n.split('.')[0] for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {'layer2', 'layer3', 'layer4'}


def test_bad_arguments_are_one_clear_error(classifier_ckpt):
    with pytest.raises(ValueError, match='trainable_layers must be in 0..5'):
        create_fpn_backbone('cra_resnet18', trainable_layers=6, **TINY)
    with pytest.raises(ValueError, match='not both'):
        create_fpn_backbone('cra_resnet18', pretrained=True, weights=str(classifier_ckpt))
    with pytest.raises(ValueError, match='returned_layers'):
        create_fpn_backbone('cra_resnet18', returned_layers=[0, 1], **TINY)
    with pytest.raises(timm_cra.UnknownModelError):
        create_fpn_backbone('cra_resnet19')


def test_returned_layers_and_retinanet_levels():
    backbone = create_fpn_backbone('cra_resnext50_32x4d', returned_layers=[2, 3, 4], out_channels=16,
                                   layers=(1, 1, 1, 1))
    feats = backbone(torch.rand(1, 3, 64, 64))
    assert list(feats) == ['0', '1', '2', 'pool']
    assert [f.shape[-1] for f in feats.values()] == [8, 4, 2, 1] and all(f.shape[1] == 16 for f in feats.values())


def test_map_helper_scores_real_predictions():
    pytest.importorskip('torchmetrics', reason="the 'detection' extra (torchmetrics) is not installed")
    pytest.importorskip('pycocotools', reason="the 'detection' extra (pycocotools) is not installed")
    from timm_cra.detection import mean_average_precision
    target = [dict(boxes=torch.tensor([[10., 10., 50., 50.], [60., 60., 100., 90.]]), labels=torch.tensor([1, 2]))]
    hit = [dict(boxes=target[0]['boxes'] + 1, scores=torch.tensor([0.9, 0.8]), labels=torch.tensor([1, 2]))]
    wrong = [dict(boxes=target[0]['boxes'], scores=torch.tensor([0.9, 0.8]), labels=torch.tensor([2, 1]))]
    scores = []
    for preds in (hit, wrong):
        metric = mean_average_precision()
        metric.update(preds, target)
        scores.append(float(metric.compute()['map_50']))
    assert scores == [1.0, 0.0]


def test_map_helper_names_the_extra_when_torchmetrics_is_missing(monkeypatch):
    import sys
    from timm_cra.detection import mean_average_precision
    monkeypatch.setitem(sys.modules, 'torchmetrics', None)
    monkeypatch.setitem(sys.modules, 'torchmetrics.detection', None)
    with pytest.raises(ImportError, match=r"pip install 'timm-cra\[detection\]'"):
        mean_average_precision()
