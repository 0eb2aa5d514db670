"""The trusted float64 implementation (SPEC §2-3): loss, gradients, one AdamW step, segment replay, held-out loss.

Written independently of the naive reference: vectorised torch with autograd, float64 throughout.
The audit trusts this module and nothing the submission says.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.contract.checkpoint import Arrays, Checkpoint
from harness.contract.spec import Task, param_shapes

DTYPE = torch.float64


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Replays run on one thread: the same arithmetic on every machine, and no spinning thread pool
    fighting whatever else shares the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lr_at(task: Task, t: int) -> float:
    """Learning rate of Adam step t = s + 1 (SPEC §3)."""
    W, S = task.warmup_steps, task.steps
    if t <= W:
        return task.lr * t / W
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1.0 + math.cos(math.pi * (t - W) / (S - W)))


def _tensors(arrays: Arrays, grad: bool = False, dtype: torch.dtype = DTYPE) -> dict[str, torch.Tensor]:
    """float64 (or `dtype`) tensors of fresh copies: nothing the oracle does writes back into its inputs."""
    return {k: torch.tensor(a, dtype=dtype, requires_grad=grad) for k, a in arrays.items()}


def _forward_loss(task: Task, p: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model of SPEC §2 on windows (B, T+1)."""
    x, y = tokens[:, :-1], tokens[:, 1:]
    B, T = x.shape
    C, H = task.d_model, task.n_head
    D = C // H
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    h = p["wte"][x] + p["wpe"][:T]
    for i in range(task.n_layer):
        a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], eps=1e-5)
        q, k, v = (a @ p[f"h{i}.attn.w"] + p[f"h{i}.attn.b"]).split(C, dim=-1)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        att = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        mixed = (att @ v).transpose(1, 2).reshape(B, T, C)
        h = h + mixed @ p[f"h{i}.proj.w"] + p[f"h{i}.proj.b"]
        u = F.gelu(
            F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], eps=1e-5) @ p[f"h{i}.fc.w"] + p[f"h{i}.fc.b"],
            approximate="tanh",
        )
        h = h + u @ p[f"h{i}.fcproj.w"] + p[f"h{i}.fcproj.b"]
    logits = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], eps=1e-5) @ p["wte"].T
    return F.cross_entropy(logits.reshape(B * T, -1), y.reshape(B * T))


def loss_and_grads(task: Task, params: Arrays, tokens: np.ndarray) -> tuple[float, Arrays]:
    """The loss of one batch (B, T+1) and the gradient of every parameter, by autograd."""
    p = _tensors(params, grad=True)
    loss = _forward_loss(task, p, torch.tensor(np.asarray(tokens, dtype=np.int64)))
    loss.backward()
    return loss.item(), {k: _grad(t).numpy() for k, t in p.items()}


def _grad(t: torch.Tensor) -> torch.Tensor:
    assert t.grad is not None, "every parameter takes part in the loss"
    return t.grad


class _Stepper:
    """AdamW over torch tensors (SPEC §3); keeps the state on the torch side between steps."""

    def __init__(self, task: Task, state: Checkpoint, dtype: torch.dtype = DTYPE):
        self.task, self.dtype = task, dtype
        self.at = state.step
        self.p = _tensors(state.params, grad=True, dtype=dtype)
        self.m = _tensors(state.m, dtype=dtype)
        self.v = _tensors(state.v, dtype=dtype)
        self.decay = {k: task.weight_decay if len(shape) == 2 else 0.0 for k, shape in param_shapes(task).items()}

    def step(self, s: int, tokens: np.ndarray) -> float:
        task, t = self.task, s + 1
        for q in self.p.values():
            q.grad = None
        loss = _forward_loss(task, self.p, torch.tensor(np.asarray(tokens, dtype=np.int64)))
        loss.backward()
        with torch.no_grad():
            grads = {k: _grad(q) for k, q in self.p.items()}
            norm = torch.sqrt(sum(((g * g).sum() for g in grads.values()), torch.zeros((), dtype=self.dtype)))
            scale = min(1.0, task.grad_clip / (float(norm) + 1e-6))
            lr = lr_at(task, t)
            c1, c2 = 1.0 - task.beta1**t, 1.0 - task.beta2**t
            for k, q in self.p.items():
                g = grads[k] * scale
                self.m[k].mul_(task.beta1).add_((1.0 - task.beta1) * g)
                self.v[k].mul_(task.beta2).add_((1.0 - task.beta2) * g * g)
                update = (self.m[k] / c1) / (torch.sqrt(self.v[k] / c2) + task.eps) + self.decay[k] * q
                q.sub_(lr * update)
        self.at = s
        return loss.item()

    def state(self) -> Checkpoint:
        def as_np(tensors: dict[str, torch.Tensor]) -> Arrays:
            return {k: t.detach().numpy().copy() for k, t in tensors.items()}

        return Checkpoint(self.at, as_np(self.p), as_np(self.m), as_np(self.v))


def adamw_step(task: Task, state: Checkpoint, s: int, tokens: np.ndarray) -> tuple[float, Checkpoint]:
    """One whole training step s on batch `tokens` (B, T+1): the loss before the update and the new state."""
    stepper = _Stepper(task, state)
    loss = stepper.step(s, tokens)
    return loss, stepper.state()


def replay(
    task: Task,
    state: Checkpoint,
    batches: np.ndarray,
    first_step: int,
    last_step: int,
    dtype: torch.dtype = DTYPE,
) -> tuple[list[float], Checkpoint]:
    """Steps first_step..last_step (inclusive) from `state`: the per-step losses and the end state.

    With `dtype` float32 the same arithmetic in float32: an honest float32 implementation of its own, whose
    distance from the float64 replay is the rounding noise this segment has in float32 (the audit's second
    opinion)."""
    stepper = _Stepper(task, state, dtype)
    losses = [stepper.step(s, batches[s]) for s in range(first_step, last_step + 1)]
    return losses, stepper.state()


@torch.no_grad()
def eval_loss(task: Task, params: Arrays, windows: np.ndarray) -> float:
    """Mean cross-entropy of `params` on fixed windows (N, T+1), in chunks of the batch size."""
    p = _tensors(params)
    total, n = 0.0, 0
    for lo in range(0, len(windows), task.batch_size):
        chunk = torch.tensor(np.asarray(windows[lo : lo + task.batch_size], dtype=np.int64))
        total += float(_forward_loss(task, p, chunk)) * len(chunk)
        n += len(chunk)
    return total / n
