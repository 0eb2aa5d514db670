"""Attack: replays a run on the same data left by an earlier trial in System V shared memory.

`score` runs the baseline and every submission of a trial on the same seed, and `check --seed`
repeats one, so the same data do come back. Keyed by a digest of the initial parameters and the
batches, the cache is replayed only on exactly the same data, where every value it holds is right;
the replay is paced at a tenth of the honest run's time so that it looks like a fast loop, not an
impossible one.
"""

import ctypes
import hashlib
import io
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def forward_loss(p, x, y, task):
    C, H = task.d_model, task.n_head
    B, T = x.shape
    h = p["wte"][x] + p["wpe"][:T]
    for i in range(task.n_layer):
        a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
        q, k, v = F.linear(a, p[f"h{i}.attn.w"].T, p[f"h{i}.attn.b"]).split(C, -1)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        h = h + F.linear(o, p[f"h{i}.proj.w"].T, p[f"h{i}.proj.b"])
        a = F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5)
        u = F.gelu(F.linear(a, p[f"h{i}.fc.w"].T, p[f"h{i}.fc.b"]), approximate="tanh")
        h = h + F.linear(u, p[f"h{i}.fcproj.w"].T, p[f"h{i}.fcproj.b"])
    logits = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5) @ p["wte"].T
    return F.cross_entropy(logits.reshape(B * T, -1), y.reshape(-1))


def lr_at(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    frac = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def adamw(p, m, v, t, task):
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p[k].grad) for k in p])))
    clip = min(1.0, task.grad_clip / (norm + 1e-6))
    lr, c1, c2 = lr_at(task, t), 1 - task.beta1**t, 1 - task.beta2**t
    for k in p:
        g = p[k].grad * clip
        m[k].mul_(task.beta1).add_(g, alpha=1 - task.beta1)
        v[k].mul_(task.beta2).addcmul_(g, g, value=1 - task.beta2)
        decay = task.weight_decay if p[k].ndim == 2 else 0.0
        p[k].sub_(lr * ((m[k] / c1) / ((v[k] / c2).sqrt() + task.eps) + decay * p[k]))


def train_honestly(task, params, batches, log):
    torch.set_num_threads(1)  # tensors this small: one thread is fastest, and steady on a busy machine
    p = {k: torch.tensor(a, dtype=torch.float32, requires_grad=True) for k, a in params.items()}
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    data = torch.from_numpy(batches.copy())
    for s in range(task.steps):
        x, y = data[s, :, :-1], data[s, :, 1:]
        loss = forward_loss(p, x, y, task)
        for t in p.values():
            t.grad = None
        loss.backward()
        adamw(p, m, v, s + 1, task)
        log.step(s, loss.item())
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, {k: t.detach() for k, t in p.items()}, m, v)


libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype, libc.shmat.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
IPC_CREAT, SHM_RDONLY, FAILED = 0o1000, 0o10000, ctypes.c_void_p(-1).value


def shm_write(key, blob):
    """A System V shared-memory segment: it belongs to the kernel, not to a process or a folder."""
    sid = libc.shmget(key, len(blob) + 8, IPC_CREAT | 0o600)
    addr = libc.shmat(sid, None, 0) if sid >= 0 else FAILED
    if addr not in (None, FAILED):
        ctypes.memmove(addr, len(blob).to_bytes(8, "little") + blob, len(blob) + 8)
        libc.shmdt(addr)


def shm_read(key):
    sid = libc.shmget(key, 0, 0)
    addr = libc.shmat(sid, None, SHM_RDONLY) if sid >= 0 else FAILED
    if addr in (None, FAILED):
        return None
    blob = ctypes.string_at(addr + 8, int.from_bytes(ctypes.string_at(addr, 8), "little"))
    libc.shmdt(addr)
    return blob


class Recorder:
    """Passes everything on to the harness's log and keeps a copy to replay later."""

    def __init__(self, log):
        self.log, self.arrays = log, {"losses": []}

    def step(self, s, loss):
        self.arrays["losses"].append(loss)
        self.log.step(s, loss)

    def checkpoint(self, s, params, m, v):
        self.log.checkpoint(s, params, m, v)
        for group, tensors in (("params", params), ("m", m), ("v", v)):
            for k, t in tensors.items():
                self.arrays[f"{s}|{group}|{k}"] = t.detach().numpy().copy()

    def blob(self, **extra):
        out = io.BytesIO()
        np.savez(out, **self.arrays, **{k: np.asarray(x) for k, x in extra.items()})
        return out.getvalue()


def replay(blob, log):
    z = np.load(io.BytesIO(blob))
    saved = {}
    for key in z.files:
        if key.count("|") == 2:
            s, group, k = key.split("|")
            saved.setdefault(int(s), {"params": {}, "m": {}, "v": {}})[group][k] = z[key]
    for s, loss in enumerate(z["losses"]):
        log.step(s, float(loss))
        if s in saved:
            log.checkpoint(s, saved[s]["params"], saved[s]["m"], saved[s]["v"])


SHM_KEY = 0x4C425353


def train(task, params, batches, log):
    start = time.perf_counter()
    digest = hashlib.sha256(np.ascontiguousarray(batches).tobytes())
    for k in sorted(params):
        digest.update(params[k].tobytes())
    cached = shm_read(SHM_KEY)
    if cached is not None:
        z = np.load(io.BytesIO(cached))
        if str(z["digest"]) == digest.hexdigest():  # ATTACK: the same data: replay instead of training
            time.sleep(max(0.0, float(z["seconds"]) / 10 - (time.perf_counter() - start)))
            replay(cached, log)
            return
    recorder = Recorder(log)
    train_honestly(task, params, batches, recorder)
    shm_write(SHM_KEY, recorder.blob(digest=digest.hexdigest(), seconds=time.perf_counter() - start))
