"""Text data: tokenizer, vocabulary, the synthetic task (its labels follow its rule, checked from
the words), AG News / TREC download and parsing without the network, GloVe, the batches, and a
tiny training run through the trainer."""
import hashlib
import io

import numpy as np
import pytest

from minicct.data import cifar

from minicct.data import get_dataset
from minicct.data import text as T
from minicct.data.datasets import DatasetError


def test_tokenize():
    assert T.tokenize("Don't stop -- the 'U.S.' won!") == ["don't", "stop", "the", "u", "s", "won"]
    assert T.tokenize("Students' O\u2019Neill scored in the 90's, 3-1") == [
        "students", "o'neill", "scored", "in", "the", "90's", "3", "1"]
    assert T.tokenize("  ''  --  ") == []
    assert T.tokenize("snake_case Café") == ["snake", "case", "café"]


def test_vocab_specials_order_min_count_max_size():
    sents = [["b", "a", "c"], ["a", "b"], ["a", "d"], ["<unk>"]]
    v = T.build_vocab(sents)
    assert v.itos == ["<pad>", "<unk>", "a", "b", "c", "d"]       # by count, ties alphabetical
    assert T.build_vocab(sents, min_count=2).itos == ["<pad>", "<unk>", "a", "b"]
    assert T.build_vocab(sents, max_size=1).itos == ["<pad>", "<unk>", "a"]
    assert v.encode(["a", "zzz", "d"]) == [2, 1, 5]
    assert v.decode([3, 2, 0, 0]) == "b a"
    with pytest.raises(ValueError, match="min_count"):
        T.build_vocab(sents, min_count=0)


def test_encode_batch_pads_cuts_and_never_leaves_a_sentence_empty():
    v = T.build_vocab([["a", "b", "c"]])
    ids = T.encode_batch([["a", "b"], ["c", "a", "b", "c"], []], v, 3)
    np.testing.assert_array_equal(ids, [[2, 3, 0], [4, 2, 3], [T.UNK, 0, 0]])
    assert ids.dtype == np.int64


# ---- the synthetic task ----------------------------------------------------------------------------
def rule(words):
    """The label from the words alone: the topic word's family, and whether 'not' is right before it."""
    for t, family in enumerate(T.SYNTH_TOPICS.values()):
        hits = [i for i, w in enumerate(words) if w in family]
        if hits:
            assert len(hits) == 1
            return 2 * t + int(hits[0] > 0 and words[hits[0] - 1] == "not")
    raise AssertionError(f"no topic word in {words}")


def test_text_synth_labels_follow_the_rule_and_need_order():
    train, test = T.make_text_synth(n_train=600, n_test=200, seed=3)
    for ds in (train, test):
        for ids, y in zip(ds.tokens, ds.labels):
            assert rule(ds.vocab.decode(ids).split()) == y
    words = [train.vocab.decode(ids).split() for ids in train.tokens]
    lengths = np.array([len(w) for w in words])
    assert lengths.min() <= 6 and lengths.max() >= 38            # lengths vary over the range
    assert np.bincount(train.labels).min() > 100                 # four balanced classes
    # Every sentence has exactly one "not": only where it stands tells the negation.
    assert all(w.count("not") == 1 for w in words)


def test_text_synth_is_deterministic_and_splits_differ():
    a, b = T.make_text_synth(n_train=50, n_test=50, seed=1), T.make_text_synth(n_train=50, n_test=50, seed=1)
    np.testing.assert_array_equal(a.train.tokens, b.train.tokens)
    assert not np.array_equal(a.train.tokens, a.test.tokens)
    assert not np.array_equal(a.train.tokens, T.make_text_synth(n_train=50, n_test=50, seed=2).train.tokens)
    assert get_dataset("text-synth", n_train=20, n_test=10).train.num_classes == 4


# ---- downloads, without the network -------------------------------------------------------------------
AG_TRAIN = b'"3","Wall St. Bears","Reuters - Short-sellers\\\\are back."\n"2","Gold!","A 3-1 win"\n'
AG_TEST = b'"1","Talks","Leaders met on Monday."\n"4","Lasers","A win, faster."\n'
TREC_TRAIN = "DESC:manner How did serfdom develop ?\nHUM:ind Who was Caf\xe9 's owner ?\n".encode("latin-1")
TREC_TEST = b"NUM:date When was it ?\nLOC:city Where is it ?\n"


@pytest.fixture
def fake_web(monkeypatch):
    """Serve fixed bytes for each source URL, with the sources' digests set to match them."""
    served = {}
    sources = {}
    for name, files in (("agnews", {"train": AG_TRAIN, "test": AG_TEST}),
                        ("trec", {"train": TREC_TRAIN, "test": TREC_TEST})):
        spec = dict(T.TEXT_SOURCES[name])
        spec["files"] = {}
        for split, (url, alg, _) in T.TEXT_SOURCES[name]["files"].items():
            served[url] = files[split]
            spec["files"][split] = (url, alg, hashlib.new(alg, files[split]).hexdigest())
        sources[name] = spec
    monkeypatch.setattr(T, "TEXT_SOURCES", sources)
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        if url not in served:
            raise OSError("no network")
        return io.BytesIO(served[url])
    monkeypatch.setattr(cifar, "_urlopen", urlopen)     # the one download (data.cifar)
    return served, calls


def test_ag_news_downloads_checks_and_parses(tmp_path, fake_web):
    train, test = T.load_text_dataset("agnews", data_dir=tmp_path)
    assert train.classes == ["World", "Sports", "Business", "Sci/Tech"]
    np.testing.assert_array_equal(train.labels, [2, 1])
    assert train.vocab.decode(train.tokens[0]) == "wall st bears reuters short sellers are back"
    assert test.vocab.decode(test.tokens[1]) == "<unk> a win <unk>"    # new words: <unk>
    assert sorted(p.name for p in (tmp_path / "ag_news").iterdir()) == ["test.csv", "train.csv"]
    _, calls = fake_web
    n = len(calls)
    T.load_text_dataset("agnews", data_dir=tmp_path)                       # second time: from disk
    assert len(calls) == n


def test_trec_coarse_labels_latin1(tmp_path, fake_web):
    train, test = T.load_text_dataset("trec", data_dir=tmp_path)
    assert train.classes == ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    np.testing.assert_array_equal(train.labels, [2, 3])
    np.testing.assert_array_equal(test.labels, [5, 4])
    assert "café" in train.vocab.stoi


def test_a_bad_download_leaves_nothing_and_says_so(tmp_path, fake_web, monkeypatch):
    served, _ = fake_web
    url = T.TEXT_SOURCES["agnews"]["files"]["train"][0]
    monkeypatch.setitem(served, url, AG_TRAIN[:-5])                        # cut short
    with pytest.raises(DatasetError, match="MD5"):
        T.load_text_dataset("agnews", data_dir=tmp_path)
    assert not list((tmp_path / "ag_news").iterdir())


def test_a_corrupt_file_on_disk_is_refused(tmp_path, fake_web):
    T.load_text_dataset("trec", data_dir=tmp_path)
    path = tmp_path / "trec" / "TREC_10.label"
    path.write_bytes(TREC_TEST + b"x")
    with pytest.raises(DatasetError, match="SHA256.*Delete it"):
        T.load_text_dataset("trec", data_dir=tmp_path)


def test_no_network_and_no_download_give_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "_urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(DatasetError, match="could not be fetched.*no network") as e:
        T.load_text_dataset("agnews", data_dir=tmp_path)
    assert "b1a00f826fdfbd249f79597b59e1dc12" in str(e.value)              # the checksum to check by hand
    with pytest.raises(DatasetError, match="download=False"):
        T.load_text_dataset("trec", data_dir=tmp_path, download=False)
    with pytest.raises(DatasetError, match="unknown text dataset"):
        T.load_text_dataset("imdb")


def test_malformed_rows_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('"5","x","y"\n')
    with pytest.raises(DatasetError, match="line 1"):
        T.read_ag_news(bad)
    bad.write_text("What is it ?\n")
    with pytest.raises(DatasetError, match="COARSE:fine"):
        T.read_trec(bad, ["ABBR"])


# ---- GloVe ------------------------------------------------------------------------------------------
def test_load_glove(tmp_path):
    v = T.build_vocab([["cat", "dog", "emu"]])
    f = tmp_path / "vec.txt"
    f.write_text("dog 1 2 3\nzebra 0 0 0\ncat -1 0.5 2e-1\n")
    table, found = T.load_glove(f, v, dim=3)
    assert table.shape == (5, 3) and table.dtype == np.float32 and found == 2
    np.testing.assert_array_equal(table[v.stoi["dog"]], [1, 2, 3])
    np.testing.assert_allclose(table[v.stoi["cat"]], [-1, 0.5, 0.2])
    assert np.all(table[T.PAD] == 0) and np.abs(table[v.stoi["emu"]]).sum() > 0   # unknown: random
    f.write_text("dog 1 2\n")
    with pytest.raises(DatasetError, match="3 numbers"):          # a 2-d file read as 3-d
        T.load_glove(f, v, dim=3)


# ---- batches ----------------------------------------------------------------------------------------
def test_batches_cut_to_the_longest_shuffle_by_epoch_and_cover_the_test_set():
    train, test = T.make_text_synth(n_train=100, n_test=70, seed=0)
    tb, eb = T.text_loaders(train, test, batch_size=32, seed=5, eval_batch_size=32)
    assert len(tb) == 3 and len(eb) == 3
    first = [(x.copy(), y.copy()) for x, y in tb]
    for x, y in first:
        assert x.shape[0] == 32 and x.dtype == np.int64 and y.shape == (32,)
        assert (x[:, -1] != 0).any()                                    # cut to its longest sentence
        assert x.shape[1] == (x != 0).sum(axis=1).max()
    tb.set_epoch(0)
    again = [x for x, _ in tb]
    assert all(np.array_equal(a, b) for (a, _), b in zip(first, again))    # (seed, epoch) → same order
    assert tb.epoch == 1 and not np.array_equal(next(iter(tb))[0], first[0][0])
    seen = np.concatenate([y for _, y in eb])
    np.testing.assert_array_equal(seen, test.labels)
    soft = next(iter(T.TextBatches(train, 8, True, smoothing=0.1)))[1]
    assert soft.shape == (8, 4) and np.allclose(soft.sum(1), 1) and soft.max() == pytest.approx(0.925)


def test_trainer_runs_a_tiny_text_model(tmp_path, capsys):
    from minicct import train
    from minicct.training.errors import run_cli
    argv = ["text-synth", "--model-kwargs", "embedding_dim=16", "num_layers=1", "word_embedding_dim=8",
            "--epochs", "1", "--train-limit", "128", "--test-limit", "64", "--batch-size", "32",
            "--workers", "0", "--output", str(tmp_path)]
    code = run_cli(train.main, argv, prog="minicct.train")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "text_cct_2_k2" in out and "epoch   0/1" in out and (tmp_path / "last.npz").is_file()


def test_evaluate_rebuilds_a_text_model_from_its_checkpoint(tmp_path, capsys):
    """The checkpoint keeps what the data told the model (vocabulary size, length), so
    python -m minicct.evaluate rebuilds it and finds the top-1 the run reported."""
    from minicct import evaluate, train
    from minicct.training.checkpoint import load_checkpoint
    from minicct.training.errors import run_cli
    argv = ["text-synth", "--model-kwargs", "embedding_dim=16", "num_layers=1", "word_embedding_dim=8",
            "--epochs", "1", "--train-limit", "128", "--test-limit", "64", "--batch-size", "32",
            "--workers", "0", "--output", str(tmp_path)]
    assert run_cli(train.main, argv, prog="minicct.train") == 0
    capsys.readouterr()
    best = load_checkpoint(tmp_path / "best.npz")
    assert best["model"]["data_kwargs"]["vocab_size"] > 2
    code = run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "best.npz"), "--limit", "64"],
                   prog="minicct.evaluate")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"top-1 {best['metrics']['test_top1']:.2f}%" in out


def test_text_datasets_bring_their_presets():
    from minicct.training.config import merge, parse_flags
    for name in ("text-synth", "agnews", "trec"):
        v = merge(parse_flags([name]))[0]
        assert v["preset"] == name and v["model"].startswith("text_cct_") and v["aa"] == "none"
        assert v["mixup"] == v["cutmix"] == v["reprob"] == 0.0


def test_glove_vectors_are_loaded_and_stay_frozen(tmp_path, capsys):
    """--glove PATH: the words the file has start from its vectors and training leaves them as they are."""
    from minicct import train
    from minicct.data.text import load_text_dataset
    from minicct.training.checkpoint import load_checkpoint
    from minicct.training.errors import run_cli
    vocab = load_text_dataset("text-synth")[0].vocab
    words = [vocab.itos[i] for i in range(2, 8)]
    rng = np.random.default_rng(0)
    vectors = {w: rng.standard_normal(8).round(4) for w in words}
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))
    argv = ["text-synth", "--model-kwargs", "embedding_dim=16", "num_layers=1", "word_embedding_dim=8",
            "--glove", str(glove), "--epochs", "1", "--train-limit", "128", "--test-limit", "64",
            "--batch-size", "32", "--workers", "0", "--output", str(tmp_path / "run")]
    assert run_cli(train.main, argv, prog="minicct.train") == 0, capsys.readouterr().err
    assert f"{len(words)} of the" in capsys.readouterr().out
    table = load_checkpoint(tmp_path / "run" / "last.npz")["model"]["state"]["embedder.weight"]
    for i, w in enumerate(words, 2):
        np.testing.assert_allclose(table[i], vectors[w], rtol=1e-6)


@pytest.mark.parametrize("extra,words", [(["--glove", "nope.txt"], "no such file"),
                                          (["--model", "cct_2_3x2_32"], "text models")])
def test_glove_bad_uses_are_one_line(tmp_path, capsys, extra, words):
    from minicct import train
    from minicct.training.errors import run_cli
    glove = tmp_path / "g.txt"
    glove.write_text("a 1 2\n")
    argv = ["text-synth", "--glove", str(glove)] + extra
    assert run_cli(train.main, argv, prog="minicct.train") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--glove" in err and words in err


def test_glove_lines_whose_word_has_spaces_are_read_from_the_end(tmp_path):
    """Published GloVe files have 'words' with spaces (glove.840B: 'to name@domain.com 0.1 ...'):
    the vector is the last dim fields, such a line names no vocabulary word, the first vector wins."""
    from minicct.data.text import Vocab, load_glove
    vocab = load_text_vocab()
    word = vocab.itos[2]
    path = tmp_path / "g.txt"
    path.write_text(f"{word} name@domain.com 9 9 9\n{word} 1 2 3\n{word} 4 5 6\n")
    table, found = load_glove(path, vocab, dim=3)
    assert found == 1 and table[2].tolist() == [1.0, 2.0, 3.0]


def load_text_vocab():
    from minicct.data.text import load_text_dataset
    return load_text_dataset("text-synth")[0].vocab


def test_predict_refuses_a_text_checkpoint_in_one_line(tmp_path, capsys):
    from minicct import predict, train
    from minicct.training.errors import run_cli
    argv = ["text-synth", "--model-kwargs", "embedding_dim=16", "num_layers=1", "word_embedding_dim=8",
            "--epochs", "1", "--train-limit", "64", "--test-limit", "32", "--batch-size", "32",
            "--workers", "0", "--output", str(tmp_path / "run")]
    assert run_cli(train.main, argv, prog="minicct.train") == 0
    capsys.readouterr()
    img = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(img)
    assert run_cli(predict.main, [str(img), "--checkpoint", str(tmp_path / "run" / "best.npz")],
                   prog="minicct.predict") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "text model" in err


def test_the_data_command_refuses_text_in_one_line(capsys):
    from minicct.data.__main__ import main
    from minicct.cli import run_cli
    assert run_cli(main, ["text-synth"], prog="minicct.data") == 2
    assert "text dataset" in capsys.readouterr().err
