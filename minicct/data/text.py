"""Text data: a tokenizer, a vocabulary, AG News and TREC, and an offline synthetic task.

    from minicct.data.text import load_text_dataset, text_loaders
    train, test = load_text_dataset("text-synth")          # or "agnews", "trec" (downloaded once)
    train.tokens (N, seq_len) int64, 0 = <pad>;  train.labels (N,);  train.vocab.decode(train.tokens[0])
    train_batches, test_batches = text_loaders(train, test, batch_size=64, seed=0)
    for ids, y in train_batches: ...                       # ids (64, L) cut to the batch's longest

A dataset is the word ids of every sentence, padded with 0 to ``seq_len`` (longer ones are cut),
its labels, its class names and the vocabulary (built on the training split only, so the test
split's new words are <unk> = 1, as they would be for new text).

Sources:
  * AG News: the CSVs torchtext uses (``class,title,description``, classes 1-4), MD5-checked.
  * TREC (coarse, 6 classes): Li & Roth's ``train_5500.label`` / ``TREC_10.label``, checked
    against the SHA-256 that Hugging Face's ``trec`` loader records.
  * text-synth: generated here in well under a second; see ``make_text_synth``.
Downloads stream into a ``.part`` file of their own and are renamed only once their checksum matches, so an
interrupted download never looks complete (as for CIFAR).
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minicct.data.datasets import DatasetError, default_data_dir

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")

# ---- tokenizer and vocabulary ---------------------------------------------------------------------
# A word is letters and digits, with apostrophes kept *inside* it (don't, o'neill, 90's), so
# quotes around a word and a plural possessive's trailing apostrophe (students') fall away.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def tokenize(text: str) -> list:
    """Lowercase, split on everything that is not a letter or digit (apostrophes inside a word
    stay): "Don't stop -- the 'U.S.' won!" → ['don't', 'stop', 'the', 'u', 's', 'won']."""
    return _WORD.findall(text.translate(_APOSTROPHES).lower())


@dataclass
class Vocab:
    """Words ↔ ids. ``itos[0] = '<pad>'``, ``itos[1] = '<unk>'``, then words by falling count
    (ties alphabetically, so the same text always gives the same ids)."""
    itos: list
    stoi: dict = field(init=False, repr=False)

    def __post_init__(self):
        if list(self.itos[:2]) != list(SPECIALS):
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {self.itos[:2]}")
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, words) -> list:
        return [self.stoi.get(w, UNK) for w in words]

    def decode(self, ids) -> str:
        return " ".join(self.itos[i] for i in ids if i != PAD)


def build_vocab(sentences, min_count: int = 1, max_size: int | None = None) -> Vocab:
    """A Vocab from tokenized sentences: words seen at least ``min_count`` times, the most frequent
    ``max_size`` of them (None: all); plus <pad> and <unk>."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = Counter(w for s in sentences for w in s)
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                   key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[:max_size]
    return Vocab(list(SPECIALS) + words)


def encode_batch(sentences, vocab: Vocab, seq_len: int) -> np.ndarray:
    """Tokenized sentences → ids (N, seq_len) int64, padded with 0 and cut at seq_len. A sentence
    with no words becomes a single <unk> (the models need one real token)."""
    out = np.zeros((len(sentences), seq_len), np.int64)
    for i, words in enumerate(sentences):
        ids = vocab.encode(words[:seq_len]) or [UNK]
        out[i, :len(ids)] = ids
    return out


@dataclass
class TextDataset:
    """One split: ``tokens`` (N, seq_len) int64 (0 = <pad>), ``labels`` (N,) int64, class names, vocab."""
    tokens: np.ndarray
    labels: np.ndarray
    classes: list
    vocab: Vocab
    name: str = ""
    kind = "text"          # the trainer asks this to choose its batches (see text_loaders)
    img_size = None        # not an image dataset: the models take no image size
    mean = std = ()        # (the trainer's checkpoint records an image dataset's statistics)

    def __post_init__(self):
        if self.tokens.ndim != 2 or self.tokens.dtype.kind not in "iu":
            raise ValueError(f"tokens must be (N, seq_len) integers, got {self.tokens.shape} {self.tokens.dtype}")
        if self.labels.shape != (len(self.tokens),):
            raise ValueError(f"labels must be ({len(self.tokens)},), got {self.labels.shape}")
        self.labels = self.labels.astype(np.int64, copy=False)

    def __len__(self):
        return len(self.tokens)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def seq_len(self):
        return self.tokens.shape[1]

    @property
    def model_kwargs(self):
        """What a text model needs from the data: the vocabulary size and the longest sentence."""
        return {"vocab_size": len(self.vocab), "seq_len": self.seq_len}

    def take(self, n):
        """Keep only the first n sentences (quick checks)."""
        self.tokens, self.labels = self.tokens[:n], self.labels[:n]

    def __repr__(self):
        return (f"TextDataset({self.name!r}, tokens={self.tokens.shape}, classes={self.num_classes}, "
                f"vocab={len(self.vocab)})")


class TextSplits(NamedTuple):
    train: TextDataset
    test: TextDataset


def make_splits(train_texts, train_labels, test_texts, test_labels, classes, name, seq_len=64,
                min_count=1, max_size=None) -> TextSplits:
    """Tokenize raw strings, build the vocabulary on the training split, encode both splits."""
    train_words = [tokenize(t) for t in train_texts]
    test_words = [tokenize(t) for t in test_texts]
    vocab = build_vocab(train_words, min_count, max_size)
    return TextSplits(
        TextDataset(encode_batch(train_words, vocab, seq_len), np.asarray(train_labels), list(classes),
                    vocab, f"{name} train"),
        TextDataset(encode_batch(test_words, vocab, seq_len), np.asarray(test_labels), list(classes),
                    vocab, f"{name} test"))


# ---- the synthetic task ------------------------------------------------------------------------------
SYNTH_TOPICS = {
    "sport": ("match", "goal", "coach", "league", "striker", "stadium"),
    "science": ("atom", "laser", "genome", "orbit", "neuron", "telescope"),
}
SYNTH_CLASSES = ("sport", "not sport", "science", "not science")
SYNTH_FILLER = tuple(
    "the a an of to in on at for with by from this that was is are were be it they we you "
    "today yesterday report said says new old big small many few very quite some other more "
    "city people time year week day group team plan news story world local early late".split())


def make_text_synth(n_train=4000, n_test=1000, seq_len=64, min_words=3, max_words=40, seed=0) -> TextSplits:
    """A four-class task that needs word order *and* a keyword anywhere in a sentence of any length.

    Each sentence is ``min_words``–``max_words`` filler words with one topic word (sport or science)
    at a random place. Half the time "not" stands right before it: the label is
    2·topic + negated ('sport', 'not sport', 'science', 'not science'). The other sentences have
    a "not" somewhere else, which negates nothing: every sentence has one "not", so the model must
    read which word it stands next to. A bag of words can only guess the negation (50% overall).
    Same seed, same sentences; train and test from two independent streams.
    """
    topics = [np.array(t) for t in SYNTH_TOPICS.values()]
    filler = np.array(SYNTH_FILLER)
    rng_train, rng_test = (np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))) for i in (0, 1))

    def sentences(rng, n):
        # All the random draws at once, then one short loop to assemble the words.
        lengths = rng.integers(min_words, max_words + 1, n)
        topic, negated = rng.integers(0, 2, n), rng.integers(0, 2, n)
        keyword = rng.integers(0, len(topics[0]), n)
        u = rng.random((n, 2))
        texts = []
        for i in range(n):
            words = list(filler[rng.integers(0, len(filler), lengths[i])])
            at = 1 + int(u[i, 0] * (lengths[i] - 1))                 # room for a "not" before it
            words.insert(at, topics[topic[i]][keyword[i]])
            if negated[i]:
                words.insert(at, "not")
            else:                                # a "not" anywhere but right before it
                far = [j for j in range(len(words) + 1) if j != at]
                words.insert(far[int(u[i, 1] * len(far))], "not")
            texts.append(" ".join(words))
        return texts, 2 * topic + negated

    (a, b), (c, d) = sentences(rng_train, n_train), sentences(rng_test, n_test)
    return make_splits(a, b, c, d, SYNTH_CLASSES, "text-synth", seq_len)


# ---- AG News and TREC ----------------------------------------------------------------------------
TEXT_SOURCES = {
    "agnews": dict(
        title="AG News", folder="ag_news", classes=("World", "Sports", "Business", "Sci/Tech"),
        files={"train": ("https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv",
                         "md5", "b1a00f826fdfbd249f79597b59e1dc12"),
               "test": ("https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
                        "md5", "d52ea96a97a2d943681189a97654912d")}),
    "trec": dict(
        title="TREC", folder="trec", classes=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
        files={"train": ("https://cogcomp.seas.upenn.edu/Data/QA/QC/train_5500.label", "sha256",
                         "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3"),
               "test": ("https://cogcomp.seas.upenn.edu/Data/QA/QC/TREC_10.label", "sha256",
                        "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e")}),
}
TEXT_DATASET_NAMES = ("agnews", "trec", "text-synth")


def _fetch(name: str, data_dir: Path, download: bool) -> dict:
    """{split: path} of the checked files of a source, downloading what is missing."""
    from minicct.data.cifar import check_file, download_url   # one atomic, checked download
    spec = TEXT_SOURCES[name]
    folder = data_dir / spec["folder"]
    paths = {}
    for split, (url, algorithm, digest) in spec["files"].items():
        path = folder / url.rsplit("/", 1)[-1]
        if not path.is_file():
            if not download:
                raise DatasetError(_missing_message(spec, folder, "download=False was asked for"))
            try:
                folder.mkdir(parents=True, exist_ok=True)
                download_url(url, path, digest, desc=f"{spec['title']} {path.name}", algorithm=algorithm)
            except DatasetError:
                raise
            except (OSError, ValueError) as e:
                raise DatasetError(_missing_message(spec, folder, f"download failed: {e}")) from None
        else:
            check_file(path, digest, f"the {spec['title']} file", url, algorithm)
        paths[split] = path
    return paths


def _missing_message(spec, folder: Path, why: str) -> str:
    d = folder.resolve()
    lines = "\n".join(f"  * {d / url.rsplit('/', 1)[-1]}  from {url} ({alg.upper()} {digest})"
                      for url, alg, digest in spec["files"].values())
    return (f"{spec['title']} is not in {d} and could not be fetched ({why}).\n"
            f"To use it without a network, download these elsewhere and put them there:\n{lines}\n"
            f"Or point --data-dir (data_dir= in Python, or MINICCT_DATA_DIR) at a folder that holds "
            f"{spec['folder']}/.")


def read_ag_news(path: Path):
    """(texts, labels 0-3) from an AG News CSV: rows ``"class","title","description"``, class 1-4."""
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if len(row) != 3 or row[0] not in ("1", "2", "3", "4"):
                raise DatasetError(f"{path}, line {line}: expected \"class\",\"title\",\"description\" with "
                                   f"class 1-4, got {row[:3]!r}: the file is corrupt, delete it and fetch it again")
            # The CSVs escape newlines inside a description as a literal backslash-n.
            texts.append(f"{row[1]} {row[2]}".replace("\\n", " ").replace("\\", " "))
            labels.append(int(row[0]) - 1)
    return texts, labels


def read_trec(path: Path, classes):
    """(texts, coarse labels) from a TREC file: lines ``COARSE:fine question words ...``."""
    texts, labels = [], []
    # The files are Latin-1 (a few bytes above 127), not UTF-8.
    with open(path, encoding="latin-1") as f:
        for line, text in enumerate(f, 1):
            label, _, question = text.strip().partition(" ")
            coarse = label.partition(":")[0]
            if coarse not in classes or not question:
                raise DatasetError(f"{path}, line {line}: expected 'COARSE:fine question', got {text[:60]!r}: "
                                   f"the file is corrupt, delete it and fetch it again")
            texts.append(question)
            labels.append(classes.index(coarse))
    return texts, labels


def load_text_dataset(name: str, data_dir=None, download: bool = True, seq_len: int = 64,
                      min_count: int = 1, max_size: int | None = None, **kwargs) -> TextSplits:
    """TextSplits(train, test) of 'agnews', 'trec' or 'text-synth' (kwargs: make_text_synth's)."""
    key = str(name).lower()
    if key == "text-synth":
        return make_text_synth(seq_len=seq_len, **kwargs)
    if key not in TEXT_SOURCES:
        raise DatasetError(f"unknown text dataset {name!r}: expected one of {', '.join(TEXT_DATASET_NAMES)}")
    spec = TEXT_SOURCES[key]
    paths = _fetch(key, Path(data_dir) if data_dir is not None else default_data_dir(), download)
    read = read_ag_news if key == "agnews" else (lambda p: read_trec(p, list(spec["classes"])))
    (a, b), (c, d) = read(paths["train"]), read(paths["test"])
    return make_splits(a, b, c, d, spec["classes"], spec["title"], seq_len, min_count, max_size)


# ---- word vectors --------------------------------------------------------------------------------
def load_glove(path, vocab: Vocab, dim: int = 300, seed: int = 0):
    """(len(vocab), dim) float32 embeddings from a GloVe-format text file (``word v1 ... v_dim`` a
    line). Words the file lacks get N(0, 1) rows (as an untrained embedding), <pad> a zero row.
    Returns (table, found): found = how many of the vocabulary's words the file had."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((len(vocab), dim)).astype(np.float32)
    table[PAD] = 0.0
    found, seen = 0, set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line, text in enumerate(f, 1):
            # The vector is the last `dim` fields: some published files have "words" with spaces
            # in them (glove.840B has e.g. 'to name@domain.com'); those lines name no vocabulary word.
            parts = text.rstrip("\n").rstrip(" ").split(" ")
            i = vocab.stoi.get(" ".join(parts[:-dim]))
            if i is None or i < len(SPECIALS) or i in seen:     # the first vector of a word wins
                continue
            try:
                table[i] = np.array(parts[-dim:], dtype=np.float32)
            except ValueError:
                raise DatasetError(f"{path}, line {line}: expected a word and {dim} numbers, got "
                                   f"{text[:60]!r}...: is it a {dim}-d GloVe file?") from None
            seen.add(i)
            found += 1
    if found == 0:   # (a file of another width names no word once its last `dim` fields are cut off)
        raise DatasetError(f"{path}: no word of the vocabulary found, reading a word and {dim} numbers a line: "
                           f"is it a {dim}-d GloVe-format file (word v1 ... v{dim})?")
    return table, found


# ---- batches ---------------------------------------------------------------------------------------
class TextBatches:
    """Batches of a TextDataset: (ids (B, L), y). Each batch is cut to its longest sentence, so
    short sentences cost less (the models accept any L up to their seq_len).

    train=True: a new shuffle every epoch from (seed, epoch), the last partial batch dropped, y the
    labels (N,) int64, or (N, C) smoothed one-hot float32 with ``smoothing`` > 0.
    train=False: in order, every sentence once, y int64 labels. The trainer's image loaders' interface
    (set_epoch, state_dict, close, mixup, wait_time), without any image augmentation.
    """
    mixup = None

    def __init__(self, dataset: TextDataset, batch_size: int, train: bool, seed: int = 0,
                 smoothing: float = 0.0):
        self.dataset, self.batch_size, self.train = dataset, int(batch_size), bool(train)
        self.seed, self.smoothing, self.epoch, self.wait_time = int(seed), float(smoothing), 0, 0.0

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state):
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def close(self):
        pass

    def __iter__(self):
        from minicct.data.loader import shuffle_rng
        from minicct.data.mixup import one_hot_smooth
        ds, n = self.dataset, len(self.dataset)
        order = shuffle_rng(self.seed, self.epoch).permutation(n) if self.train else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            ids = ds.tokens[idx]
            longest = max(1, int((ids != PAD).any(axis=0).nonzero()[0].max(initial=0)) + 1)
            y = ds.labels[idx]
            if self.train and self.smoothing > 0:
                y = one_hot_smooth(y, ds.num_classes, self.smoothing)
            yield np.ascontiguousarray(ids[:, :longest]), y
        self.epoch += 1


def text_loaders(train: TextDataset, test: TextDataset, batch_size=64, seed=0, eval_batch_size=256,
                 smoothing=0.0):
    """(training batches, evaluation batches) for the trainer."""
    return (TextBatches(train, batch_size, True, seed, smoothing),
            TextBatches(test, eval_batch_size, False))
