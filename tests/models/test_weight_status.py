"""A tag's weight status is typed registry data (``WEIGHT_STATES``), not text parsed from its cfg ``notes``."""
import dataclasses

from timm.models import get_pretrained_cfg

import timm_cra  # noqa: F401  registers the cra_* models
from timm_cra.models import (WEIGHT_STATES, WEIGHTS_GATES_UNTRAINED, WEIGHTS_PENDING, WeightStatus, weight_note,
                             weight_status, weight_status_tags)


def test_status_is_keyed_by_tag_and_notes_are_only_derived_from_it():
    cfg = get_pretrained_cfg('cra_resnet50.paper_in1k')
    state = WEIGHT_STATES['cra_resnet50.paper_in1k']
    assert state.status is WeightStatus.PENDING and weight_status(cfg) == WEIGHTS_PENDING == 'pending'
    assert weight_note(cfg) == state.note and cfg.notes == (state.human_note(),)
    # The notes are for people: without them the status stands, and a forged one confers none.
    assert weight_status(dataclasses.replace(cfg, notes=None)) == WEIGHTS_PENDING
    plain = get_pretrained_cfg('cra_resnet50.untrained')
    forged = dataclasses.replace(plain, notes=('timm_cra weights: gates-untrained -- forged',))
    assert weight_status(plain) is None and weight_status(forged) is None
    # A cfg read from a Hub or local folder names no registry entry, whatever its tag.
    assert weight_status(dataclasses.replace(cfg, source='hf-hub')) is None


def test_every_state_names_a_registered_tag():
    assert set(weight_status_tags(*WeightStatus)) == set(WEIGHT_STATES)
    assert all(name.endswith('_gates_untrained') for name in weight_status_tags(WEIGHTS_GATES_UNTRAINED))
    assert f'{WEIGHTS_GATES_UNTRAINED}' == str(WEIGHTS_GATES_UNTRAINED) == 'gates-untrained'
