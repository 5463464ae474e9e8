"""Load and save the course checkpoints. safetensors only: never a pickle.

Each checkpoint is ``checkpoints/<name>.safetensors``; its config and how it was made
travel in the file's metadata, so one file is the whole story.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from .model import GPTConfig, TinyGPT

CHECKPOINTS = {
    "base": "multi-task, chat template; includes context lookup and refusal",
    "base-raw": "the same tasks as plain completion ('prompt=answer■', 0-8 leading spaces), no chat template",
    "teacher": "larger (d=96, 4 layers), chat template, the base tasks plus three-digit sums with steps",
    "math-weak": "chat template, sums with worked steps, stopped early: pass@1 ≈ 0.2-0.6 on add3_steps",
}


def checkpoint_path(name: str) -> Path:
    if not isinstance(name, str) or name not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {name!r}; known: {', '.join(CHECKPOINTS)}")
    return Path(str(resources.files("ftlab") / "checkpoints" / f"{name}.safetensors"))


def save(model: TinyGPT, path: str | Path, info: dict | None = None) -> Path:
    """Write ``model`` as safetensors, with its config (and ``info``) in the metadata."""
    if not isinstance(model, TinyGPT):
        raise TypeError(f"save expects a TinyGPT, got {type(model).__name__}")
    path = Path(path)
    meta = {"config": json.dumps(model.config.to_dict()), "info": json.dumps(info or {})}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
    return path


def metadata(name_or_path: str | Path) -> dict:
    """The config and the record of how the checkpoint was made."""
    path = checkpoint_path(name_or_path) if name_or_path in CHECKPOINTS else Path(name_or_path)
    if not path.exists():
        raise ValueError(f"no checkpoint file at {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{str(path)!r} has no ftlab config in its metadata")
    return {"config": json.loads(meta["config"]), "info": json.loads(meta.get("info", "{}"))}


def load(name: str, device: str | torch.device = "cpu") -> TinyGPT:
    """A fresh copy of checkpoint ``name`` (or a path to a ``.safetensors`` file), in eval mode."""
    path = checkpoint_path(name) if name in CHECKPOINTS or not str(name).endswith(".safetensors") else Path(name)
    if not path.exists():
        raise ValueError(f"checkpoint file {str(path)!r} is missing; run `make checkpoints`")
    model = TinyGPT(GPTConfig(**metadata(path)["config"]))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval()
