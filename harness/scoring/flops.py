"""The work's arithmetic: floating-point operations of a whole run, counted from the sizes (SPEC §7)."""

from __future__ import annotations

from harness.contract.spec import Task, n_params


def step_flops(task: Task) -> dict[str, int]:
    """Floating-point operations of one training step, by part.

    Matrix products count 2 per multiply-add. Attention counts only the causal pairs (key <= query),
    which is all a run needs; the naive reference does exactly that much. The backward pass of a
    product costs two products of the same size (the input and the weight gradient), so twice the forward.
    Element-wise work (LayerNorm, GELU, softmax, cross-entropy, residuals) is counted per element with
    the operation counts given below, and AdamW at 16 per parameter (clip norm 2, moments 5, update 9).
    """
    B, T, C, L, V, H = task.batch_size, task.ctx_len, task.d_model, task.n_layer, task.vocab_size, task.n_head
    BT = B * T
    pairs = B * H * T * (T + 1) // 2  # causal (query, key) pairs per layer
    D = C // H
    linear_fwd = L * 2 * BT * (C * 3 * C + C * C + C * 4 * C + 4 * C * C)
    head_fwd = 2 * BT * C * V
    attention_fwd = L * 2 * 2 * pairs * D  # scores q.k and the weighted sum of v
    softmax_fwd = L * 5 * pairs
    layernorm_fwd = (2 * L + 1) * 8 * BT * C
    gelu_fwd = L * 12 * BT * 4 * C
    residual_and_embed = (2 * L + 1) * BT * C
    cross_entropy_fwd = 4 * BT * V
    elementwise_fwd = softmax_fwd + layernorm_fwd + gelu_fwd + residual_and_embed + cross_entropy_fwd
    return {
        "forward_matmul": linear_fwd + head_fwd,
        "forward_attention": attention_fwd,
        "forward_elementwise": elementwise_fwd,
        "backward_matmul": 2 * (linear_fwd + head_fwd),
        "backward_attention": 2 * attention_fwd,
        "backward_elementwise": 2 * elementwise_fwd,
        "optimiser": 16 * n_params(task),
    }


PRODUCTS = ("forward_matmul", "forward_attention", "backward_matmul", "backward_attention")
"""The parts that are matrix products: their multiply-adds cannot run faster than the cores' FMA units."""


def product_flops(task: Task) -> int:
    """Floating-point operations of the whole run's matrix products (the physical floor's arithmetic)."""
    parts = step_flops(task)
    return task.steps * sum(parts[p] for p in PRODUCTS)


def run_flops(task: Task) -> int:
    """Floating-point operations of the whole run of task.steps steps."""
    return task.steps * sum(step_flops(task).values())
