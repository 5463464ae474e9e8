"""ftlab: the tiny-model lab behind the executable fine-tuning interview course.

One character-level GPT, pretrained on tasks a program can verify, adapted in every
chapter. The pieces a chapter teaches live in their own modules (``ftlab.peft``,
``ftlab.quant``, ``ftlab.align``, ...); the lab itself is importable from here.
"""
from .chat import Example, apply_chat_template, chat_prompt, format_prompt, raw_prompt, sft_tensors
from .checkpoints import CHECKPOINTS, load, metadata, save
from .evaluate import (BootstrapCI, TaskResult, exact_match, paired_bootstrap, pass_at_k, sample_accuracy,
                       sample_correct, score)
from .generation import Generation, generate, sequence_logprob
from .model import GPTConfig, TinyGPT
from .plotting import COLORS, use_style
from .seeds import seed_everything
from .show import show
from .tasks import KNOWN_FACTS, NEW_FACTS, REFUSAL, TASKS, Item, Task, context_prompt, get_task
from .tokenizer import MAX_LEN, VOCAB, decode, encode
from .train import History, lm_loss, train
from . import exercises

__version__ = "0.1.0"
__all__ = [
    "Example", "apply_chat_template", "chat_prompt", "format_prompt", "raw_prompt", "sft_tensors",
    "CHECKPOINTS", "load", "metadata", "save",
    "BootstrapCI", "TaskResult", "exact_match", "paired_bootstrap", "pass_at_k", "sample_accuracy",
    "sample_correct", "score",
    "Generation", "generate", "sequence_logprob", "GPTConfig", "TinyGPT", "COLORS", "use_style",
    "seed_everything", "show", "KNOWN_FACTS", "NEW_FACTS", "REFUSAL", "TASKS", "Item", "Task",
    "context_prompt", "get_task", "MAX_LEN", "VOCAB", "decode", "encode", "History", "lm_loss", "train",
]
