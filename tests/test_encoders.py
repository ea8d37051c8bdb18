"""The Encoder interface (read -> collate -> encode, fingerprint, spec) on tiny random-init models of every
family (timm, transformers, open_clip), the factory's sources, the weights resolver's errors and the
registry. Nothing is downloaded."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_IMAGE_BACKBONE
from mlhead.encoders import ENCODERS, PRESETS, BadInput, create_encoder, from_spec, list_encoders
from mlhead.errors import BackboneError, ConfigError, DependencyError
from mlhead.registry import Registry

TEXTS = ["alpha beta cat", "stock market news dog dog bird", "gamma"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A local open_clip folder: tiny ViT config (open_clip_config.json) + seeded random weights."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_clip")
    cfg = {"model_cfg": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                         "patch_size": 8, "head_width": 16},
                         "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}},
           "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(1)
    clip = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_file(clip.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(48, 40), (30, 70), (64, 64)]):
        paths.append(folder / f"im{i}.png")
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(paths[-1])
    return paths


def _inputs(enc, image_files):
    return image_files if enc.modality == "image" else TEXTS


def _encoders(tiny_text_model, tiny_clip):
    return [create_encoder(TINY_IMAGE_BACKBONE, random_init=True),
            create_encoder(str(tiny_text_model), pooling="mean"),
            create_encoder(f"open_clip:{tiny_clip}")]


def test_interface_on_every_family(tiny_text_model, tiny_clip, image_files):
    """read -> collate -> encode gives N x D float32; read/collate pickle without the model."""
    for enc in _encoders(tiny_text_model, tiny_clip):
        inputs = _inputs(enc, image_files)
        read, collate = pickle.loads(pickle.dumps(enc.read)), pickle.loads(pickle.dumps(enc.collate))
        assert len(pickle.dumps(enc.read)) + len(pickle.dumps(enc.collate)) < 100_000  # no model inside
        batch = collate([read(x) for x in inputs])
        emb = enc.encode(batch)
        assert emb.dtype == torch.float32 and emb.shape == (len(inputs), enc.dim) and torch.isfinite(emb).all()
        assert torch.equal(emb, enc.encode(enc.collate([enc.read(x) for x in inputs])))
        fp = enc.fingerprint()
        assert set(fp) == {"backbone", "weights_sha256", "preprocessing"} and fp["backbone"] == enc.name
        assert fp["preprocessing"]["kind"] == enc.kind and json.loads(json.dumps(fp)) == fp  # JSON-able
        assert enc.spec()["dim"] == enc.dim and enc.spec()["modality"] == enc.modality


def test_open_clip_embeds_its_image_tower(tiny_clip, image_files):
    """open_clip's own eval transform + encode_image, with the uint8 worker split in between."""
    import open_clip

    enc = create_encoder(str(tiny_clip))  # a bare folder: open_clip claims it by open_clip_config.json
    assert enc.family == "open_clip" and enc.dim == 16 and len(enc.weights_sha256) == 64
    clip = open_clip.create_model(f"local-dir:{tiny_clip}")
    clip.eval()
    img = Image.open(image_files[1]).convert("RGB")
    with torch.no_grad():
        ref = clip.encode_image(enc.transform(img)[None].contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(enc.encode(enc.collate([enc.read(image_files[1])])), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["timm", "hf", "open_clip", "open_clip-random"])
def test_spec_round_trip_gives_identical_embeddings(family, tiny_text_model, tiny_clip, image_files):
    name, kw = {"timm": (TINY_IMAGE_BACKBONE, {"random_init": True}),
                "hf": (str(tiny_text_model), {"pooling": "mean", "max_length": 8}),
                "open_clip": (f"open_clip:{tiny_clip}", {}),
                "open_clip-random": (f"open_clip:{tiny_clip}", {"random_init": True, "normalize": True})}[family]
    torch.manual_seed(7)  # the global RNG must not matter: encoders are built under a fixed seed
    enc = create_encoder(name, **kw)
    torch.manual_seed(123)
    again = from_spec(json.loads(json.dumps(enc.spec())))  # as stored in a cache's attrs
    assert again.fingerprint() == enc.fingerprint() and type(again) is type(enc)
    batch = enc.collate([enc.read(x) for x in _inputs(enc, image_files)])
    assert torch.equal(again.encode(batch), enc.encode(batch))


def test_from_spec_refuses_other_weights(tiny_clip, tmp_path):
    spec = create_encoder(f"open_clip:{tiny_clip}").spec()
    other = tmp_path / "other.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_clip / "open_clip_model.safetensors"))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, str(other))
    with pytest.raises(BackboneError, match="weights_sha256.*--weights PATH"):
        from_spec(spec, weights=other)
    with pytest.raises(BackboneError, match="preprocessing kind 'nope'"):
        from_spec({"backbone": "x", "preprocessing": {"kind": "nope"}})


def test_from_spec_rebuilds_a_real_preset_with_its_weights():
    from conftest import shared_path

    w = shared_path("weights", "mobilenetv2_100")
    enc = create_encoder("mobilenetv2_100", weights=w)
    assert enc.preprocessing["model_kwargs"] == {"pad_type": "same"} and enc.preprocessing["mean"] == [0.5] * 3
    again = from_spec(enc.spec(), weights=w / "model.safetensors")  # a bare file: data config from the spec
    assert again.fingerprint() == enc.fingerprint()


def test_source_prefixes_and_folders(tiny_text_model, tiny_clip):
    bare = create_encoder(TINY_IMAGE_BACKBONE, random_init=True)
    assert create_encoder(f"timm:{TINY_IMAGE_BACKBONE}", random_init=True).fingerprint() == bare.fingerprint()
    folder = create_encoder(str(tiny_text_model))
    assert folder.family == "hf" and folder.name == tiny_text_model.name
    assert create_encoder(f"hf:{tiny_text_model}").fingerprint() == folder.fingerprint()
    named = create_encoder("my-bert", weights=tiny_text_model)  # any name with a transformers --weights folder
    assert named.family == "hf" and named.name == "my-bert" and named.preprocessing["source"] == "my-bert"
    assert create_encoder(str(tiny_clip)).fingerprint() == create_encoder(f"open_clip:{tiny_clip}").fingerprint()
    assert set(PRESETS.names()) == {"mobilenetv2_100", "tresnet_m", "distilbert-base-uncased", "minilm"}
    assert ENCODERS.names() == ["hf", "open_clip", "timm"] and "timm:" in list_encoders()
    assert list_encoders("mobile*") == ["mobilenetv2_100"]


def test_options_pruned_checked_and_scoped(tiny_text_model):
    a = create_encoder(TINY_IMAGE_BACKBONE, random_init=True, pooling="mean", max_length=9)  # text-only: ignored
    assert a.fingerprint() == create_encoder(TINY_IMAGE_BACKBONE, random_init=True, pooling=None).fingerprint()
    with pytest.raises(ConfigError, match="unknown encoder option.*poling.*valid:.*pooling"):
        create_encoder(TINY_IMAGE_BACKBONE, random_init=True, poling="mean")
    with pytest.raises(ConfigError, match="--pooling 'max' invalid"):
        create_encoder(str(tiny_text_model), pooling="max")
    with pytest.raises(BackboneError, match="unknown backbone 'no_such_net'.*mobilenetv2_100"):
        create_encoder("no_such_net", random_init=True)


def test_weights_errors_name_the_file_and_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(BackboneError, match=f"--weights {missing}: no such file"):
        create_encoder("mobilenetv2_100", weights=missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BackboneError, match=f"--weights {garbage}: cannot read weights"):
        create_encoder(TINY_IMAGE_BACKBONE, weights=garbage)
    other = tmp_path / "other.pth"
    torch.save(create_encoder("test_resnet", random_init=True).model.state_dict(), other)
    with pytest.raises(BackboneError, match=f"--weights {other} do not fit timm '{TINY_IMAGE_BACKBONE}'"):
        create_encoder(TINY_IMAGE_BACKBONE, weights=other)
    with pytest.raises(BackboneError) as e:
        create_encoder("mobilenetv2_100")
    msg = str(e.value)
    assert "offline" in msg and "--weights PATH (not given)" in msg and "hub id 'mobilenetv2_100'" in msg


def test_open_clip_missing_is_a_dependency_error(monkeypatch, tiny_clip):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` now raises ImportError
    with pytest.raises(DependencyError, match=r"pip install 'mlhead\[open_clip\]'"):
        create_encoder(f"open_clip:{tiny_clip}")


def test_text_rows_and_image_rows_fail_clearly(tiny_text_model, tmp_path):
    enc = create_encoder(str(tiny_text_model))
    with pytest.raises(BadInput, match="empty text"):
        enc.read("  ")
    assert enc.describe("a long text") == "text"
    img = create_encoder(TINY_IMAGE_BACKBONE, random_init=True)
    with pytest.raises(FileNotFoundError):
        img.read(tmp_path / "missing.png")
    assert img.describe(tmp_path / "x.png") == str(tmp_path / "x.png")


def test_embed_runs_any_family(tmp_path, image_table, tiny_clip):
    """embed() only sees the Encoder interface: an open_clip folder embeds like a timm model."""
    from mlhead.cache import open_cache
    from mlhead.embed import EmbedConfig, embed

    res = embed(EmbedConfig("table", image_table, tmp_path / "cache", backbone=str(tiny_clip), precision="fp32",
                            batch_size=8, workers=0, dataset_options={"image_column": "image", "id_column": "id"}))
    c = open_cache(res.path)
    X, _, ids = c.load("train")
    assert X.shape[1] == 16 and c.attrs["backbone"] == tiny_clip.name
    enc = from_spec(c.attrs)  # a cache's attrs are a spec
    files = {p.stem: p for p in (image_table.parent / "images").iterdir()}
    emb = enc.encode(enc.collate([enc.read(files[i]) for i in ids[:4]]))
    torch.testing.assert_close(X[:4], emb.half().float(), rtol=0, atol=0)


def test_registry_refuses_duplicates_and_lists_valid_names():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg.get("b") is b and "a" in reg and len(reg) == 2 and reg.names("a*") == ["a"]
    with pytest.raises(ConfigError, match="widget 'a' is already registered"):
        reg.register("a", 3)
    with pytest.raises(ConfigError, match="unknown widget 'c'; valid: a, b"):
        reg.get("c")
