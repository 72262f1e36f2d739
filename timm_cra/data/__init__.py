"""Datasets for training and validating CRA models: ImageNet folders, HF datasets, CIFAR, class folders."""
from .cifar import load_cifar_pickle
from ..utils.errors import UsageError
from .errors import DataError
from .factory import SOURCES, check_num_classes, create_dataset, detect_source, skip_collate
from .folders import ImageFolderDataset, imagenet_class_to_idx
from .hf import HFImageDataset, detect_columns, load_hf_split
from .in_memory import TensorImageDataset, TensorLoader, decode_to_memory, random_crop_flip

__all__ = [
    'DataError', 'UsageError', 'SOURCES', 'create_dataset', 'detect_source', 'skip_collate', 'check_num_classes',
    'ImageFolderDataset', 'imagenet_class_to_idx', 'HFImageDataset', 'detect_columns', 'load_hf_split',
    'load_cifar_pickle', 'TensorImageDataset', 'TensorLoader', 'decode_to_memory', 'random_crop_flip',
]
