"""Rung 1: the reference loop vectorised, still float64 (a first hour's work).

What changed against reference_loop/train.py, and nothing else:
- LayerNorm, attention, cross-entropy and the embedding gradient work on whole arrays instead of
  looping over positions, heads and tokens (attention becomes batched matrix products with a causal mask);
- the loss comes from the same forward pass as the gradients (the reference runs the forward twice);
- the weight gradients of linear layers are one matrix product over the flattened (B*T) rows instead of einsum.
"""

import math

import numpy as np

LN_EPS = 1e-5
GELU_C = math.sqrt(2.0 / math.pi)


def linear_backward(dout, x, w):
    n_in, n_out = w.shape
    x2, d2 = x.reshape(-1, n_in), dout.reshape(-1, n_out)
    return dout @ w.T, x2.T @ d2, d2.sum(axis=0)


def layernorm_forward(x, g, b):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + LN_EPS)
    xhat = xc * rstd
    return xhat * g + b, (xhat, rstd)


def layernorm_backward(dout, cache, g):
    xhat, rstd = cache
    dg = (dout * xhat).sum(axis=(0, 1))
    db = dout.sum(axis=(0, 1))
    dxhat = dout * g
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dg, db


def gelu_forward(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x**3)))


def gelu_backward(dout, x):
    th = np.tanh(GELU_C * (x + 0.044715 * x**3))
    return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th**2) * GELU_C * (1.0 + 3 * 0.044715 * x**2))


def split_heads(t, n_head):
    B, T, C = t.shape
    return t.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, H, T, D)


def merge_heads(t):
    B, H, T, D = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attention_forward(qkv, n_head):
    C = qkv.shape[-1] // 3
    q, k, v = (split_heads(qkv[:, :, i * C : (i + 1) * C], n_head) for i in range(3))
    T = q.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(0, 1, 3, 2) * scale  # (B, H, T, T)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    att = np.exp(scores - scores.max(axis=-1, keepdims=True))
    att /= att.sum(axis=-1, keepdims=True)
    return merge_heads(att @ v), (q, k, v, att)


def attention_backward(dout, cache):
    q, k, v, att = cache
    scale = 1.0 / math.sqrt(q.shape[-1])
    do = split_heads(dout, q.shape[1])
    dv = att.transpose(0, 1, 3, 2) @ do
    datt = do @ v.transpose(0, 1, 3, 2)
    dscores = att * (datt - (att * datt).sum(axis=-1, keepdims=True)) * scale
    dq = dscores @ k
    dk = dscores.transpose(0, 1, 3, 2) @ q
    return np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)


def forward_backward(params, x, y, task):
    """The loss and the gradients of every parameter, from one forward pass."""
    B, T = x.shape
    caches = []
    h = params["wte"][x] + params["wpe"][:T]
    for i in range(task.n_layer):
        p = f"h{i}."
        ln1, ln1_c = layernorm_forward(h, params[p + "ln1.g"], params[p + "ln1.b"])
        qkv = ln1 @ params[p + "attn.w"] + params[p + "attn.b"]
        att_out, att_c = attention_forward(qkv, task.n_head)
        h_mid = h + att_out @ params[p + "proj.w"] + params[p + "proj.b"]
        ln2, ln2_c = layernorm_forward(h_mid, params[p + "ln2.g"], params[p + "ln2.b"])
        fc = ln2 @ params[p + "fc.w"] + params[p + "fc.b"]
        u = gelu_forward(fc)
        h = h_mid + u @ params[p + "fcproj.w"] + params[p + "fcproj.b"]
        caches.append((ln1, ln1_c, att_c, att_out, ln2, ln2_c, fc, u))
    lnf, lnf_c = layernorm_forward(h, params["lnf.g"], params["lnf.b"])
    logits = lnf @ params["wte"].T
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    bi, ti = np.indices((B, T))
    loss = -np.log(probs[bi, ti, y]).mean()

    grads = {}
    dlogits = probs
    dlogits[bi, ti, y] -= 1.0
    dlogits /= B * T
    V = dlogits.shape[-1]
    dlnf = dlogits @ params["wte"]
    grads["wte"] = dlogits.reshape(-1, V).T @ lnf.reshape(-1, lnf.shape[-1])
    dh, grads["lnf.g"], grads["lnf.b"] = layernorm_backward(dlnf, lnf_c, params["lnf.g"])
    for i in reversed(range(task.n_layer)):
        p = f"h{i}."
        ln1, ln1_c, att_c, att_out, ln2, ln2_c, fc, u = caches[i]
        du, grads[p + "fcproj.w"], grads[p + "fcproj.b"] = linear_backward(dh, u, params[p + "fcproj.w"])
        dfc = gelu_backward(du, fc)
        dln2, grads[p + "fc.w"], grads[p + "fc.b"] = linear_backward(dfc, ln2, params[p + "fc.w"])
        dx, grads[p + "ln2.g"], grads[p + "ln2.b"] = layernorm_backward(dln2, ln2_c, params[p + "ln2.g"])
        dh = dh + dx
        datt, grads[p + "proj.w"], grads[p + "proj.b"] = linear_backward(dh, att_out, params[p + "proj.w"])
        dqkv = attention_backward(datt, att_c)
        dln1, grads[p + "attn.w"], grads[p + "attn.b"] = linear_backward(dqkv, ln1, params[p + "attn.w"])
        dx, grads[p + "ln1.g"], grads[p + "ln1.b"] = layernorm_backward(dln1, ln1_c, params[p + "ln1.g"])
        dh = dh + dx
    C = dh.shape[-1]
    np.add.at(grads["wte"], x.reshape(-1), dh.reshape(-1, C))
    grads["wpe"] = np.zeros_like(params["wpe"])
    grads["wpe"][:T] = dh.sum(axis=0)
    return loss, grads


def learning_rate(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    progress = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_update(params, grads, m, v, t, task):
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    clip = min(1.0, task.grad_clip / (norm + 1e-6))
    lr = learning_rate(task, t)
    c1, c2 = 1 - task.beta1**t, 1 - task.beta2**t
    for name in params:
        g = grads[name] * clip
        m[name] = task.beta1 * m[name] + (1 - task.beta1) * g
        v[name] = task.beta2 * v[name] + (1 - task.beta2) * g * g
        decay = task.weight_decay if params[name].ndim == 2 else 0.0
        params[name] = params[name] - lr * ((m[name] / c1) / (np.sqrt(v[name] / c2) + task.eps) + decay * params[name])


def train(task, params, batches, log):
    params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}
    m = {name: np.zeros_like(value) for name, value in params.items()}
    v = {name: np.zeros_like(value) for name, value in params.items()}
    for s in range(task.steps):
        x, y = batches[s, :, :-1], batches[s, :, 1:]
        loss, grads = forward_backward(params, x, y, task)
        adamw_update(params, grads, m, v, s + 1, task)
        log.step(s, float(loss))
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, params, m, v)
