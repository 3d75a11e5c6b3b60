"""Data: corpus split, vocabulary, batched truncated-BPTT windows, sentence files and their errors."""

import numpy as np
import pytest

from service.artifact.corpus import DataError, read_sentences
from service.artifact.tokenizer import Tokenizer, split_words
from tests.support.data import SHAKESPEARE, SST2, SST2_SENTENCES
from training.data import BPTTBatches, CharCorpus, pad_batch

LABELS = {"0": "negative", "1": "positive"}


def test_split_is_first_90_percent_and_vocab_comes_from_train_only(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abababababababababZQ")  # 20 chars: 'Z' and 'Q' only in the last 10%
    c = CharCorpus.from_file(path, val_fraction=0.1)
    assert c.tokenizer.decode(c.train) == "abababababababababab"[:18]
    assert c.tokenizer.tokens[c.tokenizer.unk_id] == "<unk>"
    assert "Z" not in c.tokenizer.tokens
    assert list(c.val) == [c.tokenizer.unk_id] * 2


@pytest.mark.usefixtures("shared_data")
def test_real_corpus_split_is_deterministic():
    a, b = CharCorpus.from_file(SHAKESPEARE), CharCorpus.from_file(SHAKESPEARE)
    assert a.tokenizer == b.tokenizer and np.array_equal(a.val, b.val)
    n = len(SHAKESPEARE.read_text())
    assert len(a.train) == int(n * 0.9) and len(a.train) + len(a.val) == n


def test_bptt_windows_follow_each_other_in_the_text():
    data = np.arange(1000)
    b = BPTTBatches(data, batch_size=4, seq_len=10)
    x0, y0 = b.window(0)
    x1, _ = b.window(1)
    assert x0.shape == (4, 10)
    assert np.array_equal(y0, x0 + 1)  # targets are the next character
    assert np.array_equal(x1[:, 0], x0[:, -1] + 1)  # window 1 continues where window 0 stopped
    assert np.array_equal(x0[:, 0], np.arange(4) * b.n)  # streams start at contiguous blocks
    windows = list(b.windows(offset=3))
    assert windows[-1][2].max() <= 999 and len(windows) == (b.n - 3) // 10


def test_corpus_shorter_than_one_window_is_refused():
    with pytest.raises(DataError, match="shorter than one window"):
        BPTTBatches(np.arange(50), batch_size=8, seq_len=10, source="tiny.txt")


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "e.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"e\.txt: the corpus is empty"):
        CharCorpus.from_file(tmp_path / "e.txt")


def test_non_utf8_names_file_line_and_column(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"hello\nwor\xffld\n")
    with pytest.raises(DataError, match=r"bad\.txt:2:4: not UTF-8 \(byte 0xff\)"):
        CharCorpus.from_file(tmp_path / "bad.txt")


def test_tsv_errors_name_file_and_line(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("sentence\tlabel\ngood film\t1\nno label here\n")
    with pytest.raises(DataError, match=r"s\.tsv:3: row has no label"):
        read_sentences(p, LABELS)
    p.write_text("sentence\tlabel\ngood film\t1\nodd\t7\n")
    with pytest.raises(DataError, match=r"s\.tsv:3: label '7' is not in the label set"):
        read_sentences(p, LABELS)
    p.write_text("text\tscore\nx\t1\n")
    with pytest.raises(DataError, match="header must name"):
        read_sentences(p, LABELS)


def test_label_line_errors(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 fine\n2 what\n")
    with pytest.raises(DataError, match=r"s\.txt:2: label '2'"):
        read_sentences(p, LABELS)
    p.write_text("1\n")
    with pytest.raises(DataError, match=r"s\.txt:1: line has no sentence"):
        read_sentences(p, LABELS)


@pytest.mark.usefixtures("shared_data")
def test_real_sst2_files_read_with_documented_counts():
    # Counts from ../shared/data/*/SOURCE.txt.
    train = read_sentences(SST2 / "train.tsv", LABELS)
    assert len(train.texts) == 67349 and np.bincount(train.labels).tolist() == [29780, 37569]
    dev = read_sentences(SST2 / "dev.tsv", LABELS)
    assert len(dev.texts) == 872 and np.bincount(dev.labels).tolist() == [428, 444]
    kim = read_sentences(SST2_SENTENCES / "stsa.binary.train", LABELS)
    assert len(kim.texts) == 6920 and np.bincount(kim.labels).tolist() == [3310, 3610]


def test_word_split_matches_sst_tokenisation():
    assert split_words("Wasn't it GREAT? It's a re-imagining.") == [
        "was", "n't", "it", "great", "?", "it", "'s", "a", "re-imagining", "."]
    sst = "it 's a charming and often affecting journey ."
    assert split_words(sst) == sst.split()


def test_word_tokenizer_min_freq_and_unknown_and_json_round_trip(tmp_path):
    tok = Tokenizer.build(["a", "a", "b", "c", "c", "c"], level="word", min_freq=2, with_pad=True)
    assert tok.tokens == ("<pad>", "<unk>", "c", "a")
    assert tok.encode("a b c zzz").tolist() == [3, 1, 2, 1]
    tok.save(tmp_path / "t.json")
    assert Tokenizer.load(tmp_path / "t.json") == tok


def test_pad_batch_pads_at_the_end():
    tokens, lengths = pad_batch([np.array([5, 6, 7]), np.array([8]), np.array([], dtype=np.int64)], pad_id=0)
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 1]
