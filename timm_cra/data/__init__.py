"""Datasets for training and validating CRA models: ImageNet folders, HF datasets, CIFAR, class folders."""
from ..utils.extras import require_train_extra

require_train_extra(__name__)  # one line naming the install command when the [train] extra is missing

from .cifar import load_cifar_pickle
from ..utils.errors import UsageError
from .errors import DataError
from .config import model_in_chans, resolve_model_data_config
from .factory import (SOURCES, check_labels, check_num_classes, create_dataset, detect_source,
                      map_classes_by_name, numbered_classes, skip_collate, split_overlap)
from .folders import ImageFolderDataset, imagenet_class_to_idx, images_listed_once
from .hf import HFImageDataset, detect_columns, load_hf_split
from .images import convert_image, fit_mean_std
from .in_memory import TensorImageDataset, TensorLoader, decode_to_memory, fit_to_input, random_crop_flip

__all__ = [
    'DataError', 'UsageError', 'SOURCES', 'create_dataset', 'detect_source', 'skip_collate', 'check_labels',
    'check_num_classes', 'map_classes_by_name', 'numbered_classes', 'split_overlap', 'images_listed_once',
    'model_in_chans', 'resolve_model_data_config', 'convert_image', 'fit_mean_std',
    'ImageFolderDataset', 'imagenet_class_to_idx', 'HFImageDataset', 'detect_columns', 'load_hf_split',
    'load_cifar_pickle', 'TensorImageDataset', 'TensorLoader', 'decode_to_memory', 'fit_to_input', 'random_crop_flip',
]
