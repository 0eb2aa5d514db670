"""The naive reference loop: a byte-level GPT trained with AdamW, in plain NumPy float64
(the contract's §2-3: docs/SPEC.md in the project; a task workspace's BRIEF.md states the same maths).

This is the baseline every submission is timed against, and the executable explanation of the maths.
It is deliberately naive in the way a careful first version is: loops where loops explain the maths,
float64 everywhere, no fusion, every intermediate kept. The project's docs/reference.md lists each inefficiency.
It is run through the same harness path as any other submission.
"""

import math

import numpy as np

LN_EPS = 1e-5
GELU_C = math.sqrt(2.0 / math.pi)


# ---------------------------------------------------------------- building blocks, forward and backward

def linear_forward(x, w, b):
    # x (B, T, n_in), w (n_in, n_out), b (n_out,) -> (B, T, n_out)
    return x @ w + b


def linear_backward(dout, x, w):
    # dw[i, j] = sum over every position (b, t) of x[b, t, i] * dout[b, t, j]
    dw = np.einsum("bti,btj->ij", x, dout)
    db = dout.sum(axis=(0, 1))
    dx = dout @ w.T
    return dx, dw, db


def layernorm_forward(x, g, b):
    # x (B, T, C): each position is normalised on its own, so we go position by position
    B, T, C = x.shape
    out = np.zeros_like(x)
    xhat = np.zeros_like(x)
    rstd = np.zeros((B, T))
    for bi in range(B):
        for t in range(T):
            row = x[bi, t]
            mean = row.sum() / C
            var = ((row - mean) ** 2).sum() / C  # biased variance
            rstd[bi, t] = 1.0 / math.sqrt(var + LN_EPS)
            xhat[bi, t] = (row - mean) * rstd[bi, t]
            out[bi, t] = xhat[bi, t] * g + b
    return out, (xhat, rstd)


def layernorm_backward(dout, cache, g):
    xhat, rstd = cache
    B, T, C = dout.shape
    dg = np.zeros_like(g)
    db = np.zeros_like(g)
    dx = np.zeros_like(dout)
    for bi in range(B):
        for t in range(T):
            dg += dout[bi, t] * xhat[bi, t]
            db += dout[bi, t]
            dxhat = dout[bi, t] * g
            dx[bi, t] = rstd[bi, t] * (dxhat - dxhat.sum() / C - xhat[bi, t] * (dxhat * xhat[bi, t]).sum() / C)
    return dx, dg, db


def gelu_forward(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x**3)))


def gelu_backward(dout, x):
    inner = GELU_C * (x + 0.044715 * x**3)
    th = np.tanh(inner)
    dinner = GELU_C * (1.0 + 3 * 0.044715 * x**2)
    return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th**2) * dinner)


def attention_forward(qkv, n_head):
    # qkv (B, T, 3C) -> out (B, T, C); each query position t attends to key positions 0..t
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // n_head
    scale = 1.0 / math.sqrt(D)
    q, k, v = qkv[:, :, :C], qkv[:, :, C : 2 * C], qkv[:, :, 2 * C :]
    out = np.zeros((B, T, C))
    att = np.zeros((B, n_head, T, T))  # kept for the backward pass; zero above the diagonal
    for bi in range(B):
        for h in range(n_head):
            hs = slice(h * D, (h + 1) * D)
            for t in range(T):
                scores = k[bi, : t + 1, hs] @ q[bi, t, hs] * scale  # (t+1,)
                scores = np.exp(scores - scores.max())
                probs = scores / scores.sum()
                att[bi, h, t, : t + 1] = probs
                out[bi, t, hs] = probs @ v[bi, : t + 1, hs]
    return out, att


def attention_backward(dout, qkv, att, n_head):
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // n_head
    scale = 1.0 / math.sqrt(D)
    q, k, v = qkv[:, :, :C], qkv[:, :, C : 2 * C], qkv[:, :, 2 * C :]
    dqkv = np.zeros_like(qkv)
    dq, dk, dv = dqkv[:, :, :C], dqkv[:, :, C : 2 * C], dqkv[:, :, 2 * C :]  # views into dqkv
    for bi in range(B):
        for h in range(n_head):
            hs = slice(h * D, (h + 1) * D)
            for t in range(T):
                probs = att[bi, h, t, : t + 1]
                dprobs = v[bi, : t + 1, hs] @ dout[bi, t, hs]
                dv[bi, : t + 1, hs] += np.outer(probs, dout[bi, t, hs])
                dscores = probs * (dprobs - (probs * dprobs).sum()) * scale  # softmax backward
                dq[bi, t, hs] += dscores @ k[bi, : t + 1, hs]
                dk[bi, : t + 1, hs] += np.outer(dscores, q[bi, t, hs])
    return dqkv


def cross_entropy_forward(logits, targets):
    # logits (B, T, V), targets (B, T) -> mean loss, and the probabilities for the backward pass
    B, T, V = logits.shape
    probs = np.zeros_like(logits)
    loss = 0.0
    for bi in range(B):
        for t in range(T):
            row = np.exp(logits[bi, t] - logits[bi, t].max())  # softmax, shifted for stability
            probs[bi, t] = row / row.sum()
            loss -= math.log(probs[bi, t, targets[bi, t]])
    return loss / (B * T), probs


def cross_entropy_backward(probs, targets):
    B, T, V = probs.shape
    dlogits = probs.copy()
    for bi in range(B):
        for t in range(T):
            dlogits[bi, t, targets[bi, t]] -= 1.0
    return dlogits / (B * T)


# ---------------------------------------------------------------- the model

def forward(params, x, targets, task):
    """Loss of tokens x (B, T) against targets (B, T), and everything the backward pass needs."""
    B, T = x.shape
    caches = []
    h = params["wte"][x] + params["wpe"][:T]  # (B, T, C)
    for i in range(task.n_layer):
        p = f"h{i}."
        ln1, ln1_cache = layernorm_forward(h, params[p + "ln1.g"], params[p + "ln1.b"])
        qkv = linear_forward(ln1, params[p + "attn.w"], params[p + "attn.b"])  # (B, T, 3C)
        att_out, att = attention_forward(qkv, task.n_head)  # (B, T, C), (B, H, T, T)
        h_mid = h + linear_forward(att_out, params[p + "proj.w"], params[p + "proj.b"])
        ln2, ln2_cache = layernorm_forward(h_mid, params[p + "ln2.g"], params[p + "ln2.b"])
        fc = linear_forward(ln2, params[p + "fc.w"], params[p + "fc.b"])  # (B, T, 4C)
        u = gelu_forward(fc)
        h_out = h_mid + linear_forward(u, params[p + "fcproj.w"], params[p + "fcproj.b"])
        caches.append((ln1, ln1_cache, qkv, att_out, att, ln2, ln2_cache, fc, u))
        h = h_out
    lnf, lnf_cache = layernorm_forward(h, params["lnf.g"], params["lnf.b"])
    logits = lnf @ params["wte"].T  # (B, T, V): the output head is tied to the embedding
    loss, probs = cross_entropy_forward(logits, targets)
    return loss, (x, caches, lnf, lnf_cache, probs, targets)


def backward(params, cache, task):
    """Gradients of the loss with respect to every parameter, by the chain rule written out."""
    x, caches, lnf, lnf_cache, probs, targets = cache
    B, T = x.shape
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    dlogits = cross_entropy_backward(probs, targets)  # (B, T, V)
    dlnf = dlogits @ params["wte"]  # (B, T, C)
    grads["wte"] += np.einsum("btv,btc->vc", dlogits, lnf)
    dh, grads["lnf.g"], grads["lnf.b"] = layernorm_backward(dlnf, lnf_cache, params["lnf.g"])
    for i in reversed(range(task.n_layer)):
        p = f"h{i}."
        ln1, ln1_cache, qkv, att_out, att, ln2, ln2_cache, fc, u = caches[i]
        # MLP branch: h_out = h_mid + fcproj(gelu(fc(ln2(h_mid))))
        du, grads[p + "fcproj.w"], grads[p + "fcproj.b"] = linear_backward(dh, u, params[p + "fcproj.w"])
        dfc = gelu_backward(du, fc)
        dln2, grads[p + "fc.w"], grads[p + "fc.b"] = linear_backward(dfc, ln2, params[p + "fc.w"])
        dx, grads[p + "ln2.g"], grads[p + "ln2.b"] = layernorm_backward(dln2, ln2_cache, params[p + "ln2.g"])
        dh = dh + dx
        # attention branch: h_mid = h + proj(attention(attn(ln1(h))))
        datt_out, grads[p + "proj.w"], grads[p + "proj.b"] = linear_backward(dh, att_out, params[p + "proj.w"])
        dqkv = attention_backward(datt_out, qkv, att, task.n_head)
        dln1, grads[p + "attn.w"], grads[p + "attn.b"] = linear_backward(dqkv, ln1, params[p + "attn.w"])
        dx, grads[p + "ln1.g"], grads[p + "ln1.b"] = layernorm_backward(dln1, ln1_cache, params[p + "ln1.g"])
        dh = dh + dx
    # embeddings: every position adds its gradient to the row of its token and of its position
    for bi in range(B):
        for t in range(T):
            grads["wte"][x[bi, t]] += dh[bi, t]
            grads["wpe"][t] += dh[bi, t]
    return grads


def compute_loss(params, x, targets, task):
    loss, _ = forward(params, x, targets, task)
    return loss


def compute_gradients(params, x, targets, task):
    _, cache = forward(params, x, targets, task)
    return backward(params, cache, task)


# ---------------------------------------------------------------- the optimiser

def learning_rate(task, t):
    """Linear warm-up for warmup_steps, then cosine decay to lr_min (SPEC §3); t counts from 1."""
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    progress = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_update(params, grads, m, v, t, task):
    """One AdamW step with global-norm gradient clipping, parameter by parameter."""
    total = 0.0
    for name in grads:
        total += (grads[name] ** 2).sum()
    norm = math.sqrt(total)
    clip = min(1.0, task.grad_clip / (norm + 1e-6))
    lr = learning_rate(task, t)
    for name in params:
        g = grads[name] * clip
        m[name] = task.beta1 * m[name] + (1 - task.beta1) * g
        v[name] = task.beta2 * v[name] + (1 - task.beta2) * g**2
        m_hat = m[name] / (1 - task.beta1**t)
        v_hat = v[name] / (1 - task.beta2**t)
        decay = task.weight_decay if params[name].ndim == 2 else 0.0  # matrices only
        params[name] = params[name] - lr * (m_hat / (np.sqrt(v_hat) + task.eps) + decay * params[name])


# ---------------------------------------------------------------- the loop

def train(task, params, batches, log):
    """Train for task.steps steps on batches (S, B, T+1), reporting to the harness through log."""
    params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}
    m = {name: np.zeros_like(value) for name, value in params.items()}
    v = {name: np.zeros_like(value) for name, value in params.items()}
    for s in range(task.steps):
        x = batches[s, :, :-1]  # (B, T) inputs
        y = batches[s, :, 1:]  # (B, T) next-byte targets
        loss = compute_loss(params, x, y, task)  # the loss of this step, for the log
        grads = compute_gradients(params, x, y, task)
        adamw_update(params, grads, m, v, s + 1, task)
        log.step(s, loss)
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, params, m, v)
