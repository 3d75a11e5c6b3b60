"""Captioning: the pretrained encoder's sanity, the feature cache's tensor equal to the serving path's, the decoder's
step equal to teacher forcing, scoring, exact resume, and the verified export (ONNX Runtime == torch, greedy
captions equal, meta.json accepted by the service's contract)."""

import numpy as np
import pytest
import torch

from service.artifact import META_FILE, Meta
from service.artifact.image import ImageSpec, image_tensor
from tests.conftest import TINY_CAPTIONER
from tests.support.data import FLICKR8K, FLICKR8K_FILES, need
from training.caption_data import SPECIAL_IDS, CaptionTokenizer, learn_tokenizer, read_split
from training.caption_eval import TorchCaptionStepper, decode, score
from training.captioner import Captioner, CaptionerConfig
from training.checkpoint import load_checkpoint, model_of
from training.config import load_config
from training.export_captioner import split_images
from training.feature_cache import image_features
from training.image_encoder import pretrained
from training.ort_captioner import OrtCaptioner, caption_images
from training.train import train

DOG_CLASSES = range(151, 269)  # ImageNet's dog breeds
SPEC = ImageSpec(128, 128)


@pytest.fixture(scope="module")
def cnn():
    need(*FLICKR8K_FILES)
    torch.set_num_threads(1)
    return pretrained()


def _dog_photos(n: int) -> list[bytes]:
    """The first n training images (by name) whose five captions all mention a dog."""
    train = read_split(FLICKR8K, "train")
    picked = [i for i, caps in enumerate(train.captions) if all("dog" in c.lower() for c in caps)][:n]
    return [train.image_bytes(i) for i in picked]


def test_encoder_recognises_dogs_not_grey(cnn):
    """ReLU6, TF padding and [-1, 1] scaling all right: most dog photos get a dog class, flat grey nothing confident
    (with swish instead of ReLU6 only ~18% of dog photos would)."""
    images = torch.from_numpy(np.stack([image_tensor(b, SPEC) for b in _dog_photos(12)]))
    with torch.no_grad():
        top = cnn(images).argmax(1)
        grey = cnn(torch.zeros(1, 3, 128, 128)).softmax(1).max().item()
    assert sum(int(t) in DOG_CLASSES for t in top) >= 7
    assert grey < 0.2


def test_encoder_batch_equals_alone_and_grid(cnn):
    images = torch.from_numpy(np.stack([image_tensor(b, SPEC) for b in _dog_photos(3)]))
    with torch.no_grad():
        together, alone = cnn.features(images), cnn.features(images[1:2])
    assert together.shape == (3, 1280, 4, 4)
    torch.testing.assert_close(together[1:2], alone, atol=1e-4, rtol=0)
    assert cnn.features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)


def test_feature_cache_is_the_serving_tensor_through_the_encoder(cnn, tmp_path):
    """Training's cached features come from image_tensor on the file's bytes, the function the server runs."""
    dev = read_split(FLICKR8K, "dev", limit=3)
    cached = image_features(FLICKR8K, dev.names, SPEC, tmp_path, progress=False)
    again = image_features(FLICKR8K, dev.names, SPEC, tmp_path, progress=False)  # read back from the cache file
    with torch.no_grad():
        direct = cnn.features(torch.from_numpy(split_images(dev, SPEC))).numpy()
    np.testing.assert_allclose(np.asarray(cached, np.float32), direct, atol=6 * 2**-11, rtol=0)  # float16 rounding
    np.testing.assert_array_equal(cached, again)


def test_step_by_step_equals_teacher_forcing():
    torch.manual_seed(0)
    for use_attention in (True, False):
        model = Captioner(CaptionerConfig(vocab_size=30, feature_size=12, n_embd=8, hidden_size=10, attn_size=6,
                                          use_attention=use_attention)).eval()
        features = torch.rand(2, 12, 2, 3)
        prev = torch.randint(4, 30, (2, 5))
        with torch.no_grad():
            logits, alphas = model(features, prev)
            memory, keys, h, c = model.encode(features)
            mask = torch.ones(2, 6, dtype=torch.bool)
            for t in range(5):
                step_logits, h, c, alpha = model.step(prev[:, t], h, c, memory, keys, mask)
                torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=0)
                torch.testing.assert_close(alpha, alphas[:, t], atol=1e-6, rtol=0)
        if not use_attention:
            torch.testing.assert_close(alphas, torch.full_like(alphas, 1 / 6))


def test_score_drops_punctuation_and_matches_references():
    """A caption equal to its references (but their final ".") scores BLEU 100; swapped captions score low. CIDEr
    weighs n-grams by how rare they are across the images, so it needs more than one image."""
    refs = [["A dog runs on the grass .", "A dog runs on the grass ."], ["Two dogs play in the snow !"] * 2]
    tok = CaptionTokenizer(learn_tokenizer([r for rs in refs for r in rs], 1))
    ids = [e[:-1].tolist() for e in tok.encode(["a dog runs on the grass", "two dogs play in the snow"], 10)]
    perfect = score(tok, ids, refs)
    assert perfect["bleu4"] == pytest.approx(100, abs=1e-4)
    swapped = score(tok, ids[::-1], refs)
    assert swapped["bleu1"] < 40 and swapped["cider"] < perfect["cider"] / 10


def _tiny_args(tmp_path, steps: int) -> list[str]:
    settings = {**TINY_CAPTIONER, "data.limit_images": 8, "batch_size": 32, "max_steps": steps, "eval_interval": steps,
                "checkpoint_interval": 3, "threads": 1, "data.cache_dir": tmp_path / "cache",
                "out_dir": tmp_path / f"run{steps}"}
    return [f"--{k}={v}" for k, v in settings.items()]


def test_resume_is_exact(tmp_path, monkeypatch):
    """The step-3 checkpoint of a 6-step run, resumed, gives the straight run's step-6 weights and validation:
    weights, optimizer, batch order across the epoch boundary, and RNGs (dropout) are all restored."""
    need(*FLICKR8K_FILES)
    import training.train as loop

    real_save = loop.save_checkpoint

    def save_and_keep_step_3(path, ckpt):
        real_save(path, ckpt)
        if ckpt["step"] == 3:
            real_save(tmp_path / "step3.pt", ckpt)

    monkeypatch.setattr(loop, "save_checkpoint", save_and_keep_step_3)
    straight = train(load_config(None, _tiny_args(tmp_path, 6)), progress=False)
    ckpt = load_checkpoint(tmp_path / "step3.pt")
    assert ckpt["task"]["epoch"] < straight["task"]["epoch"]  # 40 captions, 32 a batch: a new epoch after step 3
    ckpt["config"]["out_dir"] = str(tmp_path / "resumed")
    torch.save(ckpt, tmp_path / "step3.pt")
    resumed = train(resume=tmp_path / "step3.pt", progress=False)
    assert resumed["step"] == 6
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert resumed["metrics"]["val_loss"] == straight["metrics"]["val_loss"]


@pytest.fixture(scope="module")
def tiny(model_repo):
    directory = model_repo / "tiny-captioner" / "1"
    ckpt = load_checkpoint(model_repo.parent / "runs" / "tiny-captioner" / "last.pt")
    model, _ = model_of(ckpt)
    return directory, model


def test_export_meta_follows_the_contract(tiny):
    directory, model = tiny
    meta = Meta.load(directory / META_FILE)
    c = meta.captioner
    assert meta.kind == "captioner" and meta.cell == "lstm"
    assert (c["image"]["height"], c["image"]["width"], c["grid"]["rows"], c["grid"]["cols"]) == (128, 128, 4, 4)
    assert meta.sizes["memory_size"] == 1280 and meta.sizes["vocab_size"] == model.cfg.vocab_size
    assert meta.evaluation["export_checks"]["greedy_dev_equal_to_torch"] == 12
    assert set(meta.evaluation["captions"]["test"]["beam3"]["all"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider"}


def test_onnx_runtime_equals_torch_and_greedy_captions_agree(tiny, cnn):
    """The artifact's graphs, run by ONNX Runtime alone, against the checkpoint's torch model and the CNN on the
    same image tensors: encoder outputs, a few decoder steps, and greedy captions word for word."""
    directory, model = tiny
    cap = OrtCaptioner(directory)
    images = split_images(read_split(FLICKR8K, "test", limit=5), SPEC)
    ref = TorchCaptionStepper(model, cnn)
    want, got = ref.encode_images(images), cap.stepper.encode_images(images)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
    memory, keys, state = want
    mask = np.ones(memory.shape[:2], dtype=bool)
    prev = np.full(5, SPECIAL_IDS.bos)
    for _ in range(3):
        a, b = ref.step(prev, state, memory, keys, mask), cap.stepper.step(prev, state, memory, keys, mask)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(y, x, atol=1e-4, rtol=0)
        state, prev = a[1], a[0].argmax(1)
    assert caption_images(cap.stepper, images, cap.specials, cap.max_tokens) == decode(ref, *want, max_tokens=cap.max_tokens)
