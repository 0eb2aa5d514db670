"""The champion: the whole training step in C (step.c), compiled in prepare for this CPU's vector width.

- prepare(task) compiles step.c with the system C compiler, -O3 -march=native (AVX-512 code where the CPU has
  it, AVX2 otherwise) and OpenMP, allocates every buffer once and runs a few warm-up steps on dummy data.
- One C call per step: the forward and backward pass of each thread's share of the batch's sequences, every
  product one register-blocked GEMM kernel (attention too, per head, with the causal mask skipping blocks),
  LayerNorm, GELU and the loss fused into single passes; then the summed gradients' norm in double and AdamW.
- Parameters and both moments live in three flat float32 numpy buffers (decayed tensors first); the
  checkpoints are views of them.
"""

import ctypes
import math
import os
import subprocess

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = int(os.environ.get("LOOPBENCH_NATIVE_THREADS", os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
CHUNK_ROWS = int(os.environ.get("LOOPBENCH_NATIVE_CHUNK_ROWS", 64))
"""Rows a thread takes through the forward and backward pass at a time: whole sequences, at least one."""
KERNELS = (
    "linear fwd",
    "attention fwd",
    "element-wise fwd",
    "head and loss",
    "head back",
    "element-wise back",
    "linear back",
    "attention back",
)
LAYER = (
    "ln1.g",
    "ln1.b",
    "attn.w",
    "attn.b",
    "proj.w",
    "proj.b",
    "ln2.g",
    "ln2.b",
    "fc.w",
    "fc.b",
    "fcproj.w",
    "fcproj.b",
)


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compile_flags():
    """-march=native picks the vector width; with AVX-512 the compiler is told to use all 512 bits."""
    flags = cpu_flags()
    base = ["-O3", "-g", "-fopenmp", "-fPIC", "-shared", "-ffp-contract=fast", "-fno-math-errno"]
    if "avx512f" in flags:
        return [*base, "-march=native", "-mprefer-vector-width=512"]
    if "avx2" in flags and "fma" in flags:
        return [*base, "-march=native", "-mno-avx512f"]
    return base


def build():
    out_dir = os.path.join(os.getcwd(), "build")
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, "step.so")
    command = [os.environ.get("CC", "cc"), *compile_flags(), os.path.join(HERE, "step.c"), "-o", target, "-lm"]
    subprocess.run(command, check=True, capture_output=True)
    lib = ctypes.CDLL(target)
    lib.ctx_new.restype = ctypes.c_void_p
    lib.ctx_new.argtypes = [ctypes.c_int] * 8 + [ctypes.c_long] + [ctypes.c_void_p] * 4
    lib.ctx_loaded.argtypes = [ctypes.c_void_p]
    lib.ctx_step.restype = ctypes.c_double
    lib.ctx_step.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_float] * 8 + [ctypes.c_long]
    lib.ctx_profile.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.ctx_times.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return lib


def shapes_of(task):
    V, T, C = task.vocab_size, task.ctx_len, task.d_model
    s = {"wte": (V, C), "wpe": (T, C)}
    for i in range(task.n_layer):
        sizes = [(C,), (C,), (C, 3 * C), (3 * C,), (C, C), (C,), (C,), (C,), (C, 4 * C), (4 * C,), (4 * C, C), (C,)]
        s |= {f"h{i}.{n}": shape for n, shape in zip(LAYER, sizes, strict=True)}
    s |= {"lnf.g": (C,), "lnf.b": (C,)}
    return s


def learning_rate(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    progress = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Flat buffers (2-D tensors first), their per-name views, and the C context holding everything else."""

    def __init__(self, lib, task, threads):
        self.lib, self.task = lib, task
        shapes = shapes_of(task)
        order = [k for k, s in shapes.items() if len(s) == 2] + [k for k, s in shapes.items() if len(s) == 1]
        offsets, at = {}, 0
        for k in order:
            offsets[k] = at
            at += math.prod(shapes[k])
        self.n_decay = sum(math.prod(shapes[k]) for k in order if len(shapes[k]) == 2)
        self.p, self.m, self.v = (np.zeros(at, dtype=np.float32) for _ in range(3))
        self.P, self.M, self.V = (
            {k: buf[offsets[k] : offsets[k] + math.prod(s)].reshape(s) for k, s in shapes.items()}
            for buf in (self.p, self.m, self.v)
        )
        table = [offsets["wte"], offsets["wpe"], offsets["lnf.g"], offsets["lnf.b"]]
        table += [offsets[f"h{i}.{n}"] for i in range(task.n_layer) for n in LAYER]
        self.table = np.array(table, dtype=np.int64)
        threads = max(1, min(threads, task.batch_size, 64))
        chunk = max(1, CHUNK_ROWS // task.ctx_len)
        sizes = (task.vocab_size, task.ctx_len, task.d_model, task.n_layer, task.n_head, task.batch_size)
        args = (*sizes, threads, chunk, at)
        self.ctx = lib.ctx_new(
            *args, self.table.ctypes.data, self.p.ctypes.data, self.m.ctypes.data, self.v.ctypes.data
        )
        if not self.ctx:
            raise RuntimeError("the C context refused these sizes")

    def load(self, params):
        for k, view in self.P.items():
            view[...] = params[k]
        self.m[:] = 0.0
        self.v[:] = 0.0
        self.lib.ctx_loaded(self.ctx)

    def run(self, batches, log):
        task, lib, ctx = self.task, self.lib, self.ctx
        tok = np.ascontiguousarray(batches, dtype=np.int32)
        base, stride = tok.ctypes.data, tok.strides[0]
        fixed = (task.beta1, task.beta2, task.eps, task.weight_decay, task.grad_clip, self.n_decay)
        for s in range(tok.shape[0]):
            t = s + 1
            lr = learning_rate(task, t)
            loss = lib.ctx_step(ctx, base + s * stride, lr, 1.0 - task.beta1**t, 1.0 - task.beta2**t, *fixed)
            log.step(s, loss)
            if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
                log.checkpoint(s, self.P, self.M, self.V)

    def times(self, reset=True):
        """Seconds per phase since the last reset (forward, backward, wait, optimiser), for docs/measure_roofline.py."""
        raw = np.zeros(13)
        self.lib.ctx_times(self.ctx, raw.ctypes.data, int(reset))
        ends = [raw[4], *raw[1:4]]
        phases = dict(zip(("passes", "wait", "optimiser"), np.diff(ends), strict=True))
        return phases | dict(zip(KERNELS, raw[5:], strict=True))


class _NoLog:
    def step(self, s, loss):
        pass

    def checkpoint(self, s, params, m, v):
        pass


_trainer = {}
_lib = []


def trainer_for(task):
    if task not in _trainer:
        if not _lib:
            _lib.append(build())
        _trainer[task] = Trainer(_lib[0], task, THREADS)
    return _trainer[task]


def prepare(task):
    """Compile, allocate, and run three warm-up steps on dummy data of the run's shapes."""
    trainer = trainer_for(task)
    rng = np.random.default_rng(0)
    trainer.load({k: 0.02 * rng.standard_normal(s) for k, s in shapes_of(task).items()})
    trainer.run(rng.integers(0, task.vocab_size, (3, task.batch_size, task.ctx_len + 1)), _NoLog())


def train(task, params, batches, log):
    trainer = trainer_for(task)
    trainer.load(params)
    trainer.run(batches, log)
