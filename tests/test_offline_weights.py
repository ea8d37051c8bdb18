"""Without network and without --weights, building a pretrained encoder fails within seconds with the
how-to, not after ~1 minute of hub download retries (issue #16). The network is cut by patching
``socket.create_connection`` (the probe) and the hub stays unreachable because offline mode is on."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from click.testing import CliRunner

from conftest import TINY_IMAGE_BACKBONE
from mlhead.encoders import create_encoder
from mlhead.encoders import weights as W
from mlhead.errors import BackboneError


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(address, *a, **k):
        calls.append(address)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return calls


def test_offline_pretrained_timm_fails_fast_with_the_how_to(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty local hub cache
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    import timm  # noqa: F401  (import time is not the hub's)

    t = time.perf_counter()
    with pytest.raises(BackboneError) as err:
        create_encoder(TINY_IMAGE_BACKBONE)
    took = time.perf_counter() - t
    assert took < 10, took  # before: ~50 s of retries (1+2+4+8+8 s per file, two files)
    msg = str(err.value)
    assert "Pass --weights PATH" in msg and "no network" in msg and "huggingface.co" in msg
    assert no_network and no_network[0][0] == "huggingface.co"
    assert constants.HF_HUB_OFFLINE is False  # restored after the attempt


def test_offline_text_model_fails_fast_with_the_how_to(no_network):
    t = time.perf_counter()
    with pytest.raises(BackboneError, match="--weights FOLDER") as err:
        create_encoder("hf:some-org/not-downloaded-model")
    assert time.perf_counter() - t < 10
    assert "no network" in str(err.value)


def test_probe_gives_up_after_its_timeout(monkeypatch):
    def hang(*a, **k):
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", hang)
    t = time.perf_counter()
    assert W.hub_reachable("https://huggingface.co", timeout=0.3) is False
    assert time.perf_counter() - t < 1.5


def test_reachable_hub_is_left_online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert W.hub_reachable("https://example.org:8443")
    with W.hub_access() as offline:
        assert offline == "" and constants.HF_HUB_OFFLINE is False


def test_hf_hub_offline_env_is_respected_without_probing(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed although offline"))
    with W.hub_access() as offline:
        assert offline == "HF_HUB_OFFLINE is set"


def test_embed_cli_offline_is_one_error_line(no_network, image_table, tmp_path):
    from mlhead.cli import main

    t = time.perf_counter()
    res = CliRunner().invoke(main, ["embed", "--dataset", "table", "--data-dir", str(image_table),
                                    "--image-column", "image", "--backbone", f"timm:{TINY_IMAGE_BACKBONE}",
                                    "--cache-dir", str(tmp_path / "c")])
    assert time.perf_counter() - t < 10
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "--weights" in res.output and "no network" in res.output
