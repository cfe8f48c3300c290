"""The data loader: dataset indices in, ready (x, y) batches out, prepared ahead in worker processes.

    loader = train_loader(train, batch_size=128, seed=0, workers=2)
    for epoch in range(start, epochs):
        loader.set_epoch(epoch)                   # resumable: the state is just (seed, epoch)
        loader.mixup.enabled = epoch < 175        # CCT stops mixing late in training
        for x, y in loader:                       # x (N, C, H, W) float32, y (N, K) float32
            ...
        print(loader.wait_time)                   # seconds this epoch the consumer waited for data

What one batch goes through (``BatchPipeline``, run whole by one worker or in-process):

    images[idx] -> TrainTransform per image (crop, flip, RandAugment; Pillow, uint8)
                -> Normalize (float32, (N, C, H, W)) -> Mixup/CutMix + smoothed targets
                -> RandomErasing per image                             = (x, y)

Mixing and erasing run in the workers too, after normalising, as timm's GPU prefetcher does:
the main process, which is busy training, only unpickles the finished batch. (timm mixes uint8
images with rounding before normalising; normalisation is affine, so mixing afterwards is the same
without that rounding.)

Reproducible: batch b of epoch e is drawn from its own Generator seeded by (seed, e, b) and the
epoch's shuffle by (seed, e), so the batches do not depend on the number of workers or on which
worker made them. Training drops the last partial batch (Mixup pairs the batch with its reverse,
and a short last batch would also weigh its images more); evaluation keeps every image, in order.

Workers are started on the first epoch and kept until ``close()`` (or the loader is dropped, or the
program exits). They ignore Ctrl-C, so the interrupt reaches only the trainer, which closes them.
On Linux they are forked and share the dataset arrays with the trainer without a copy; elsewhere
they are spawned and each receives a pickled copy of the dataset.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback

import numpy as np

from minicct.data.datasets import ImageDataset
from minicct.data.mixup import Mixup, one_hot_smooth
from minicct.data.transforms import Normalize, RandomErasing, TrainTransform


def shuffle_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, 0)))


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, 1, batch)))


class BatchPipeline:
    """Indices -> one finished batch. Holds the dataset arrays and every transform.

    Training (transform given): x float32 (N, C, S, S); y float32 (N, C) soft targets when mixup is
    set, else int64 (N,). Evaluation (transform None): x normalised, y int64 (N,) labels.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, normalize: Normalize,
                 transform: TrainTransform | None = None, mixup: Mixup | None = None,
                 erasing: RandomErasing | None = None):
        self.images, self.labels = images, labels
        self.normalize, self.transform, self.mixup, self.erasing = normalize, transform, mixup, erasing

    def __call__(self, idx: np.ndarray, rng: np.random.Generator | None, mixing: bool = True):
        imgs, y = self.images[idx], self.labels[idx]
        if self.transform is not None:
            imgs = self.transform.batch(imgs, rng)
        x = self.normalize(imgs)
        if self.mixup is not None:
            x, y = self.mixup(x, y, rng, enabled=mixing)
        if self.erasing is not None:
            self.erasing(x, rng)
        return x, y


def _worker_loop(pipeline: BatchPipeline, seed: int, tasks, results, parent_pid: int):
    """A worker: make the batches asked for in `tasks`, put them in `results`, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it closes us
    results.cancel_join_thread()                  # at exit, don't wait for unread batches to flush
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:        # the trainer was killed: don't linger as an orphan
                return
            continue
        if task is None:
            return
        gen, epoch, b, idx, mixing = task
        try:
            x, y = pipeline(idx, batch_rng(seed, epoch, b), mixing)
            results.put((gen, b, x, y, None))
        except Exception:
            results.put((gen, b, None, None, traceback.format_exc()))


class DataLoader:
    """Iterate a dataset in (x, y) batches; see the module docstring.

    dataset: ImageDataset; pipeline: what turns indices into a batch (BatchPipeline).
    train: shuffle every epoch and drop the last partial batch (both overridable).
    seed: with the epoch, fixes every random draw. workers: processes preparing batches (0 = in-process).
    prefetch: batches in flight per worker.
    """

    def __init__(self, dataset: ImageDataset, pipeline: BatchPipeline, batch_size: int, train: bool,
                 seed: int = 0, workers: int = 0, prefetch: int = 2, shuffle: bool | None = None,
                 drop_last: bool | None = None, start_method: str | None = None):
        self.dataset, self.pipeline, self.batch_size = dataset, pipeline, batch_size
        self.train, self.seed, self.workers, self.prefetch = train, seed, workers, max(1, prefetch)
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = train if drop_last is None else drop_last
        if start_method is None:
            start_method = "fork" if "fork" in mp.get_all_start_methods() and sys.platform == "linux" else "spawn"
        self.start_method = start_method
        self.epoch = 0
        self.wait_time = 0.0  # seconds the consumer spent waiting for batches, this epoch
        self._procs, self._tasks, self._results = None, None, None
        self._generation = 0  # tags tasks, so results of an abandoned epoch are recognised and dropped
        if len(self) == 0:
            raise ValueError(f"{len(dataset)} images make no batch of {batch_size} (drop_last={self.drop_last})")

    @property
    def mixup(self) -> Mixup | None:
        return self.pipeline.mixup

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # --- resuming --------------------------------------------------------------------------------
    def set_epoch(self, epoch: int):
        """The next iteration yields this epoch's batches."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict):
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    # --- iteration -------------------------------------------------------------------------------
    def _batches(self, epoch: int):
        n = len(self.dataset)
        order = shuffle_rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        return [order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)]

    def __iter__(self):
        """Yield this epoch's batches, then advance to the next epoch."""
        epoch = self.epoch
        batches = self._batches(epoch)
        mixing = self.mixup.enabled if self.mixup is not None else True
        self.wait_time = 0.0
        if self.workers <= 0:
            for b, idx in enumerate(batches):
                t0 = time.perf_counter()
                rng = batch_rng(self.seed, epoch, b) if self.train else None
                x, y = self.pipeline(idx, rng, mixing)
                self.wait_time += time.perf_counter() - t0
                yield x, y
        else:
            yield from self._iter_workers(epoch, batches, mixing)
        self.epoch = epoch + 1

    def _iter_workers(self, epoch, batches, mixing):
        self._start_workers()
        self._generation += 1
        gen, ready, sent = self._generation, {}, 0
        in_flight = self.workers * self.prefetch
        try:
            for b in range(len(batches)):
                if self._generation != gen:  # its results now go to the newer iteration
                    raise RuntimeError("this iteration of the loader was superseded by a newer one; "
                                       "iterate a DataLoader once at a time")
                while sent < len(batches) and sent < b + in_flight:  # keep the workers busy, but bounded
                    self._tasks.put((gen, epoch, sent, batches[sent], mixing))
                    sent += 1
                t0 = time.perf_counter()
                while b not in ready:
                    g, i, x, y, err = self._next_result()
                    if err is not None:
                        raise RuntimeError(f"a data worker failed on batch {i} of epoch {epoch}:\n{err}")
                    if g == gen:
                        ready[i] = (x, y)
                self.wait_time += time.perf_counter() - t0
                yield ready.pop(b)
        except BaseException as e:
            if not isinstance(e, GeneratorExit):  # dropped iterator: workers stay for the next epoch
                self.close()
            raise

    def _next_result(self):
        while True:
            try:
                return self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self._procs if not p.is_alive()]
                if dead:
                    codes = ", ".join(f"pid {p.pid} exit code {p.exitcode}" for p in dead)
                    self.close()
                    raise RuntimeError(f"a data worker died ({codes}); out of memory?") from None

    def _start_workers(self):
        if self._procs is not None:
            return
        ctx = mp.get_context(self.start_method)
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._procs = []
        for _ in range(self.workers):
            p = ctx.Process(target=_worker_loop, daemon=True,
                            args=(self.pipeline, self.seed, self._tasks, self._results, os.getpid()))
            p.start()
            self._procs.append(p)

    def close(self):
        """Stop the worker processes (the loader can still be iterated; it starts new ones)."""
        procs, tasks, results = self._procs, self._tasks, self._results
        if procs is None:
            return
        self._procs = self._tasks = self._results = None
        for _ in procs:
            try:
                tasks.put_nowait(None)
            except Exception:
                pass
        # Nothing is read from `results` any more: a worker that exits (or is terminated) while its
        # batch is half-written into the pipe would leave a partial message that blocks a reader for
        # ever. The workers don't wait for their unread batches either (cancel_join_thread), so they
        # exit as soon as they see the None, and the pipe is thrown away with its contents.
        deadline = time.monotonic() + 2.0
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
        for q in (tasks, results):
            q.cancel_join_thread()
            q.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        raise TypeError("a DataLoader cannot be pickled; save loader.state_dict() instead")

    def __repr__(self):
        return (f"DataLoader({self.dataset.name!r}, batches={len(self)}x{self.batch_size}, train={self.train}, "
                f"workers={self.workers}, seed={self.seed}, epoch={self.epoch})")


# --- the loaders the trainer builds ------------------------------------------------------------------
def train_loader(dataset: ImageDataset, batch_size: int = 128, seed: int = 0, workers: int = 0,
                 img_size: int | None = None, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                 scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3), interpolation=("bilinear", "bicubic"),
                 hflip: float = 0.5, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, mix_prob: float = 1.0,
                 switch_prob: float = 0.5, smoothing: float = 0.1, reprob: float = 0.25, remode: str = "pixel",
                 prefetch: int = 2) -> DataLoader:
    """The CCT CIFAR training pipeline (defaults = configs/datasets/cifar10.yml of the official repo).

    Yields x float32 (batch_size, 3, S, S) and y float32 (batch_size, C) soft targets (smoothed, mixed).
    With mixup_alpha = cutmix_alpha = 0 and smoothing = 0 it yields int64 labels (batch_size,) instead.
    """
    img_size = img_size or dataset.img_size
    transform = TrainTransform(img_size, dataset.mean, scale, ratio, interpolation, hflip, auto_augment)
    use_mix = mixup_alpha > 0 or cutmix_alpha > 0 or smoothing > 0
    mixup = Mixup(dataset.num_classes, mixup_alpha, cutmix_alpha, mix_prob, switch_prob, smoothing) if use_mix else None
    erasing = RandomErasing(reprob, mode=remode) if reprob > 0 else None
    pipeline = BatchPipeline(dataset.images, dataset.labels, Normalize(dataset.mean, dataset.std),
                             transform, mixup, erasing)
    return DataLoader(dataset, pipeline, batch_size, train=True, seed=seed, workers=workers, prefetch=prefetch)


def eval_loader(dataset: ImageDataset, batch_size: int = 256, mean=None, std=None, workers: int = 0) -> DataLoader:
    """Every image once, in order: x float32 (N, C, H, W) normalised, y int64 (N,); last batch may be short.

    mean/std default to the dataset's own (for a test split: the training split's).
    """
    normalize = Normalize(dataset.mean if mean is None else mean, dataset.std if std is None else std)
    pipeline = BatchPipeline(dataset.images, dataset.labels, normalize)
    return DataLoader(dataset, pipeline, batch_size, train=False, workers=workers)


def soft_targets(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """int labels (N,) -> (N, num_classes) float32 smoothed one-hot, e.g. to score eval batches the same way."""
    return one_hot_smooth(labels, num_classes, smoothing)
