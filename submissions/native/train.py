"""Rung 6, native: the old champion (no autograd, flat buffers, two single-threaded streams of torch kernels) with
the two parts its profile put on top after the GEMMs moved into C, compiled in prepare:

- causal attention for small heads (forward keeps the probabilities, backward reuses them instead of recomputing
  them as the flash-attention kernel does), and no head rearranging copies: the kernels read q, k and v where the
  QKV GEMM wrote them and write o and dqkv in the layouts the next GEMMs read;
- the tanh GELU and its derivative, one pass each instead of six torch kernels.

The GEMMs, LayerNorm, the loss and AdamW stay torch's (MKL and ATen). kernels.c is compiled with the system C
compiler, -O3 -march=native (AVX-512 or AVX2, whichever the CPU has) and -ffast-math, which lets the compiler
vectorise tanhf and expf through glibc's vector math library.
"""

import concurrent.futures
import ctypes
import math
import os
import subprocess
import time

import torch

LN_EPS = 1e-5
THREADS = int(os.environ.get("LOOPBENCH_NATIVE_THREADS", torch.get_num_threads()))
HERE = os.path.dirname(os.path.abspath(__file__))
LIB = []


def build():
    """Compile kernels.c into build/ of the working folder; -march=native picks AVX-512 or AVX2 code."""
    os.makedirs("build", exist_ok=True)
    target = os.path.abspath(os.path.join("build", "kernels.so"))
    flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fPIC"]
    cc, obj = os.environ.get("CC", "cc"), target[:-3] + ".o"
    subprocess.run([cc, *flags, "-c", os.path.join(HERE, "kernels.c"), "-o", obj], check=True, capture_output=True)
    # linked without -ffast-math: its start-up file would set flush-to-zero for the whole process, torch included
    subprocess.run([cc, "-shared", obj, "-o", target, "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(target)
    lib.attention_forward.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 4
    lib.attention_backward.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 4
    lib.gelu_forward.argtypes = lib.gelu_backward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    return lib


def lib():
    if not LIB:
        LIB.append(build())
    return LIB[0]


def ptr(t):
    return t.data_ptr()


aten = torch.ops.aten


def layer_names(i):
    return [
        f"h{i}.{n}"
        for n in (
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
    ]


def shapes_of(task):
    V, T, C = task.vocab_size, task.ctx_len, task.d_model
    s = {"wte": (V, C), "wpe": (T, C)}
    for i in range(task.n_layer):
        s |= dict(
            zip(
                layer_names(i),
                [(C,), (C,), (C, 3 * C), (3 * C,), (C, C), (C,), (C,), (C,), (C, 4 * C), (4 * C,), (4 * C, C), (C,)],
            )
        )
    s |= {"lnf.g": (C,), "lnf.b": (C,)}
    return s


class Flat:
    """Four flat float32 buffers (params, grads, m, v) holding the 2-D (decayed) tensors first, then the rest."""

    def __init__(self, task):
        shapes = shapes_of(task)
        order = [k for k, s in shapes.items() if len(s) == 2] + [k for k, s in shapes.items() if len(s) != 2]
        sizes = [math.prod(shapes[k]) for k in order]
        self.n_decay = sum(math.prod(shapes[k]) for k in order if len(shapes[k]) == 2)
        total = sum(sizes)
        self.p, self.g, self.m, self.v = (torch.zeros(total) for _ in range(4))
        self.P, self.G, self.M, self.V = {}, {}, {}, {}
        at = 0
        for k, n in zip(order, sizes):
            for buf, views in ((self.p, self.P), (self.g, self.G), (self.m, self.M), (self.v, self.V)):
                views[k] = buf[at : at + n].view(shapes[k])
            at += n
        self.names = list(shapes)  # SPEC order, for checkpoints

    def groups(self):
        d = self.n_decay
        return [(t[:d], t[d:]) for t in (self.p, self.g, self.m, self.v)]


class Model:
    """Preallocated activations for one (B, T) batch shape, and the forward and backward passes."""

    def __init__(self, task, B):
        """Activations for B of the batch's task.batch_size sequences; gradients are of the whole batch's mean loss."""
        self.task = task
        T, C, H, V = task.ctx_len, task.d_model, task.n_head, task.vocab_size
        self.grad_scale = 1.0 / (task.batch_size * T)
        self.B, self.T, self.C, self.H, self.D, self.N = B, T, C, H, C // H, B * T
        N, L = self.N, task.n_layer
        e = lambda *s: torch.empty(s)  # noqa: E731
        self.h = [e(N, C) for _ in range(L + 1)]  # residual stream entering each layer, and the last one
        self.hmid = [e(N, C) for _ in range(L)]
        self.a1, self.a2 = [e(N, C) for _ in range(L)], [e(N, C) for _ in range(L)]
        self.qkv = [e(N, 3 * C) for _ in range(L)]
        self.o = [e(N, C) for _ in range(L)]
        self.f, self.u = ([e(N, 4 * C) for _ in range(L)] for _ in range(2))
        self.probs_att = [e(B, task.n_head, T, T) for _ in range(L)]
        self.lib = lib()
        self.stats = [[None] * 4 for _ in range(L)]  # (unused, unused, ln1 mean/rstd, ln2 mean/rstd)
        self.lnf, self.logits, self.probs = e(N, C), e(N, V), e(N, V)
        self.rows = torch.arange(N)
        self.dh, self.dtmp, self.dff, self.dqkv = e(N, C), e(N, C), e(N, 4 * C), e(N, 3 * C)
        self.scale = 1.0 / math.sqrt(self.D)

    def forward(self, P, x, y):
        """Mean loss over these rows (a float); keeps every activation the backward pass needs."""
        B, T, C, N = self.B, self.T, self.C, self.N
        h0 = self.h[0].view(B, T, C)
        torch.index_select(P["wte"], 0, x.reshape(-1), out=self.h[0])
        h0 += P["wpe"]
        for i in range(self.task.n_layer):
            p = f"h{i}."
            st = self.stats[i]
            a1, m1, r1 = aten.native_layer_norm(self.h[i], [C], P[p + "ln1.g"], P[p + "ln1.b"], LN_EPS)
            self.a1[i] = a1
            torch.addmm(P[p + "attn.b"], a1, P[p + "attn.w"], out=self.qkv[i])
            self.lib.attention_forward(ptr(self.qkv[i]), ptr(self.o[i]), ptr(self.probs_att[i]), B, T, C, self.H)
            torch.addmm(P[p + "proj.b"], self.o[i], P[p + "proj.w"], out=self.hmid[i])
            self.hmid[i] += self.h[i]
            a2, m2, r2 = aten.native_layer_norm(self.hmid[i], [C], P[p + "ln2.g"], P[p + "ln2.b"], LN_EPS)
            self.a2[i] = a2
            st[2], st[3] = (m1, r1), (m2, r2)
            f, u = self.f[i], self.u[i]
            torch.addmm(P[p + "fc.b"], a2, P[p + "fc.w"], out=f)
            self.lib.gelu_forward(ptr(f), ptr(u), f.numel())
            torch.addmm(P[p + "fcproj.b"], u, P[p + "fcproj.w"], out=self.h[i + 1])
            self.h[i + 1] += self.hmid[i]
        L = self.task.n_layer
        lnf, mf, rf = aten.native_layer_norm(self.h[L], [C], P["lnf.g"], P["lnf.b"], LN_EPS)
        self.lnf, self.lnf_stats = lnf, (mf, rf)
        torch.mm(lnf, P["wte"].t(), out=self.logits)
        # one softmax pass; loss = mean(-log p[target]), which equals mean(logsumexp - logit[target])
        rows = self.rows
        yt = y.reshape(-1)
        aten._softmax.out(self.logits, 1, False, out=self.probs)
        target_p = self.probs[rows, yt]
        if bool((target_p > 0).all()):
            loss = float(-torch.log(target_p).mean())
        else:  # a probability that underflowed: take the loss from the logits instead
            loss = float((torch.logsumexp(self.logits, 1) - self.logits[rows, yt]).mean())
        self.logits, self.probs = self.probs, self.logits
        self.logits[rows, yt] -= 1.0
        self.logits.mul_(self.grad_scale)  # now d(batch mean loss)/dlogits
        return loss

    def backward(self, P, G, x):
        B, T, C, N = self.B, self.T, self.C, self.N
        dlog = self.logits
        torch.mm(dlog.t(), self.lnf, out=G["wte"])
        dlnf = torch.mm(dlog, P["wte"], out=self.dtmp)
        dh, G["lnf.g"][:], G["lnf.b"][:] = self._ln_back(
            dlnf, self.h[self.task.n_layer], self.lnf_stats, P["lnf.g"], P["lnf.b"]
        )
        self.dh.copy_(dh)
        dh = self.dh
        for i in reversed(range(self.task.n_layer)):
            p = f"h{i}."
            st = self.stats[i]
            # MLP: h[i+1] = hmid + u @ Wfp + bfp, u = GELU(f)
            torch.mm(self.u[i].t(), dh, out=G[p + "fcproj.w"])
            torch.sum(dh, 0, out=G[p + "fcproj.b"])
            du = torch.mm(dh, P[p + "fcproj.w"].t(), out=self.dff)
            self.lib.gelu_backward(ptr(self.f[i]), ptr(du), du.numel())
            torch.mm(self.a2[i].t(), du, out=G[p + "fc.w"])
            torch.sum(du, 0, out=G[p + "fc.b"])
            da2 = torch.mm(du, P[p + "fc.w"].t(), out=self.dtmp)
            dx, G[p + "ln2.g"][:], G[p + "ln2.b"][:] = self._ln_back(
                da2, self.hmid[i], st[3], P[p + "ln2.g"], P[p + "ln2.b"]
            )
            dh += dx
            # attention: hmid = h + o @ Wproj + bproj
            torch.mm(self.o[i].t(), dh, out=G[p + "proj.w"])
            torch.sum(dh, 0, out=G[p + "proj.b"])
            do = torch.mm(dh, P[p + "proj.w"].t(), out=self.dtmp)
            args = (ptr(self.qkv[i]), ptr(self.o[i]), ptr(self.probs_att[i]), ptr(do), ptr(self.dqkv))
            self.lib.attention_backward(*args, B, T, C, self.H)
            torch.mm(self.a1[i].t(), self.dqkv, out=G[p + "attn.w"])
            torch.sum(self.dqkv, 0, out=G[p + "attn.b"])
            da1 = torch.mm(self.dqkv, P[p + "attn.w"].t(), out=self.dtmp)
            dx, G[p + "ln1.g"][:], G[p + "ln1.b"][:] = self._ln_back(
                da1, self.h[i], st[2], P[p + "ln1.g"], P[p + "ln1.b"]
            )
            dh += dx
        G["wte"].index_add_(0, x.reshape(-1), dh)
        torch.sum(dh.view(B, T, C), 0, out=G["wpe"])

    def _ln_back(self, dout, inp, stats, g, b):
        return aten.native_layer_norm_backward(dout, inp, [self.C], stats[0], stats[1], g, b, [True, True, True])


def learning_rate(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    progress = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """The training loop. With two or more threads, the batch is split in two halves, each half's forward and
    backward pass runs single-threaded on its own core (torch releases the GIL inside its kernels), and the two
    gradient buffers are summed: two independent streams of small kernels scale better than splitting each
    small kernel over two threads."""

    def __init__(self, task, threads):
        self.task = task
        self.flat = Flat(task)
        self.step_t = torch.zeros(())
        halves = threads >= 2 and task.batch_size >= 2
        sizes = [task.batch_size // 2, task.batch_size - task.batch_size // 2] if halves else [task.batch_size]
        self.models = [Model(task, b) for b in sizes]
        self.bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.grads = [self.flat] + [Flat(task) for _ in sizes[1:]]
        self.marks = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1) if halves else None
        if halves:
            torch.set_num_threads(1)

    def load(self, params):
        for k, view in self.flat.P.items():
            view.copy_(torch.from_numpy(params[k]))
        for t in (self.flat.m, self.flat.v, self.flat.g):
            t.zero_()
        self.step_t.zero_()

    def _half(self, i, batch):
        lo, hi = self.bounds[i], self.bounds[i + 1]
        x, y = batch[lo:hi, :-1], batch[lo:hi, 1:]
        loss = self.models[i].forward(self.flat.P, x, y)
        if i == 0:
            self._mark("forward")
        self.models[i].backward(self.flat.P, self.grads[i].G, x)
        if i == 0:
            self._mark("backward")
        return loss * (hi - lo)

    def run(self, data, log):
        task, fl, mark = self.task, self.flat, self._mark
        (p_d, p_n), (g_d, g_n), (m_d, m_n), (v_d, v_n) = fl.groups()
        for s in range(data.shape[0]):
            mark("start")
            if self.pool is None:
                loss = self._half(0, data[s]) / task.batch_size
            else:
                other = self.pool.submit(self._half, 1, data[s])
                loss = self._half(0, data[s])
                loss += other.result()
                loss /= task.batch_size
                mark("wait")
                fl.g += self.grads[1].g
            mark("sum")
            norm = float(torch.linalg.vector_norm(fl.g, dtype=torch.float64))  # a float32 dot is off by ~1e-4
            clip = min(1.0, task.grad_clip / (norm + 1e-6))
            if clip < 1.0:
                fl.g.mul_(clip)
            lr = learning_rate(task, s + 1)
            self.step_t += 1
            kw = dict(lr=lr, beta1=task.beta1, beta2=task.beta2, eps=task.eps, amsgrad=False, maximize=False)
            aten._fused_adamw_([p_d], [g_d], [m_d], [v_d], [], [self.step_t], weight_decay=task.weight_decay, **kw)
            aten._fused_adamw_([p_n], [g_n], [m_n], [v_n], [], [self.step_t], weight_decay=0.0, **kw)
            mark("optimiser")
            log.step(s, loss)
            if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
                log.checkpoint(s, fl.P, fl.M, fl.V)
            mark("log")

    def _mark(self, phase):
        """Phase boundaries for docs/measure_roofline.py; nothing is recorded unless self.marks is a list."""
        if self.marks is not None:
            self.marks.append((phase, time.perf_counter()))


class _NoLog:
    def step(self, s, loss):
        pass

    def checkpoint(self, s, params, m, v):
        pass


_trainer = {}


def prepare(task):
    """Allocate every buffer and run three warm-up steps on dummy data of the run's shapes."""
    trainer = Trainer(task, THREADS)
    gen = torch.Generator().manual_seed(0)
    dummy = {k: (0.02 * torch.randn(s, generator=gen)).numpy() for k, s in shapes_of(task).items()}
    trainer.load(dummy)
    trainer.run(torch.randint(0, task.vocab_size, (3, task.batch_size, task.ctx_len + 1), generator=gen), _NoLog())
    _trainer[task] = trainer


def train(task, params, batches, log):
    trainer = _trainer.get(task) or Trainer(task, THREADS)
    trainer.load(params)
    trainer.run(torch.from_numpy(batches).long(), log)
