"""Eval results and the Hub model card (README.md) of a CRA weight repo.

The card is rendered only from the registry (pretrained cfg), the model itself (params, MACs) and an
eval-results JSON, so regenerating it gives the same bytes until one of those changes. Its YAML metadata
(licence, tags, datasets, ``model-index``) is written by ``huggingface_hub.ModelCardData``.
"""
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from huggingface_hub import EvalResult, ModelCardData

from ..layers.cra import cra_description
from ..utils.errors import UsageError
from ..utils.labels import unusable_name
from ..utils.strict_json import is_number

__all__ = [
    'EvalResults', 'RepoContentError', 'load_eval_results', 'render_model_card', 'usage_section', 'USAGE_IMAGE',
    'PAPER_CITATION', 'markdown_text', 'code_span',
]

PAPER_TITLE = 'Convolutional Neural Network optimization via Channel Reassessment Attention module'
PAPER_URL = 'https://arxiv.org/abs/2010.05605'
PAPER_CITATION = """@article{shen2020cra,
  title={Convolutional Neural Network optimization via Channel Reassessment Attention module},
  author={Shen, YuTao and Wen, Ying},
  journal={arXiv preprint arXiv:2010.05605},
  year={2020}
}"""

# Known dataset ids -> display names for the card (anything else is shown as given).
_DATASET_NAMES = {'imagenet-1k': 'ImageNet-1k', 'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100'}


class RepoContentError(UsageError, ValueError):
    """What a Hub repo folder would be written from cannot be used: eval results, class names, the model's
    pretrained cfg. A ``ValueError`` too, which these functions raised before."""


@dataclass
class EvalResults:
    """Top-1 / top-5 accuracy (%) of one weight tag on one dataset split, and where the numbers come from.

    ``source`` is ``'measured'`` (evaluated by timm-cra on these weights) or ``'paper'`` (reported by the
    authors; quoted, not reproduced). ``dataset`` / ``split``: as the results record them (validate and the trainer
    do); ``None`` when they record none, and then the card claims no dataset (no ``datasets``, no ``model-index``).
    ``count``: the images scored, when recorded.
    """
    top1: float
    top5: Optional[float] = None
    dataset: Optional[str] = None
    split: Optional[str] = None
    count: Optional[int] = None
    source: str = 'measured'
    source_url: Optional[str] = None
    img_size: Optional[int] = None
    crop_pct: Optional[float] = None
    interpolation: Optional[str] = None
    recipe: Optional[str] = None
    notes: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def source_name(self) -> str:
        return "Reported by the paper's authors" if self.source == 'paper' else 'Measured by timm-cra'

    @property
    def measured_on(self) -> str:
        """What the numbers were measured on, for the card: the dataset, its split and the images scored, as
        recorded; says so where the results record no dataset or split, never guessing one."""
        split = markdown_text(self.split) if self.split else 'split not recorded'
        count = f", {self.count:,} image{'s' if self.count > 1 else ''}" if self.count else ''
        if not self.dataset:
            return f'a dataset the results do not record ({split}{count})'
        return f'{markdown_text(_DATASET_NAMES.get(self.dataset, self.dataset))} ({split}{count})'

    def to_eval_results(self) -> List[EvalResult]:
        """One ``huggingface_hub.EvalResult`` per metric, for the card's ``model-index``.

        The Hub's model-index needs a URL for a ``source``, so the source is recorded only with ``source_url``; and
        a dataset for every result, so results that record none have no entry.
        """
        if not self.dataset:
            return []
        common = dict(
            task_type='image-classification', task_name='Image Classification',
            dataset_type=self.dataset, dataset_name=_DATASET_NAMES.get(self.dataset, self.dataset),
            dataset_split=self.split or None,
            source_name=self.source_name if self.source_url else None, source_url=self.source_url,
        )
        metrics = [('Top-1 accuracy', self.top1), ('Top-5 accuracy', self.top5)]
        return [EvalResult(metric_type='accuracy', metric_name=name, metric_value=value, **common)
                for name, value in metrics if value is not None]


#: Characters that would make a results file's ``dataset`` / ``split`` markup in the card's text (a link, HTML, a
#: table cell, emphasis, a heading), each written as the literal character.
_MARKDOWN_ESCAPES = {c: '\\' + c for c in '\\`*_[]|#!'} | {'<': '&lt;', '>': '&gt;', '&': '&amp;'}


def markdown_text(text: str) -> str:
    """``text`` shown as itself in a markdown paragraph: ``data](http://x) <script>`` is no link and no HTML."""
    return ''.join(_MARKDOWN_ESCAPES.get(c, c) for c in text)


def code_span(text: str) -> str:
    """``text`` as one markdown code span whatever backticks it holds (fenced by one more than its longest run, as
    CommonMark allows): a backtick in a run's argument closed the span and let the rest be markup."""
    longest = max((len(run) for run in re.findall('`+', text)), default=0)
    fence, pad = '`' * (longest + 1), ' ' if longest else ''
    return f'{fence}{pad}{text}{pad}{fence}'


#: The most images a results file may say were scored: ten billion, more than any image dataset holds (LAION-5B,
#: among the largest, has 5.85 billion): a ``count`` of 10**30 was printed on the card as scored.
MAX_IMAGES_SCORED = 10 ** 10


def _accuracy(data: Dict[str, Any], key: str) -> Optional[float]:
    if data.get(key) is not None:
        return float(data[key])
    if data.get(f'{key}_err') is not None:
        return round(100.0 - float(data[f'{key}_err']), 4)
    return None


#: Optional keys of the eval-results schema and the JSON types they take (``None`` always allowed).
_TEXT_KEYS = ('dataset', 'split', 'source', 'source_url', 'interpolation', 'recipe', 'notes')
_SOURCES = ('measured', 'paper')


def _check_eval_results(data: Dict[str, Any], where: str) -> None:
    """One :class:`RepoContentError` line naming the first key whose value does not fit the schema."""
    def bad(problem: str) -> RepoContentError:
        return RepoContentError(f'eval results{where}: {problem}. Fix the file (schema: {{"top1": 77.2, "top5": 93.5, '
                                f'"dataset": "imagenet-1k", "split": "validation", "source": "measured"}}).')

    for key in ('top1', 'top5', 'top1_err', 'top5_err'):
        value = data.get(key)
        if value is not None and not (is_number(value) and 0 <= value <= 100):
            raise bad(f"'{key}' must be a percentage between 0 and 100, not {value!r:.60}")
    for key in _TEXT_KEYS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise bad(f"'{key}' must be a string, not {type(data[key]).__name__} {data[key]!r:.60}")
    for key in ('dataset', 'split'):  # quoted in the card's text: a newline would start lines of its own
        unusable = unusable_name([data[key]]) if data.get(key) is not None else None
        if unusable:
            raise bad(f"'{key}' {unusable[0]!r:.60} {unusable[1]}: name the data in printable text")
    if data.get('source') is not None and data['source'] not in _SOURCES:
        raise bad(f"'source' must be one of {', '.join(_SOURCES)}, not {data['source']!r:.40}")
    img_size = data.get('img_size')
    if img_size is not None and not (isinstance(img_size, int) and not isinstance(img_size, bool) and img_size > 0):
        raise bad(f"'img_size' must be a positive integer, not {img_size!r:.40}")
    crop_pct = data.get('crop_pct')
    if crop_pct is not None and not (is_number(crop_pct) and crop_pct > 0):
        raise bad(f"'crop_pct' must be a positive number, not {crop_pct!r:.40}")
    # validate's record of what was scored: the number of images and which weights (publish compares them)
    count = data.get('count')
    if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and count > 0):
        raise bad(f"'count' (images scored) must be a positive integer, not {count!r:.40}")
    if count is not None and count > MAX_IMAGES_SCORED:
        raise bad(f"'count' (images scored) {count:.3g} is more images than any dataset holds (at most "
                  f"{MAX_IMAGES_SCORED:,}); pass the count validate recorded")
    if data.get('pretrained') is not None and not isinstance(data['pretrained'], bool):
        raise bad(f"'pretrained' must be true or false, not {data['pretrained']!r:.40}")
    for key in ('checkpoint_sha256', 'state_dict_sha256'):
        digest = data.get(key)
        if digest is not None and not (isinstance(digest, str) and re.fullmatch('[0-9a-f]{64}', digest)):
            raise bad(f"'{key}' must be a sha256 in hex, not {digest!r:.80}")
    # what the score depends on beside the tensors (publish holds them to the repo it writes)
    names = data.get('label_names')
    if names is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise bad(f"'label_names' (the classes scored) must be a list of class names or null, not {names!r:.60}")
    if data.get('data_config') is not None and not isinstance(data['data_config'], dict):
        raise bad(f"'data_config' (the preprocessing scored with) must be an object, not {data['data_config']!r:.60}")


#: What a card says of results validate scored by position (its ``class_mapping``): a number that is right only if
#: the data's sorted classes are the model's, in its order.
BY_POSITION_NOTE = ("The data's classes were scored by position (their sorted order against the model's outputs), "
                    "not matched to the model's class names.")


def load_eval_results(source: Union[str, Path, Dict[str, Any]], name: Optional[str] = None) -> EvalResults:
    """Read an eval-results JSON: timm ``validate.py`` output or this package's schema.

    Accuracy may be given as ``top1``/``top5`` (%) or as ``top1_err``/``top5_err`` (%). Optional keys:
    ``dataset`` (Hub dataset id), ``split``, ``count`` (images scored), ``source`` (``measured``|``paper``),
    ``source_url``, ``img_size``, ``crop_pct``, ``interpolation``, ``recipe``, ``notes``. A leading UTF-8 BOM is read. Unknown keys are kept in ``extra``. Types and ranges
    are checked (accuracies in [0, 100], top-5 not below top-1): a bad file is one :class:`RepoContentError` line,
    naming ``name`` (the file a dict was read from) or the file.
    """
    where = f' in {name or source}' if name or not isinstance(source, dict) else ''
    if isinstance(source, dict):
        data = dict(source)
    else:
        from ..utils.strict_json import read_json
        try:
            data = read_json(source, 'Eval results', bom=True)  # a BOM of a Windows editor is no fault
        except (UsageError, OSError) as e:
            raise RepoContentError(f'cannot read eval results {source}: {e} Pass a JSON file such as '
                                   f'timm validate.py writes ({{"top1": 77.2, "top5": 93.5, ...}}).') from e
    if not isinstance(data, dict):
        raise RepoContentError(f'eval results{where} must be a JSON object, got {type(data).__name__}.')
    _check_eval_results(data, where)
    top1 = _accuracy(data, 'top1')
    if top1 is None or not math.isfinite(top1) or not 0 <= top1 <= 100:
        raise RepoContentError(f"eval results{where} need 'top1' (accuracy in %) or 'top1_err'; got "
                               f"{data.get('top1', data.get('top1_err'))!r}.")
    top5 = _accuracy(data, 'top5')
    if top5 is not None and top5 < top1:
        raise RepoContentError(f"eval results{where}: top-5 accuracy {top5} is below top-1 {top1}, which "
                               f"cannot be; check 'top5' / 'top5_err'.")
    if data.get('class_mapping') == 'by position':  # validate's: data named apart from the model (or no names)
        data = dict(data, notes=' '.join(filter(None, [data.get('notes'), BY_POSITION_NOTE])))
    known = set(EvalResults.__dataclass_fields__) - {'extra', 'top1', 'top5'}
    skip = {'top1', 'top5', 'top1_err', 'top5_err'}
    return EvalResults(
        top1=top1,
        top5=top5,
        **{k: data[k] for k in known if data.get(k) is not None},
        extra={k: v for k, v in data.items() if k not in known | skip},
    )


def render_model_card(
        *,
        model_name: str,
        repo_id: str,
        pretrained_cfg: Dict[str, Any],
        num_params: int,
        macs: int,
        results: Optional[EvalResults] = None,
        recipe: Optional[str] = None,
        weights_note: Optional[str] = None,
        license_note: Optional[str] = None,
        cra_pool: Optional[Tuple[Tuple[int, int], str]] = ((7, 7), 'max'),
        label_names: Optional[Sequence[str]] = None,
        base_weights: Optional[str] = None,
        trained_on: Optional[str] = None,
) -> str:
    """Markdown model card with YAML front matter, as the Hub and timm expect.

    Args:
        model_name: ``<arch>.<tag>``.
        repo_id: Hub repo id the card is for (used in the usage snippet).
        pretrained_cfg: The tag's pretrained cfg (input size, crop, licence, ...).
        num_params: Parameter count.
        macs: MACs of one forward pass at the cfg's input size.
        results: Eval results; written to ``model-index`` and the results table.
        recipe: How the weights were produced (falls back to ``results.recipe``).
        weights_note: Set when the repo has no weights yet: says why and what to do.
        license_note: Extra licence explanation (e.g. an upstream without a licence file).
        cra_pool: CRA's pooled size and type in the model, or ``None`` for a model without CRA (a baseline
            trained for comparison).
        label_names: The class names of ``config.json`` (``None``: the weights record none).
        base_weights: The weights training started from (a fine-tune's tag and Hub repo@commit, a file, or
            random initialisation).
        trained_on: The data the weights were trained on.
    """
    arch = model_name.split('.')[0]
    input_size = tuple(pretrained_cfg.get('input_size', (3, 224, 224)))
    license_id = pretrained_cfg.get('license') or 'unknown'
    recipe = recipe or (results.recipe if results else None)
    datasets = [results.dataset] if results and results.dataset else []

    data = ModelCardData(
        library_name='timm',
        license=license_id,
        tags=['image-classification', 'timm', 'cra', 'channel-attention', 'timm-cra'],
        pipeline_tag='image-classification',
        datasets=datasets or None,
        model_name=model_name if results and results.dataset else None,
        eval_results=(results.to_eval_results() or None) if results else None,
    )
    front = data.to_yaml(original_order=['library_name', 'license', 'tags', 'pipeline_tag', 'datasets'])
    lines = ['---', front, '---', '']
    cfg_paper_id = str(pretrained_cfg.get('paper_ids') or '').replace('arXiv:', '')
    papers = [f'[{PAPER_TITLE}]({PAPER_URL})']
    if cfg_paper_id and f'arxiv.org/abs/{cfg_paper_id}' != PAPER_URL.split('//', 1)[1]:
        papers.insert(0, f"[{pretrained_cfg.get('paper_name') or cfg_paper_id}](https://arxiv.org/abs/{cfg_paper_id})")
    if cra_pool is None:
        intro = (f'A `{arch}` image classification model **without** CRA: the baseline that timm-cra trains with '
                 f'the same recipe as its Channel Reassessment Attention (CRA) counterparts, for comparison with '
                 f'the paper [{PAPER_TITLE}]({PAPER_URL}) (YuTao Shen, Ying Wen, 2020).')
    else:
        intro = (f'A `{arch}` image classification model: timm\'s architecture with **Channel '
                 f'Reassessment Attention** (CRA) in every block, from the paper [{PAPER_TITLE}]({PAPER_URL}) '
                 f'(YuTao Shen, Ying Wen, 2020). ' + cra_description(*cra_pool))
    lines += [f'# Model card for {model_name}', '', intro, '']
    if weights_note:
        lines += ['> **Weights pending.** ' + weights_note, '']
    lines += [
        '## Model details',
        '',
        '- **Model type:** image classification / feature backbone',
        f'- **Architecture:** `{arch}` (registered with timm by `import timm_cra`)',
        f'- **Params (M):** {num_params / 1e6:.2f}',
        f'- **GMACs:** {macs / 1e9:.3g} (at {input_size[1]}x{input_size[2]}; convolutions and matmuls, '
        f'counted with `torch.utils.flop_counter`)',
        f'- **Image size:** {input_size[1]} x {input_size[2]} '
        f'(crop_pct {pretrained_cfg.get("crop_pct")}, {pretrained_cfg.get("interpolation")} interpolation)',
        f'- **Input channels:** {input_size[0]} ({"greyscale" if input_size[0] == 1 else "RGB"}; mean '
        f'{_floats(pretrained_cfg.get("mean"))}, std {_floats(pretrained_cfg.get("std"))})',
        f'- **Classes:** {pretrained_cfg.get("num_classes")}' + _labels_line(label_names),
        '- **Papers:** ' + ', '.join(papers),
        (f'- **Original code:** {pretrained_cfg["origin_url"]}' if pretrained_cfg.get('origin_url') else
         '- **Weights:** trained by timm-cra'),
    ]
    if trained_on:
        lines.append(f'- **Trained on:** {trained_on}')
    if base_weights:
        lines.append(f'- **Initial weights:** {base_weights}')
    if datasets:  # the results' data: a fine-tune's own training data is the "Trained on" line
        lines.append(f'- **Evaluated on:** {_DATASET_NAMES.get(datasets[0], datasets[0])}')
    if license_note is None and license_id == 'unknown':
        license_note = (f'The original repository ({pretrained_cfg.get("origin_url") or "upstream"}) carries no '
                        f'licence file, so no licence can be stated for these weights; none is invented here')
    lines.append(f'- **Licence:** `{license_id}`' + (f'. {license_note}.' if license_note else ''))
    lines.append('')
    if recipe:
        lines += ['## Training recipe', '', recipe.strip(), '']

    lines += ['## Results', '']
    if results:
        lines += [
            f'{results.source_name} on {results.measured_on}'
            + (f', source: {results.source_url}' if results.source_url else '') + '.',
            '',
            '| model | top-1 acc (%) | top-1 err (%) | top-5 acc (%) | top-5 err (%) |',
            '|---|---|---|---|---|',
            f'| {model_name} | {results.top1:.2f} | {100 - results.top1:.2f} | '
            + (f'{results.top5:.2f} | {100 - results.top5:.2f} |' if results.top5 is not None else '- | - |'),
            '',
        ]
        if results.notes:
            lines += [results.notes.strip(), '']
    else:
        lines += ['No evaluation results yet.', '']

    lines += usage_section(repo_id, input_size, label_names) + [
        '',
        '## Citation',
        '',
        '```bibtex',
        PAPER_CITATION,
        '```',
        '',
    ]
    return '\n'.join(lines)


def _floats(values) -> str:
    return '(' + ', '.join(f'{float(v):.4g}' for v in values or ()) + ')'


#: Class names listed on the card up to this many; more are only counted (``config.json`` has them all).
_MAX_LISTED_LABELS = 20


def _labels_line(label_names: Optional[Sequence[str]]) -> str:
    from ..utils.labels import numbered_classes
    if not label_names or numbered_classes(label_names):
        return ' (no class names recorded with these weights: outputs are class indices' + \
            (', named "0".."{}" in `config.json`)'.format(len(label_names) - 1) if label_names else ')')
    if len(label_names) > _MAX_LISTED_LABELS:
        return f' (names in `config.json` `label_names`: {", ".join(f"`{n}`" for n in label_names[:3])}, ...)'
    return ': ' + ', '.join(f'`{n}`' for n in label_names)


#: The image file the usage code opens; tests substitute a real image for it.
USAGE_IMAGE = 'your_image.png'


def usage_section(repo_id: str, input_size: Sequence[int], label_names: Optional[Sequence[str]]) -> List[str]:
    """The card's usage code, built for this model: it runs as written once ``your_image.png`` exists.

    Images are turned upright by their EXIF Orientation tag (``ImageOps.exif_transpose``, as timm-cra's loaders and
    transformers' ``load_image`` do) and converted to the model's input channels ('L' for 1, 'RGB' for 3);
    preprocessing (size, crop, mean/std) comes from timm's data config of the repo. transformers' ``pipeline``
    turns images upright and converts every one to RGB, so a 1-channel model is called through its image processor
    with an upright 'L' image instead.
    """
    mode = 'L' if input_size[0] == 1 else 'RGB'
    name = 'labels[i]' if label_names else 'i'
    timm_code = [
        '```python',
        'import timm',
        'import timm_cra  # registers the cra_* architectures with timm; needed before create_model',
        'import torch',
        'from PIL import Image, ImageOps',
        '',
        f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()",
        'data_config = timm.data.resolve_model_data_config(model)  # size, crop, mean/std of these weights',
        'transform = timm.data.create_transform(**data_config, is_training=False)',
    ] + (["labels = model.pretrained_cfg['label_names']"] if label_names else []) + [
        '',
        f"img = ImageOps.exif_transpose(Image.open('{USAGE_IMAGE}'))  # any image file, upright as its EXIF tag says",
        f"img = img.convert('{mode}')  # this model takes {input_size[0]}-channel input",
        'with torch.no_grad():',
        '    probs = model(transform(img).unsqueeze(0)).softmax(-1)[0]',
        'top = probs.topk(min(5, len(probs)))',
        'for p, i in zip(top.values.tolist(), top.indices.tolist()):',
        f"    print(f'{{{name}}}: {{p:.3f}}')",
        '```',
    ]
    if mode == 'RGB':
        hf_code = [
            '```python',
            'import timm_cra  # first: transformers builds the model through timm, which must know cra_*',
            'from transformers import pipeline',
            '',
            f"classify = pipeline('image-classification', model='{repo_id}')",
            f"print(classify('{USAGE_IMAGE}'))",
            '```',
        ]
        hf_intro = 'With transformers (`pip install transformers`):'
    else:
        hf_code = [
            '```python',
            'import timm_cra  # first: transformers builds the model through timm, which must know cra_*',
            'import torch',
            'from PIL import Image, ImageOps',
            'from transformers import AutoImageProcessor, AutoModelForImageClassification',
            '',
            f"processor = AutoImageProcessor.from_pretrained('{repo_id}')",
            f"model = AutoModelForImageClassification.from_pretrained('{repo_id}').eval()",
            f"inputs = processor(ImageOps.exif_transpose(Image.open('{USAGE_IMAGE}')).convert('L'))",
            'with torch.no_grad():',
            '    logits = model(**inputs).logits',
            'print(model.config.id2label[logits.argmax(-1).item()])',
            '```',
        ]
        hf_intro = ("With transformers (`pip install transformers`): its `pipeline('image-classification')` "
                    'converts every image to RGB, which a 1-channel model cannot take, so call the image '
                    "processor and the model with an upright greyscale ('L') image:")
    sixteen_bit = ("A 16-bit greyscale PNG comes out white from PIL's `convert()` (it clips at 255), a float TIFF "
                   "(mode `F`, values in [0, 1]) black; `timm_cra.data.images.convert_image(Image.open(path), "
                   f"{input_size[0]})` reads either as timm-cra's training and validation did (upright, scaled to "
                   "8 bit: `value / 257`, float `x 255`).")
    return (['## Usage', '', f'With timm (replace `{USAGE_IMAGE}` with your image):', ''] + timm_code
            + ['', sixteen_bit, '', hf_intro, ''] + hf_code
            + ['', f"Fine-tune with a new head: `timm.create_model('hf-hub:{repo_id}', pretrained=True, "
                   "num_classes=10)`. Offline, after one download: `HF_HUB_OFFLINE=1`."])
