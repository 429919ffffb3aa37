"""The numbers shared by the layer classes and the Numba kernels: one home for each code.

Activation codes select f in the fused dense kernels (``jit_gemm.activation``) and are declared
by the activation classes through :meth:`minigd.Layer.fused_role`. Status codes are what the
whole-epoch kernel (``jit_epoch.train_epoch``) returns. Optimizer codes live with their kernels
in :mod:`minigd.kernels.jit_optim` (an optimizer declares its name there). Product codes name the
implementation of a matrix product in training, as :mod:`minigd.kernels.autotune` chose it
(``jit_gemm.tn_product``, ``jit_gemm.input_grad``).
This module imports nothing, so any module may import it without pulling in Numba.
"""

# activations (Layer.fused_role of ReLU, Tanh, Sigmoid; 0 = no activation after a dense layer)
ACT_NONE, ACT_RELU, ACT_TANH, ACT_SIGMOID = 0, 1, 2, 3

# what jit_epoch.train_epoch returns as its status
COMPLETED, LOSS_DIVERGED, GRADIENT_DIVERGED = 0, 1, 2

# implementations of the matrix products (minigd.kernels.autotune.CANDIDATES order): minigd's
# own loops; BLAS, each thread on its share of the output; BLAS, each thread on its share of the
# batch rows (the forward product's rows; the weight gradient's summed dimension, each thread
# summing its rows into its own buffer, the buffers then added in thread order)
PRODUCT_OWN, PRODUCT_BLAS, PRODUCT_BLAS_ROWS = 0, 1, 2
