"""Quantization from scratch: the formats and algorithms the quantization chapter teaches.

One module per idea:

* ``rtn``: round-to-nearest with absmax or zero-point scales, per tensor / channel / group;
* ``nf4``: QLoRA's NF4 table, blockwise absmax, double quantization, ``NF4Weight``;
* ``gptq``: GPTQ, error feedback through the inverse Hessian;
* ``awq``: AWQ's activation-aware scale search;
* ``smoothquant``: SmoothQuant's outlier migration and a W8A8 fake-quant matmul;
* ``int8``: LLM.int8()'s outlier decomposition;
* ``gguf``: llama.cpp's Q8_0, Q4_0, Q4_K blocks and their bits per weight;
* ``fp8``: FP8 E4M3 round trip;
* ``model``: a whole TinyGPT: calibration inputs by forward hooks, every linear layer
  quantized with RTN, GPTQ or AWQ, per-layer sensitivity and mixed precision;
* ``checks``: the chapter's exercise checkers.

Every quantizer returns dequantized float weights ("fake quantization"): the numbers the
layer would compute with, which is what error measurements need.
"""
from .awq import awq_apply, awq_quantize, awq_scales
from .common import model_bytes, relative_error
from .fp8 import FP8_E4M3_MAX, dequantize_fp8, fp8_roundtrip, quantize_fp8
from .gguf import (LAYOUTS, BlockLayout, Q4KBlocks, bits_per_weight, dequantize_q4_0, dequantize_q4_k,
                   dequantize_q8_0, gguf_nbytes, gguf_roundtrip, quantize_q4_0, quantize_q4_k,
                   quantize_q8_0)
from .gptq import gptq_hessian, gptq_quantize
from .int8 import int8_absmax_matmul, int8_outlier_matmul, int8_vectorwise_matmul, outlier_features
from .nf4 import (NF4_OFFSET, DoubleQuant, NF4Weight, compare_4bit_formats, constants_bits_per_param,
                  dequantize_blockwise, dequantize_nf4, double_dequantize, double_quantize,
                  fp4_e2m1_values, int4_codebook, nf4_codebook, pack_4bit, quantize_blockwise,
                  quantize_nf4, unpack_4bit)
from .rtn import (absmax_scale, dequantize_int, fake_quantize, grid_limits, quant_params,
                  quantize_to_int, rtn_quantize, zeropoint_params)
from .smoothquant import smooth, smooth_scales, w8a8_matmul
from .model import (METHODS, capture_inputs, eval_batch, heldout_nll, layer_output_error, layer_sensitivity,
                    linear_names, plant_outlier_channels, quantize_model, quantize_weight)
from .checks import check_absmax_int8, check_bits_per_weight, check_group_rtn

__all__ = [
    # rtn
    "absmax_scale", "zeropoint_params", "quant_params", "grid_limits", "quantize_to_int",
    "dequantize_int", "fake_quantize", "rtn_quantize",
    # nf4
    "NF4_OFFSET", "nf4_codebook", "fp4_e2m1_values", "int4_codebook", "quantize_blockwise",
    "dequantize_blockwise", "quantize_nf4", "dequantize_nf4", "pack_4bit", "unpack_4bit",
    "DoubleQuant", "double_quantize", "double_dequantize", "constants_bits_per_param", "NF4Weight",
    "compare_4bit_formats",
    # gptq, awq, smoothquant, int8
    "gptq_hessian", "gptq_quantize",
    "awq_scales", "awq_apply", "awq_quantize",
    "smooth_scales", "smooth", "w8a8_matmul",
    "int8_absmax_matmul", "int8_vectorwise_matmul", "outlier_features", "int8_outlier_matmul",
    # gguf, fp8
    "BlockLayout", "LAYOUTS", "bits_per_weight", "gguf_nbytes", "quantize_q8_0", "dequantize_q8_0",
    "quantize_q4_0", "dequantize_q4_0", "Q4KBlocks", "quantize_q4_k", "dequantize_q4_k", "gguf_roundtrip",
    "FP8_E4M3_MAX", "quantize_fp8", "dequantize_fp8", "fp8_roundtrip",
    # sizes and errors
    "model_bytes", "relative_error",
    # whole models
    "METHODS", "linear_names", "eval_batch", "heldout_nll", "capture_inputs", "quantize_weight",
    "quantize_model", "layer_output_error", "layer_sensitivity", "plant_outlier_channels",
    # exercise checkers
    "check_absmax_int8", "check_group_rtn", "check_bits_per_weight",
]
