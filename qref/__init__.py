"""qref: a readable numpy reference implementation of neural-network quantization.

One module per family of methods; each function names its paper and equation:

- :mod:`qref.rounding`  rounding rules (nearest with every tie rule, directed, stochastic)
- :mod:`qref.uniform`   uniform (affine) quantization: scale, zero point, codes, granularity
- :mod:`qref.formats`   number formats: fixed point, dynamic fixed point, minifloats (fp16, bfloat16, FP8), Flexpoint
- :mod:`qref.codebook`  fixed codebooks, hard, soft and random assignment to a codebook
- :mod:`qref.nonuniform` Lloyd–Max, INQ powers of two, LogQuant, ShiftCNN, HWGQ
- :mod:`qref.vq`        k-means and Hessian-weighted weight sharing, exact 1-D k-means, product and residual
  quantization (beam search), Huffman/Deep Compression size accounting, soft-to-hard annealing
- :mod:`qref.calibration` clipping ranges: min–max, percentile, MSE search, KL (TensorRT), ACIQ, SAWB
- :mod:`qref.allocation` bit allocation: per channel (Banner et al.), per layer by SQNR (Lin et al.), Max's optimal uniform steps
- :mod:`qref.mixed`     mixed precision by Hessian trace (HAWQ, Hutchinson's estimator, exact Pareto frontier) and quantized distillation
- :mod:`qref.intarith`  integer-only inference: fixed-point multipliers, int8 GEMM, requantization, BN folding
- :mod:`qref.binary`    binary and ternary weights: BinaryConnect, BWN/XNOR-Net, ABC-Net, TWN, TTQ, FGQ
- :mod:`qref.bitops`    bit packing and exact XNOR-popcount matrix products
- :mod:`qref.theory`    why quantization works: angle preservation, dot-product proportionality; stochastic rounding vs BinaryConnect training (Li et al. 2017)
- :mod:`qref.nn`        a small numpy training substrate: layers with forward and backward side by side, SGD/Adam, fit
- :mod:`qref.qat`       quantization-aware training: STE variants, DoReFa, PACT, QIL, LSQ, fake quantization with BN folding (Jacob et al.)
- :mod:`qref.metaquant` MetaQuant: a learned replacement for the straight-through estimator (meta network, MetaQuantSGD)
- :mod:`qref.auxiliary` training with a full-precision auxiliary module (Zhuang et al. 2020)
- :mod:`qref.bnn`       binary and ternary training: BinaryConnect, BNN/QNN, shift-based BN, BWN/XNOR-Net, TWN, TTQ, HWGQ
- :mod:`qref.inq`       Incremental Network Quantization: partition, quantize to powers of two, freeze, retrain
- :mod:`qref.pruning`   magnitude pruning, CLIP-Q (pruning and quantization in parallel), sparse storage
- :mod:`qref.vnq`       Variational Network Quantization: quantizing prior, KL approximation, VNQLinear, sparse ternary weights
- :mod:`qref.gradients` quantized gradients: TernGrad, QSGD, 1-bit SGD, error feedback, simulated data-parallel training
- :mod:`qref.lowprec`   low-precision training: WAGE (integer W, A, G, E), Range BN and gradient bifurcation (Banner et al. 2018), L1-norm BN
- :mod:`qref.robustness` feature quantization against image distortion (Sun et al. 2018, reconstructed): distortions, feature moments, floor and power layers
- :mod:`qref.metrics`   MSE, SQNR, KL divergence, angles, size accounting
- :mod:`qref.data`      synthetic weights, the digits data set, the reference model
- :mod:`qref.widgets`   interactive figures that work live and in the static book
  (imported on demand: ``from qref.widgets import interactive``; it needs matplotlib)

numpy is the only hard dependency; numba (``pip install qref[fast]``) accelerates the hot
kernels without changing any result (see :mod:`qref._numba`).
"""

from . import allocation, auxiliary, binary, bitops, bnn, calibration, codebook, data, formats, gradients, inq, intarith, lowprec, metaquant, metrics, mixed, nn, nonuniform, pruning, qat, robustness, rounding, theory, uniform, vnq, vq
from ._numba import HAVE_NUMBA, USE_NUMBA

__version__ = "0.1.0"
__all__ = [
    "allocation", "auxiliary", "binary", "bitops", "bnn", "calibration", "codebook", "data", "formats", "gradients", "inq", "intarith", "lowprec", "metaquant", "metrics", "mixed", "nn", "nonuniform", "pruning", "qat", "robustness", "rounding", "theory", "uniform", "vnq", "vq",
    "HAVE_NUMBA", "USE_NUMBA", "__version__",
]
