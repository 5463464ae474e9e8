"""Checks and small helpers shared by every quantizer in ``ftlab.quant``.

Each public function validates its input here, so a wrong call fails at once with a
message that names the bad value, instead of deep inside a reshape.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def check_float(name: str, t) -> Tensor:
    """Raise TypeError unless ``t`` is a floating-point tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_matrix(name: str, t) -> Tensor:
    """Raise unless ``t`` is a 2-D floating-point tensor."""
    check_float(name, t)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    return t


def check_pair(W, X) -> None:
    """W is a weight (out, in); X holds calibration inputs (n, in)."""
    check_matrix("W", W)
    check_matrix("X", X)
    if W.shape[1] != X.shape[1]:
        raise ValueError(f"W is (out, in)={tuple(W.shape)} and X is (n, in)={tuple(X.shape)}: "
                         f"in-features {W.shape[1]} != {X.shape[1]}")


def check_bits(bits, lo: int = 2, hi: int = 8) -> int:
    """Raise ValueError unless ``bits`` is an int in [lo, hi]."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise ValueError(f"bits must be an int in {lo}..{hi}, got {bits!r}")
    return bits


def check_positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def check_divides(name: str, size, n: int, what: str) -> int:
    """Raise ValueError unless the positive int ``size`` divides ``n``."""
    check_positive_int(name, size)
    if n % size:
        raise ValueError(f"{name}={size} does not divide {what}={n}")
    return size


def work_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64 (tests compare against exact references); all else runs in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def relative_error(approx: Tensor, exact: Tensor) -> float:
    """‖approx − exact‖ / ‖exact‖ (Frobenius), the error measure used across the chapter."""
    check_float("approx", approx)
    check_float("exact", exact)
    if approx.shape != exact.shape:
        raise ValueError(f"shapes differ: {tuple(approx.shape)} vs {tuple(exact.shape)}")
    exact = exact.double()
    return ((approx.double() - exact).norm() / exact.norm().clamp_min(1e-300)).item()


def model_bytes(n_params: int, bits_per_weight: float) -> float:
    """Bytes to store ``n_params`` weights at ``bits_per_weight`` (scales included if you count them in the bpw).

    A 7e9-parameter model: 14e9 bytes in fp16 (16 bit), 3.5e9 in plain 4 bit, and
    about 3.94e9 in Q4_0 or Q4_K, whose layouts cost 4.5 bits per weight (see ``gguf``).
    """
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 0:
        raise ValueError(f"n_params must be a non-negative int, got {n_params!r}")
    if isinstance(bits_per_weight, bool) or not isinstance(bits_per_weight, (int, float)) \
            or not bits_per_weight > 0:
        raise ValueError(f"bits_per_weight must be a positive number, got {bits_per_weight!r}")
    return n_params * bits_per_weight / 8
