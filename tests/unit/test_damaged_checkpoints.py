"""Files given as checkpoints that are not one: one ConfigError line, no code run, and never
torch's advice to load with weights_only=False (arbitrary code execution for a shared file); a
checkpoint made under another config is refused by the changed keys' names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.models.frozen import build_clip, build_sam
from trainer.loop.checkpoint import load_checkpoint


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(4)}, good)
    files = {
        "junk": tmp_path / "junk.pt",
        "truncated": tmp_path / "truncated.pt",
        "code": tmp_path / "code.pt",
    }
    files["junk"].write_bytes(b"not a checkpoint at all\n" * 20)
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({"w": _Payload(tmp_path / "ran")}, files["code"])
    return files


LOADERS = {
    "load_checkpoint": load_checkpoint,
    "build_sam": lambda path: build_sam("vit_t", checkpoint=path),
    "build_clip": lambda path: build_clip("ppt-tiny-vit", checkpoint=path),
}
EXPECTED = {
    "junk": "not a torch",  # read as an old-style pickle: refused as such, or unreadable
    "truncated": "not a torch file, or a truncated or damaged one",
    "code": "refused unread: loading it could run code",
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_a_bad_checkpoint_is_one_line_and_runs_nothing(
    tmp_path: Path, bad_files: dict[str, Path], loader: str, kind: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        LOADERS[loader](bad_files[kind])
    message = str(caught.value)
    assert EXPECTED[kind] in message and str(bad_files[kind]) in message, message
    assert "\n" not in message and "weights_only=False" not in message
    assert not (tmp_path / "ran").exists()


def test_a_sound_tensor_file_of_other_weights_says_so(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(4)}, other)
    with pytest.raises(ConfigError, match="not a ppt-labels training checkpoint"):
        load_checkpoint(other)
    with pytest.raises(ConfigError, match="not a SAM vit_t state dict"):
        build_sam("vit_t", checkpoint=other)
    with pytest.raises(ConfigError, match="cannot load into ppt-tiny-vit"):
        build_clip("ppt-tiny-vit", checkpoint=other)


def test_a_checkpoint_config_is_compared_key_by_key_and_new_keys_read_as_defaults() -> None:
    # A checkpoint written before a config key existed resumes under that key's default; any
    # other value, and any changed key, is refused by name.
    from dataclasses import replace

    from trainer.config import TrainConfig, config_to_dict
    from trainer.loop.checkpoint import check_config

    cfg = TrainConfig()
    old = config_to_dict(cfg)
    del old["model"]["relevance_dropout"]  # a checkpoint from before the key
    check_config({"config": old}, config_to_dict(cfg))
    on = replace(cfg, model=replace(cfg.model, point_mode="map", sam_stage=4,
                                    relevance_input=True, relevance_dropout=0.5))  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.relevance_dropout: 0\.0 -> 0\.5"):
        check_config({"config": old}, config_to_dict(on))
    faster = replace(cfg, optim=replace(cfg.optim, lr=0.5))
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.001 -> 0\.5"):
        check_config({"config": old}, config_to_dict(faster))
