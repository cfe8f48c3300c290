"""Data: datasets held in memory as uint8 arrays, timm-style augmentation, and a multi-process loader.

    from minicct.data import get_dataset, train_loader, eval_loader
    train, test = get_dataset("cifar10")                 # or "cifar100", "mnist", "fashion-mnist",
                                                         # "flowers102", "shapes", a folder path
    loader = train_loader(train, batch_size=128, seed=0, workers=2)
    for x, y in loader: ...                              # x (128, C, 32, 32) float32, y (128, 10) float32
    for x, y in eval_loader(test): ...                   # y (N,) int64 labels

Files, in the order data flows through them:
    datasets.py    ImageDataset, get_dataset, DatasetError
    cifar.py       CIFAR-10/100: download (MD5-checked, atomic), safe extraction, restricted unpickling
    mnist.py       MNIST and Fashion-MNIST: the IDX reader, one grey channel (N, 28, 28, 1)
    flowers.py     Flowers-102 with its official split (setid.mat, imagelabels.mat)
    matfile.py     a minimal MATLAB v5 .mat reader (numeric arrays, zlib-compressed or not)
    imagefolder.py root/train/<class>/* folders of image files
    shapes.py      a synthetic offline dataset, generated in about a second
    transforms.py  RandomResizedCrop, TrainTransform, Normalize, RandomErasing
    randaugment.py RandAugment ops and the magnitude -> argument mapping
    mixup.py       Mixup / CutMix and label smoothing
    loader.py      BatchPipeline, DataLoader (worker processes), train_loader, eval_loader
    text.py        text: tokenizer, vocabulary, AG News, TREC, the synthetic text-synth, GloVe, batches
"""
from minicct.data.datasets import DatasetError, ImageDataset, Splits, get_dataset, channel_stats
from minicct.data.transforms import Normalize, RandomErasing, RandomResizedCrop, TrainTransform
from minicct.data.randaugment import RandAugment
from minicct.data.mixup import Mixup, mixup_target, one_hot_smooth
from minicct.data.loader import BatchPipeline, DataLoader, eval_loader, train_loader

__all__ = ["DatasetError", "ImageDataset", "Splits", "get_dataset", "channel_stats", "Normalize",
           "RandomErasing", "RandomResizedCrop", "TrainTransform", "RandAugment", "Mixup", "mixup_target",
           "one_hot_smooth", "BatchPipeline", "DataLoader", "eval_loader", "train_loader"]
