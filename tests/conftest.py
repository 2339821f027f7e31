"""Shared fixtures: generated test media and models, and an OpenAI-compatible server (made
once per test session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av  # noqa: F401 - before anything imports decord (see sources/_video_decord.py)
import media
import pytest
from remote_servers import ModelServer, transformers_serve


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small videos whose frames carry their own index (see tests/media.py)."""
    d = tmp_path_factory.mktemp("videos")
    media.h264_mp4(d / "h264.mp4")
    media.mpeg4_avi(d / "mpeg4.avi")
    media.vp8_webm(d / "vp8.webm")
    media.vp9_webm(d / "vp9.webm")
    media.mjpeg_avi(d / "mjpeg.avi")
    media.vfr_mp4(d / "vfr.mp4")
    for rot in (90, 180, 270):
        media.rotated_mp4(d / f"rot{rot}.mp4", rot)
    media.encode_video(d / "one.mp4", num_frames=1)
    media.audio_only(d / "audio.mp4")
    return d


@pytest.fixture(scope="session")
def h264_path(video_dir: Path) -> Path:
    """H.264 MP4 with B-frames, 90 frames at 30 fps, keyframe every 30."""
    return video_dir / "h264.mp4"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight LLaVA (SigLIP + Qwen2, llava-interleave chat template, 16 tokens
    per image) saved with save_pretrained, built once per test session."""
    from framepipe.generate import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The tiny model's matrices are small: extra intra-op threads only add contention on a
    shared CI machine (ten times slower under load), so modules that use it run on one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def openai_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """``transformers serve`` with the tiny model on 127.0.0.1 (CPU, float32), started once
    per test session; its context is cut to 100 tokens (4 frames of the tiny model fit, 6 do
    not), as a server started with too short a ``--max-model-len`` would be."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with transformers_serve(tiny_model_dir, log, max_model_len=100) as server:
        yield server
