import numpy as np
import pytest
import torch
from math import comb

import ftlab
from ftlab.evaluate import paired_bootstrap, pass_at_k
from ftlab.model import GPTConfig, TinyGPT
from ftlab.seeds import seed_everything, shift
from ftlab.train import lr_at, train


def test_train_learns_a_tiny_task_and_records_history():
    seed_everything(0)
    model = TinyGPT(GPTConfig(n_layer=2))
    data = ftlab.get_task("copy").examples(256, seed=0)
    calls = []
    hist = train(model, data, steps=60, lr=3e-3, batch_size=32, evals={"n": lambda: len(calls) or calls.append(1) or 1},
                 eval_every=20)
    assert len(hist.loss) == 60 and hist.loss[-1] < 0.6 * hist.loss[0]
    assert [s for s, _ in hist.evals["n"]] == [20, 40, 60]


def test_trainable_filter_freezes_the_rest():
    model = TinyGPT(GPTConfig(n_layer=1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, ftlab.get_task("copy").examples(32), steps=3, lr=1e-2, trainable=lambda n: "lm_head" in n)
    for n, p in model.named_parameters():
        assert torch.equal(before[n], p) != ("lm_head" in n), n


@pytest.mark.parametrize("kw,match", [
    (dict(steps=0), "steps"), (dict(lr=0.0), "lr"), (dict(schedule="step"), "'step'"),
    (dict(trainable=lambda n: False), "no trainable"),
])
def test_train_rejects_bad_input(kw, match):
    args = dict(steps=1, lr=1e-3) | kw
    with pytest.raises(ValueError, match=match):
        train(TinyGPT(GPTConfig(n_layer=1)), ftlab.get_task("copy").examples(4), **args)


def test_warmup_then_cosine():
    assert lr_at(0, 100, 1.0, 10, "cosine") == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10, "cosine") == pytest.approx(0.1)


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (20, 0, 4), (5, 5, 2), (8, 7, 3)])
def test_pass_at_k_matches_the_combinatorial_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_1_is_the_mean():
    assert pass_at_k(10, 4, 1) == pytest.approx(0.4)


@pytest.mark.parametrize("args,match", [((5, 6, 1), "c=6"), ((5, 2, 6), "k=6"), ((0, 0, 1), "n=0")])
def test_pass_at_k_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(*args)


def test_paired_bootstrap_is_tighter_than_unpaired():
    rng = np.random.default_rng(0)
    difficulty = rng.random(300)
    a = (rng.random(300) < difficulty + 0.05).astype(float)
    b = (rng.random(300) < difficulty).astype(float)
    ci = paired_bootstrap(a, b, seed=0)
    assert ci.low <= ci.diff <= ci.high
    same = paired_bootstrap(a, a, seed=0)
    assert same.diff == same.low == same.high == 0.0 and not same.excludes_zero
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1, 0], [1, 0, 1])


def test_seed_offset_shifts_every_seed(monkeypatch):
    assert shift(5) == 5
    monkeypatch.setenv("FTLAB_SEED_OFFSET", "2")
    assert shift(5) == 2005
    a = ftlab.get_task("rev").items(5, seed=0)
    monkeypatch.setenv("FTLAB_SEED_OFFSET", "0")
    assert a != ftlab.get_task("rev").items(5, seed=0)
    monkeypatch.setenv("FTLAB_SEED_OFFSET", "x")
    with pytest.raises(ValueError, match="'x'"):
        shift(1)


def test_threads_come_from_one_setting(monkeypatch):
    import torch
    from ftlab.seeds import DEFAULT_THREADS
    n = torch.get_num_threads()
    try:
        monkeypatch.delenv("FTLAB_THREADS", raising=False)
        ftlab.seed_everything(0)
        assert torch.get_num_threads() == DEFAULT_THREADS
        monkeypatch.setenv("FTLAB_THREADS", "2")
        ftlab.seed_everything(0)
        assert torch.get_num_threads() == 2
        for bad in ("0", "two"):
            monkeypatch.setenv("FTLAB_THREADS", bad)
            with pytest.raises(ValueError, match=repr(bad)):
                ftlab.seed_everything(0)
    finally:
        torch.set_num_threads(n)


def test_show_renders_ftlab_source_only(capsys):
    ftlab.show(ftlab.pass_at_k)
    assert "def pass_at_k" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not from ftlab"):
        ftlab.show(np.mean)


def test_score_accepts_a_chapter_defined_task():
    import random
    from ftlab.tasks import Item, Task
    echo = Task("echo1", "answer 1", lambda rng: Item("echo1", f"say {rng.randint(0, 9)}", "1"), False, 2)
    model = TinyGPT(GPTConfig(n_layer=1))
    res = ftlab.score(model, echo, n=5, split="all")
    assert res.task == "echo1" and len(res.correct) == 5


# --- ftlab.optim.AdamW: torch.optim.AdamW's update without importing torch._dynamo ---
def _adamw_run(opt_cls, steps=12):
    torch.manual_seed(0)
    model = ftlab.TinyGPT(ftlab.GPTConfig(n_layer=2))
    ids, mask = ftlab.sft_tensors(ftlab.get_task("add").examples(16, seed=0))
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = opt_cls(groups, lr=3e-3, betas=(0.9, 0.99))
    for i in range(steps):
        opt.param_groups[0]["lr"] = 3e-3 * (i + 1) / steps     # a schedule, as ftlab.train sets it
        loss = ftlab.lm_loss(model, ids[i % 2 * 8:(i % 2 + 1) * 8], mask[i % 2 * 8:(i % 2 + 1) * 8])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return model, opt


def test_ftlab_adamw_equals_torch_adamw_bit_for_bit():
    from ftlab.optim import AdamW
    ours, opt = _adamw_run(AdamW)
    ref, ref_opt = _adamw_run(torch.optim.AdamW)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(opt.state[p]["exp_avg_sq"], ref_opt.state[q]["exp_avg_sq"])
        assert float(opt.state[p]["step"]) == float(ref_opt.state[q]["step"]) == 12


def test_ftlab_train_does_not_import_dynamo():
    import subprocess
    import sys
    code = ("import sys, ftlab; m = ftlab.TinyGPT(ftlab.GPTConfig(n_layer=1)); "
            "ftlab.train(m, ftlab.get_task('add').examples(8, seed=0), steps=2, lr=1e-3, batch_size=4); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout


def test_ftlab_adamw_rejects_bad_settings():
    from ftlab.optim import AdamW
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="lr"):
        AdamW(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamW(p, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW(p, weight_decay=-0.1)
    with pytest.raises(TypeError, match="tensors"):
        AdamW([{"params": ["w"]}])


def test_exact_match_gives_the_verdicts_of_greedy_decoding():
    from ftlab.evaluate import greedy_matches
    model = ftlab.load("base")
    for task, template in (("rev", "chat"), ("add", "chat"), ("copy", "raw"), ("fact", "chat")):
        res = ftlab.score(model, task, n=48, seed=3, template=template)
        prompts = [ftlab.format_prompt(it.prompt, template) for it in res.items]
        assert greedy_matches(model, prompts, [it.answer for it in res.items]) == res.correct, task
        assert ftlab.exact_match(model, task, n=48, seed=3, template=template) == res.accuracy
    with pytest.raises(ValueError, match="same length"):
        greedy_matches(model, ["▶a◆"], ["a", "b"])


def test_every_verifier_accepts_the_reference_answer():
    # exact_match and gate.greedy_correct count a greedy output equal to the reference as
    # right without decoding it; that is only sound if every verifier accepts it.
    from ftlab.tasks import TASKS
    for name, task in TASKS.items():
        n = 20 if name == "mul" else min(60, len(task.finite)) if task.finite else 60
        items = task.items(n, seed=1)
        assert all(task.verify(it, it.answer) for it in items), name


def test_exact_match_decodes_only_what_a_verifier_must_judge():
    # pick accepts any listed letter, add3_steps any worked steps with the right sum:
    # misses of the reference are decoded, and the verdicts stay those of score.
    for model, task in ((ftlab.load("base"), "pick"), (ftlab.load("math-weak"), "add3_steps")):
        res = ftlab.score(model, task, n=64, seed=4)
        assert 0 < res.accuracy < 1, (task, res.accuracy)  # right and wrong answers both occur
        assert ftlab.exact_match(model, task, n=64, seed=4) == res.accuracy, task
        if task == "pick":  # right answers other than the reference letter: decoded
            assert any(c and o != it.answer for it, o, c in zip(res.items, res.outputs, res.correct))
