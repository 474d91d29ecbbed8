"""alignflow's models and losses in PyTorch, written to match the Go code
operation for operation (transformer/transformer.go, transformer/ops.go,
policy/policy.go, policy/sample.go, reward/reward.go, reinforce/reinforce.go,
optim/optim.go). Weights are alignflow's safetensors files with its
parameter names; linear weights are [in, out] and apply as x @ W.

Conventions copied from the Go code:
- RMSNorm: x * 1/sqrt(mean(x^2) + 1e-6) * gain (no bias).
- RoPE: rotate-half layout (the two halves of a head share frequencies),
  freq_i = 10000^(-2i/head_dim), positions 0..T-1, applied to q and k after
  splitting heads; tables computed in float64 and rounded to float32.
- Attention: softmax(q k^T / sqrt(head_dim) + causal bias) v, with bias -1e9
  above the diagonal; no padding mask (padding is on the right and attention
  is causal, so it never reaches earlier positions).
- MLP: w2(silu(w1 x)); no biases anywhere in the backbone; pre-norm blocks;
  final RMSNorm; the LM head is a separate [D, V] matrix (not tied).
- Reward model: backbone + head [D, 5] + bias [5] on the hidden state at the
  last real token; the scalar reward is output 0 (helpfulness).
- Generation prefills the left-padded prompts in one pass (padding masked
  out, positions from each row's first real token), then decodes one token
  per step through the KV cache, samples in float64 with temperature and
  top-p, and stops when every row is done (EOS, max_tokens, or max_len).
- The Llama-family options of transformer.Config (the scale benchmark's
  SmolLM2 shape): kv_heads (grouped-query attention; key/value head j
  serves query heads j*heads/kv_heads ..., as transformers' repeat_kv),
  head_dim, rope_theta, norm_eps, gated_mlp (w2(silu(w1 x) * w3 x)),
  qkv_bias (bq, bk, bv) and tied_embeddings (logits = h @ embed^T). Absent,
  they are the bundled model's choices above.

Device: tensors live on the device of the weights they go with (load_params
moves the weights; the functions that build token tensors take that device
from the weights, e.g. p["embed"].device, or a device argument). A sampling
generator must be on the same device (torch.Generator(device=...)).
"""

import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

NEG_INF = -1e9
RMS_EPS = 1e-6


# ---------------------------------------------------------------- safetensors

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    """Reads a safetensors file: 8-byte little-endian header length, JSON
    header, raw little-endian data. Returns (tensors by name, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    out = {}
    for name, e in header.items():
        dt = np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<")
        a, b = e["data_offsets"]
        arr = np.frombuffer(body[a:b], dtype=dt).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True))
    return out, meta


def load_params(path, requires_grad=False, device="cpu"):
    """The tensors of a safetensors file on device (leaf tensors, so the
    optimizer can update them)."""
    ts, meta = read_safetensors(path)
    ts = {name: t.to(device) for name, t in ts.items()}
    for t in ts.values():
        t.requires_grad_(requires_grad)
    return ts, meta


# ---------------------------------------------------------------- backbone

class Config:
    def __init__(self, d):
        self.vocab = d["vocab"]
        self.dim = d["dim"]
        self.heads = d["heads"]
        self.layers = d["layers"]
        self.hidden = d["hidden"]
        self.max_len = d["max_len"]
        self.head_dim = d.get("head_dim") or self.dim // self.heads
        self.kv_heads = d.get("kv_heads") or self.heads
        self.rope_theta = d.get("rope_theta") or 10000.0
        self.eps = d.get("norm_eps") or RMS_EPS
        self.gated = bool(d.get("gated_mlp"))
        self.qkv_bias = bool(d.get("qkv_bias"))
        self.tied = bool(d.get("tied_embeddings"))
        # The scale of the LoRA adapters the parameters hold (lora_alpha / r;
        # see linear), set by the caller that trains one.
        self.lora_scale = 0.0
        if d.get("rope_scaling"):
            raise ValueError("the reference does not implement rope_scaling")


def rms_norm(x, gain, eps=RMS_EPS):
    ms = x.square().mean(-1, keepdim=True)
    return x * (1.0 / torch.sqrt(ms + eps)) * gain


_rope_cache = {}


def rope_tables(t, head_dim, device="cpu", theta=10000.0):
    """cos, sin [t, head_dim] for positions 0..t-1 on device (computed on
    the CPU in float64, so every device gets the same float32 tables)."""
    device = torch.device(device)
    key = (t, head_dim, device, theta)
    if key not in _rope_cache:
        half = head_dim // 2
        freq = torch.tensor([math.pow(theta, -float(2 * i) / float(head_dim)) for i in range(half)], dtype=torch.float64)
        a = torch.arange(t, dtype=torch.float64)[:, None] * freq[None, :]
        cos = torch.cat([torch.cos(a), torch.cos(a)], -1).to(torch.float32)
        sin = torch.cat([torch.sin(a), torch.sin(a)], -1).to(torch.float32)
        _rope_cache[key] = (cos.to(device), sin.to(device))
    return _rope_cache[key]


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def split_heads(x, heads):
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def merge_heads(x):
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def attend(q, k, v, bias):
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, -1) @ v


_causal_cache = {}


def causal_bias(t, device="cpu"):
    device = torch.device(device)
    key = (t, device)
    if key not in _causal_cache:
        _causal_cache[key] = torch.triu(torch.full((t, t), NEG_INF, dtype=torch.float32, device=device), diagonal=1)
    return _causal_cache[key]


def linear(p, cfg, name, x):
    """x @ p[name], plus, where p holds a LoRA adapter of it (name.lora_a
    [in, r], name.lora_b [r, out]), the adapter's (x @ A) @ B * lora_scale:
    PEFT's LoRA Linear.forward, result + lora_B(lora_A(x)) * scaling
    (peft/tuners/lora/layer.py), in alignflow's [in, out] layout."""
    y = x @ p[name]
    a = p.get(name + ".lora_a")
    if a is not None:
        y = y + ((x @ a) @ p[name + ".lora_b"]) * cfg.lora_scale
    return y


def mlp(p, cfg, l, x):
    h = F.silu(linear(p, cfg, f"layer{l}.w1", x))
    if cfg.gated:
        h = h * linear(p, cfg, f"layer{l}.w3", x)
    return linear(p, cfg, f"layer{l}.w2", h)


def project(p, cfg, l, part, x):
    y = linear(p, cfg, f"layer{l}.{part}", x)
    if cfg.qkv_bias and part in ("wq", "wk", "wv"):
        y = y + p[f"layer{l}.b{part[1:]}"]
    return y


def qkv(p, cfg, l, h):
    """The layer's queries, keys and values split into heads, before RoPE."""
    return (split_heads(project(p, cfg, l, "wq", h), cfg.heads), split_heads(project(p, cfg, l, "wk", h), cfg.kv_heads),
            split_heads(project(p, cfg, l, "wv", h), cfg.kv_heads))


def lm_logits(p, cfg, h):
    """The language-model head: h @ lm_head, or h @ embed^T when tied."""
    return h @ (p["embed"].T if cfg.tied else p["lm_head"])


def hidden(p, cfg, tokens):
    """Final normalised hidden states [B,T,D] of tokens [B,T] (int64)."""
    t = tokens.shape[1]
    x = p["embed"][tokens]
    cos, sin = rope_tables(t, cfg.head_dim, x.device, cfg.rope_theta)
    bias = causal_bias(t, x.device)
    for l in range(cfg.layers):
        q, k, v = qkv(p, cfg, l, rms_norm(x, p[f"layer{l}.attn_norm"], cfg.eps))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        x = x + linear(p, cfg, f"layer{l}.wo", merge_heads(attend(q, k, v, bias)))
        x = x + mlp(p, cfg, l, rms_norm(x, p[f"layer{l}.mlp_norm"], cfg.eps))
    return rms_norm(x, p["final_norm"], cfg.eps)


def _blocks(p, cfg, x, pos, bias, k_cache, v_cache):
    """The blocks over x [B,T,D] at positions pos [B,T] with the additive
    mask bias [B,T,S], after the cached keys and values (None for none)."""
    cos_all, sin_all = rope_tables(cfg.max_len, cfg.head_dim, x.device, cfg.rope_theta)
    cos, sin = cos_all[pos].unsqueeze(1), sin_all[pos].unsqueeze(1)  # [B,1,T,Dh]
    new_k, new_v = [], []
    for l in range(cfg.layers):
        q, k, v = qkv(p, cfg, l, rms_norm(x, p[f"layer{l}.attn_norm"], cfg.eps))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if k_cache is not None:
            k = torch.cat([k_cache[l], k], 2)
            v = torch.cat([v_cache[l], v], 2)
        new_k.append(k)
        new_v.append(v)
        x = x + linear(p, cfg, f"layer{l}.wo", merge_heads(attend(q, k, v, bias.unsqueeze(1))))
        x = x + mlp(p, cfg, l, rms_norm(x, p[f"layer{l}.mlp_norm"], cfg.eps))
    return x, new_k, new_v


def _pad_bias(pads, s, device):
    """[B,S]: 0 at a row's real positions, NEG_INF at its pads[b] first."""
    j = torch.arange(s, device=device)[None, :]
    return torch.where(j >= pads[:, None], torch.zeros((), device=device), torch.full((), NEG_INF, device=device))


def prefill(p, cfg, tokens, pads):
    """transformer.Prefill: left-padded prompts tokens [B,P] (row b starts
    with pads[b] padding tokens) in one pass. Returns the logits at every
    row's last position [B,V] and the caches."""
    b, t = tokens.shape
    dev = tokens.device
    pos = torch.clamp(torch.arange(t, device=dev)[None, :] - pads[:, None], min=0)
    bias = causal_bias(t, dev)[None, :, :] + _pad_bias(pads, t, dev)[:, None, :]
    x, k, v = _blocks(p, cfg, p["embed"][tokens], pos, bias, None, None)
    h = rms_norm(x[:, -1], p["final_norm"], cfg.eps)
    return lm_logits(p, cfg, h), k, v


def decode_step(p, cfg, token, pads, k_cache, v_cache):
    """transformer.DecodeStep: one token per row through the KV cache, at
    position s - pads[b] (clamped for rows that are done). Returns logits
    [B,V] and the caches grown to s+1."""
    b = token.shape[0]
    s = k_cache[0].shape[2]
    pos = torch.clamp(s - pads, min=0, max=cfg.max_len - 1)[:, None]
    bias = _pad_bias(pads, s + 1, token.device)[:, None, :]
    x, k, v = _blocks(p, cfg, p["embed"][token].view(b, 1, cfg.dim), pos, bias, k_cache, v_cache)
    h = rms_norm(x, p["final_norm"], cfg.eps).view(b, cfg.dim)
    return lm_logits(p, cfg, h), k, v


# ---------------------------------------------------------------- policy

def token_logprobs(p, cfg, inputs, targets):
    logits = lm_logits(p, cfg, hidden(p, cfg, inputs))
    return torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def sft_loss(p, cfg, inputs, targets, mask):
    lp = token_logprobs(p, cfg, inputs, targets)
    n = torch.clamp(mask.sum(), min=1.0)
    return -(lp * mask).sum() / n


def bucket_len(n, max_len):
    return min(max_len, (n + 7) // 8 * 8)


def make_batch(cfg, size, prompts, responses, pad, device="cpu"):
    """policy.MakeBatch: inputs/targets/mask of exactly size rows, padded to
    the bucket length of the longest sequence, on device."""
    longest = 1
    for pr, rs in zip(prompts, responses):
        longest = max(longest, len(pr) + len(rs) - 1)
    t = bucket_len(longest, cfg.max_len)
    inputs = [[pad] * t for _ in range(size)]
    targets = [[pad] * t for _ in range(size)]
    mask = [[0.0] * t for _ in range(size)]
    for i, (pr, rs) in enumerate(zip(prompts, responses)):
        seq = list(pr) + list(rs)
        seq = seq[:t + 1]
        inputs[i][:len(seq) - 1] = seq[:-1]
        targets[i][:len(seq) - 1] = seq[1:]
        for j in range(len(pr) - 1, len(seq) - 1):
            mask[i][j] = 1.0
    return (torch.tensor(inputs, dtype=torch.int64, device=device),
            torch.tensor(targets, dtype=torch.int64, device=device),
            torch.tensor(mask, dtype=torch.float32, device=device))


# ---------------------------------------------------------------- sampling

def sample_tokens(logits, temperature, top_p, gen):
    """Temperature and nucleus sampling per row, in float64 like
    policy.sampleToken (top-p keeps tokens, most likely first, until their
    mass reaches top_p, the crossing token included). gen must be on
    logits' device."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, -1)
    if not (0 < top_p <= 1):
        top_p = 1.0
    if top_p < 1:
        sp, idx = probs.sort(-1, descending=True, stable=True)
        before = sp.cumsum(-1) - sp
        sp = torch.where(before < top_p, sp, torch.zeros_like(sp))
        probs = torch.zeros_like(probs).scatter(-1, idx, sp)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


class Sample:
    __slots__ = ("tokens", "ended", "logprobs")

    def __init__(self):
        self.tokens, self.ended, self.logprobs = [], False, []


def generate_chunk(p, cfg, prompts, rows, temperature, top_p, max_tokens, gen, eos, pad, forced=None):
    """policy.Engine.generateChunk: the prompts left-padded and prefilled in
    one pass, then one decode step per token. A response stops at EOS,
    after max_tokens, or when prompt and response fill max_len. forced,
    when given, holds a response per row to replay instead of sampling (to
    compare log-probabilities). Runs on the device of p's weights."""
    tmax = cfg.max_len
    dev = p["embed"].device
    longest = max(len(x) for x in prompts)
    tokens, pads = [], []
    for b in range(rows):
        pr = prompts[b] if b < len(prompts) else []
        tokens.append([pad] * (longest - len(pr)) + list(pr))
        pads.append(longest - len(pr) if pr else longest - 1)
    pads = torch.tensor(pads, dtype=torch.int64, device=dev)
    samples = [Sample() for _ in prompts]
    done = [b >= len(prompts) for b in range(rows)]
    cur = [pad] * rows
    steps = 1
    with torch.no_grad():
        logits, kc, vc = prefill(p, cfg, torch.tensor(tokens, dtype=torch.int64, device=dev), pads)
        while True:
            if forced is None:
                toks = sample_tokens(logits, temperature, top_p, gen).tolist()
            else:
                toks = [forced[b][len(samples[b].tokens)] if b < len(prompts) and len(samples[b].tokens) < len(forced[b]) else pad
                        for b in range(rows)]
            lps = torch.log_softmax(logits, -1).gather(
                -1, torch.tensor(toks, dtype=torch.int64, device=dev).unsqueeze(-1)).squeeze(-1).tolist()
            all_done = True
            for b in range(rows):
                if done[b]:
                    cur[b] = pad
                    continue
                tok = toks[b]
                sm = samples[b]
                sm.tokens.append(tok)
                sm.logprobs.append(lps[b])
                if tok == eos:
                    sm.ended = True
                    done[b] = True
                elif len(sm.tokens) >= max_tokens or len(prompts[b]) + len(sm.tokens) >= tmax:
                    done[b] = True
                if forced is not None and len(sm.tokens) >= len(forced[b]):
                    done[b] = True
                cur[b] = tok
                if not done[b]:
                    all_done = False
            if all_done:
                break
            logits, kc, vc = decode_step(p, cfg, torch.tensor(cur, dtype=torch.int64, device=dev), pads, kc, vc)
            steps += 1
    return samples, steps


def generate(p, cfg, prompts, batch_size, temperature, top_p, max_tokens, gen, eos, pad):
    out, steps = [], 0
    for start in range(0, len(prompts), batch_size):
        s, n = generate_chunk(p, cfg, prompts[start:start + batch_size], batch_size, temperature, top_p, max_tokens,
                              gen, eos, pad)
        out.extend(s)
        steps += n
    return out, steps


# ---------------------------------------------------------------- reward model

def reward_scores(p, cfg, tokens, last):
    h = hidden(p, cfg, tokens)
    h_last = h[torch.arange(h.shape[0], device=h.device), last]
    return h_last @ p["reward_head.w"] + p["reward_head.b"]


def pair_loss(rc, rr, margin, weight, valid):
    nll = F.softplus(-(rc - rr - margin))
    n = torch.clamp(valid.sum(), min=1.0)
    return (nll * weight * valid).sum() / n


def bt_loss(p, cfg, chosen, chosen_last, rejected, rejected_last, margin, weight, valid):
    rc = reward_scores(p, cfg, chosen, chosen_last)[:, 0]
    rr = reward_scores(p, cfg, rejected, rejected_last)[:, 0]
    loss = pair_loss(rc, rr, margin, weight, valid)
    n = torch.clamp(valid.sum(), min=1.0)
    acc = (((rc > rr).float()) * valid).sum() / n
    return loss, acc


def sequence(prompt, response, max_len):
    return (list(prompt) + list(response))[:max_len]


def pack_sequences(seqs, size, max_len, pad, device="cpu"):
    longest = max([1] + [len(s) for s in seqs])
    width = bucket_len(longest, max_len)
    tokens = [[pad] * width for _ in range(size)]
    last = [0] * size
    for i, s in enumerate(seqs):
        tokens[i][:len(s)] = s
        last[i] = len(s) - 1
    return (torch.tensor(tokens, dtype=torch.int64, device=device),
            torch.tensor(last, dtype=torch.int64, device=device))


def rewards(p, cfg, seqs, batch_size, pad):
    out = []
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            tok, last = pack_sequences(chunk, batch_size, cfg.max_len, pad, p["embed"].device)
            out.extend(reward_scores(p, cfg, tok, last)[:len(chunk), 0].tolist())
    return out


# ---------------------------------------------------------------- REINFORCE

def token_kl(logp, logp_ref, estimator):
    d = logp - logp_ref
    if estimator == "abs":
        return abs(d)
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return math.exp(-d) - 1 + d
    raise ValueError(f"unknown kl_estimator {estimator!r}")


def sequence_kl(logp, logp_ref, mask, estimator):
    """reinforce.SequenceKL over one row (lists of python floats)."""
    s, n = 0.0, 0
    for a, b, m in zip(logp, logp_ref, mask):
        if m == 0:
            continue
        s += token_kl(a, b, estimator)
        n += 1
    return s / n if n else 0.0


def leave_one_out_baseline(rewards_, ended, k):
    base = [0.0] * len(rewards_)
    for g in range(0, len(rewards_), k):
        idx = range(g, g + k)
        s = sum(rewards_[i] for i in idx if ended[i])
        n = sum(1 for i in idx if ended[i])
        for i in idx:
            if n <= 1:
                base[i] = rewards_[i]
            elif ended[i]:
                base[i] = (s - rewards_[i]) / (n - 1)
            else:
                base[i] = s / n
    return base


def policy_loss(p, cfg, inputs, targets, mask, adv):
    lp = token_logprobs(p, cfg, inputs, targets)
    n = torch.clamp(mask.sum(), min=1.0)
    return -((lp * mask) * adv.unsqueeze(-1)).sum() / n


# ---------------------------------------------------------------- optimizer

class Trainer:
    """optim.Trainer: loss, gradients, global-norm clipping, AdamW
    (torch.optim.AdamW; decoupled weight decay on tensors of rank >= 2)."""

    def __init__(self, params, adamw, lr):
        self.params = params
        names = sorted(params)
        decay = [params[n] for n in names if params[n].dim() >= 2]
        no_decay = [params[n] for n in names if params[n].dim() < 2]
        groups = [{"params": decay, "weight_decay": adamw["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=lr, betas=(adamw["beta1"], adamw["beta2"]), eps=adamw["eps"])
        self.clip = adamw["clip_norm"]
        self.all = [params[n] for n in names]

    def step(self, loss):
        """Backpropagates loss and applies one update; returns the gradient
        norm before clipping."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.all, self.clip)
        else:
            norm = torch.sqrt(sum((q.grad.double() ** 2).sum() for q in self.all))
        self.opt.step()
        return float(norm)


# ---------------------------------------------------------------- objectives
#
# reinforce.Objective (reinforce/objective.go, reinforce/loss.go), written
# from the published formulas. obj is a variant's settings under the run
# spec's names (advantage, loss_aggregation, kl_in, kl_estimator, kl_beta,
# update_epochs, minibatches, clip_low, clip_high, ratio, max_tokens).

GROUP_EPS = 1e-6  # added to a std before dividing by it (veRL's epsilon)


def mean_std(xs):
    """The mean and the std with Bessel's correction (torch.std's default,
    unbiased) of at least two floats, summed in order, in float64."""
    mean = sum(xs) / len(xs)
    ss = sum((x - mean) * (x - mean) for x in xs)
    return mean, math.sqrt(ss / (len(xs) - 1))


def shape_rewards(rewards_, kls, obj):
    """r - beta * KL where the KL is in the reward (NeMo-Aligner's RLOO,
    Ahmadian et al. 2024); r itself where it is in the loss or nowhere."""
    if obj["kl_in"] == "reward":
        return [r - obj["kl_beta"] * kl for r, kl in zip(rewards_, kls)]
    return list(rewards_)


def group_advantages(shaped, ended, k, estimator):
    """Each sample's (baseline, advantage) from the shaped rewards of its
    group of k consecutive samples. Only ended samples enter a group's
    statistics; a group with at most one ended sample gives each of its
    samples its own reward as baseline and advantage 0 (as
    leave_one_out_baseline does).

    rloo:        r - mean of the group's other ended samples (RLOO,
                 Ahmadian et al. 2024; NeMo-Aligner).
    grpo:        (r - mean) / (std + 1e-6), std unbiased (torch.std's
                 default): veRL compute_grpo_outcome_advantage (torch.std,
                 epsilon 1e-6); TRL GRPOTrainer divides by the same
                 unbiased group std (rewards.view(-1, G).std(dim=1)) plus
                 1e-4.
    dr-grpo:     r - mean, no division by the std (Dr. GRPO, Liu et al.
                 2025, "Understanding R1-Zero-Like Training").
    reinforce++: r - mean, then whitened over the iteration's samples,
                 (a - mean) / (std + 1e-6): OpenRLHF's reinforce_baseline
                 (group-mean baseline, then advantages normalised over the
                 batch; OpenRLHF over tokens, alignflow counting each sample
                 once, with the unbiased std) over the samples of groups
                 that have statistics.
    """
    n = len(shaped)
    if estimator == "rloo":
        base = leave_one_out_baseline(shaped, ended, k)
        return base, [s - b for s, b in zip(shaped, base)]
    if estimator not in ("grpo", "dr-grpo", "reinforce++"):
        raise ValueError(f"unknown advantage estimator {estimator!r}")
    base, adv, counted = [0.0] * n, [0.0] * n, [False] * n
    for g in range(0, n, k):
        ends = [shaped[i] for i in range(g, g + k) if ended[i]]
        if len(ends) <= 1:
            for i in range(g, g + k):
                base[i] = shaped[i]
            continue
        mean, std = mean_std(ends)
        for i in range(g, g + k):
            base[i], counted[i] = mean, True
            adv[i] = shaped[i] - mean
            if estimator == "grpo":
                adv[i] /= std + GROUP_EPS
    if estimator == "reinforce++":
        idx = [i for i in range(n) if counted[i]]
        if len(idx) >= 2:
            mean, std = mean_std([adv[i] for i in idx])
            for i in idx:
                adv[i] = (adv[i] - mean) / (std + GROUP_EPS)
    return base, adv


def aggregation_norm(obj, masks, rows):
    """The denominator of one optimizer step's loss over its batches (masks
    [B,T] each, rows real rows each): its response tokens (token-mean,
    DAPO's token-level loss), its sequences (seq-mean-token-mean, GRPO's),
    or its sequences times max_tokens (seq-mean-token-sum-norm, Dr. GRPO's
    constant normaliser; TRL loss_type="dr_grpo"); at least 1. float32, as
    alignflow sums it."""
    agg = obj["loss_aggregation"]
    if agg == "token-mean":
        n = float(sum(m.sum() for m in masks))
    elif agg == "seq-mean-token-mean":
        n = float(sum(rows))
    elif agg == "seq-mean-token-sum-norm":
        n = float(sum(rows) * obj["max_tokens"])
    else:
        raise ValueError(f"unknown loss aggregation {agg!r}")
    return max(n, 1.0)


def token_kl_tensor(d, estimator):
    """token_kl of the log-ratios d = lp - lp_ref, elementwise (k3: Schulman's
    unbiased non-negative estimator exp(-d) - 1 + d, GRPO's KL in the loss)."""
    if estimator == "abs":
        return d.abs()
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        return torch.exp(-d) - 1 + d
    raise ValueError(f"unknown kl_estimator {estimator!r}")


def objective_loss(lp, mask, adv, norm, obj, old=None, ref=None):
    """One batch's part of an optimizer step's loss (summed over the step's
    batches, its gradients are theirs summed), from its token
    log-probabilities lp [B,T] under the policy being trained, the response
    mask [B,T], the advantages adv [B] (0 on padding rows), the step's
    denominator norm, old [B,T] (the log-probabilities the rollouts were
    sampled with; clipped objectives) and ref [B,T] (the reference's; KL in
    the loss). Returns (loss, ratio_mean, clip_fraction); the last two None
    on-policy.

    on-policy (update_epochs 1):  l = -lp * A (REINFORCE; the ratio is 1, as
        TRL's GRPO with num_iterations=1)
    clipped (update_epochs > 1):  l = -min(ratio * A, clip(ratio, 1 - clip_low,
        1 + clip_high) * A), PPO's clipped surrogate (Schulman et al. 2017)
        with DAPO's decoupled clip_low/clip_high (Yu et al. 2025); ratio =
        exp(lp - old) per token, or with ratio "sequence" GSPO's (Zheng et
        al. 2025) exp(mean over the sequence's tokens of lp - old), the same
        at every token of the sequence
    KL in the loss:  l += kl_beta * estimator(lp - ref), per token, before
        aggregation (GRPO's)

    aggregated as loss_aggregation says: sum over tokens of l * mask (each
    row's first divided by its token count for seq-mean-token-mean) / norm.
    ratio_mean is the mean ratio over the batch's tokens; clip_fraction the
    fraction of tokens whose clipped term was taken (veRL's pg_clipfrac)."""
    a = adv.unsqueeze(-1)
    per_row = obj["loss_aggregation"] == "seq-mean-token-mean"
    row_tokens = torch.clamp(mask.sum(-1, keepdim=True), min=1.0)

    def aggregate(x):
        x = x * mask
        if per_row:
            x = x / row_tokens
        return x.sum() / norm

    ratio_mean = clip_frac = None
    if obj["update_epochs"] <= 1:
        loss = -aggregate(lp * a)
    else:
        log_ratio = lp - old
        if obj["ratio"] == "sequence":
            log_ratio = ((log_ratio * mask).sum(-1, keepdim=True) / row_tokens)
        elif obj["ratio"] != "token":
            raise ValueError(f"unknown ratio {obj['ratio']!r}")
        ratio = torch.exp(log_ratio)
        unclipped = -(ratio * a)
        clipped = -(torch.clamp(ratio, 1 - obj["clip_low"], 1 + obj["clip_high"]) * a)
        loss = aggregate(torch.maximum(unclipped, clipped))
        tokens = torch.clamp(mask.sum(), min=1.0)
        with torch.no_grad():
            ratio_mean = float((ratio.expand_as(lp) * mask).sum() / tokens)
            clip_frac = float(((clipped > unclipped).float().expand_as(lp) * mask).sum() / tokens)
    if obj["kl_in"] == "loss":
        loss = loss + obj["kl_beta"] * aggregate(token_kl_tensor(lp - ref, obj["kl_estimator"]))
    return loss, ratio_mean, clip_frac
