"""The ZeRO calculator against Rajbhandari et al. 2020, Figure 1, and its input checks."""
import pytest

from ftlab.memory import GB, zero_bytes_per_gpu, zero_table


@pytest.mark.parametrize("stage, want_gb", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_figure_1(stage, want_gb):
    # Figure 1 of the ZeRO paper: 7.5B parameters, 64 GPUs, K = 12.
    got = zero_bytes_per_gpu(7.5e9, 64, stage)["gpu_total"] / GB
    assert got == pytest.approx(want_gb, abs=0.05)


def test_zero_7b_8_gpus_and_offload():
    full = zero_bytes_per_gpu(7e9, 8, 0)
    assert full["gpu_total"] == 16 * 7e9 and full["cpu_total"] == 0
    z3 = zero_bytes_per_gpu(7e9, 8, 3)
    assert z3["gpu_total"] == pytest.approx(16 * 7e9 / 8)
    off = zero_bytes_per_gpu(7e9, 8, 2, offload="optimizer")
    # ZeRO-Offload (Ren et al. 2021, 4.1): gradients and optimizer on CPU, weights on GPU.
    assert off["optimizer"] == off["grads"] == 0 and off["cpu_total"] == pytest.approx(14 * 7e9)
    assert off["gpu_total"] == pytest.approx(2 * 7e9)
    allcpu = zero_bytes_per_gpu(70e9, 8, 3, offload="optimizer+params")
    assert allcpu["gpu_total"] == 0
    assert allcpu["cpu_total"] == pytest.approx(16 * 70e9)
    # The stages only ever shrink what a GPU holds.
    totals = [zero_bytes_per_gpu(7e9, 8, s)["gpu_total"] for s in (0, 1, 2, 3)]
    assert totals == sorted(totals, reverse=True)
    assert [r["setup"] for r in zero_table(7e9)][0].startswith("DDP")


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"n_params": -1}, ValueError, "n_params"),
    ({"n_gpus": 0}, ValueError, "n_gpus"),
    ({"n_gpus": 2.0}, TypeError, "n_gpus"),
    ({"stage": 4}, ValueError, "stage"),
    ({"stage": True}, ValueError, "stage"),
    ({"offload": "cpu"}, ValueError, "offload"),
    ({"stage": 2, "offload": "optimizer+params"}, ValueError, "stage 3"),
    ({"weight_bytes": 0}, ValueError, "weight_bytes"),
])
def test_zero_bad_input(kwargs, exc, word):
    args = {"n_params": 7e9, "n_gpus": 8, "stage": 1} | kwargs
    with pytest.raises(exc, match=word):
        zero_bytes_per_gpu(**args)
