"""Seeded data (SPEC §4): reproducible, seed-dependent, and clear errors for unusable corpora."""

import numpy as np
import pytest

from harness.contract.spec import param_shapes
from harness.errors import LoopbenchError
from harness.scoring import data
from tests.helpers import tiny_task


def test_the_default_corpus_is_pydoc_topics_in_key_order():
    from pydoc_data.topics import topics

    corpus = data.load_corpus()
    assert corpus.tokens.tobytes().decode("utf-8") == "".join(topics[k] for k in sorted(topics))
    assert len(corpus.train) == int(0.9 * len(corpus.tokens))
    assert len(corpus.train) + len(corpus.val) == len(corpus.tokens)
    assert len(corpus.sha256) == 64


def test_same_seed_same_data_other_seed_other_data():
    task, corpus = tiny_task(), data.load_corpus()
    a, b, c = (data.make_batches(corpus, task, s) for s in (11, 11, 12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    pa, pb, pc = (data.init_params(task, s) for s in (11, 11, 12))
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name])
    assert not np.array_equal(pa["wte"], pc["wte"])


def test_batches_are_windows_of_the_training_split():
    task, corpus = tiny_task(), data.load_corpus()
    batches = data.make_batches(corpus, task, 3)
    assert batches.shape == (task.steps, task.batch_size, task.ctx_len + 1)
    assert np.issubdtype(batches.dtype, np.integer) and not batches.flags.writeable
    train = corpus.train.tobytes()
    for window in batches[:3].reshape(-1, task.ctx_len + 1):
        assert bytes(window.astype(np.uint8)) in train


def test_initial_parameters_follow_the_table():
    task = tiny_task(n_layer=3)
    params = data.init_params(task, 0)
    assert {k: v.shape for k, v in params.items()} == param_shapes(task)
    assert all(v.dtype == np.float64 for v in params.values())
    np.testing.assert_array_equal(params["h0.ln1.g"], 1.0)
    np.testing.assert_array_equal(params["h2.fc.b"], 0.0)
    assert params["wte"].std() == pytest.approx(0.02, rel=0.05)
    assert params["h1.proj.w"].std() == pytest.approx(0.02 / np.sqrt(6), rel=0.1)
    assert params["h1.fcproj.w"].std() == pytest.approx(0.02 / np.sqrt(6), rel=0.1)


def test_eval_windows_are_fixed_and_from_the_validation_split():
    task, corpus = tiny_task(), data.load_corpus()
    w1, w2 = data.eval_windows(corpus, task), data.eval_windows(corpus, task)
    np.testing.assert_array_equal(w1, w2)
    assert bytes(w1[0].astype(np.uint8)) in corpus.val.tobytes()


def test_a_corpus_shorter_than_one_window_is_refused(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(LoopbenchError, match="too short"):
        data.make_batches(data.load_corpus(short), tiny_task(), 0)


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(LoopbenchError, match="not UTF-8"):
        data.load_corpus(blob)


def test_a_missing_corpus_is_refused(tmp_path):
    with pytest.raises(LoopbenchError, match="not found"):
        data.load_corpus(tmp_path / "nothing.txt")
