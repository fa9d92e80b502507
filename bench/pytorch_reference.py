"""Plain PyTorch (eager) twin of ahr's TPA pretraining step, for `ahr bench train --pytorch`.

The same model as `ahr_tpa` with a TPA menu whose exact option is `full`: tied embeddings,
weightless RMSNorm, per layer a query (dense for q_rank = 0, else the factored TPA query), rank-R
K/V factors (with biases when factor_bias) and dense K/V, RoPE (rotate-half) on q, B_K and K;
nested storage weights per token, the own-token diagonal at the exact K/V, no MLP; LM head at
the labelled positions only; AdamW with global grad-norm clipping. Prints one JSON line with the
tokens per second of the timed steps. `--device cuda` runs it on the GPU (batches are drawn on the
CPU as in ahr, then copied; the clock waits for the GPU).
"""

import argparse
import json
import math
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def rms_norm(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rope_tables(t, dh, base, device):
    inv = 1.0 / (base ** (torch.arange(0, dh, 2, dtype=torch.float32, device=device) / dh))
    ang = torch.arange(t, dtype=torch.float32, device=device)[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)  # [T, dh/2]


def rope(x, cos, sin):
    # x: [B, T, n, dh]; rotate-half convention.
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class Attention(nn.Module):
    def __init__(self, d, h, dh, r, rq, bias):
        super().__init__()
        self.h, self.dh, self.r, self.rq = h, dh, r, rq
        if rq == 0:
            self.q = nn.Linear(d, h * dh, bias=False)
        else:
            self.a_q = nn.Linear(d, h * rq, bias=bias)
            self.b_q = nn.Linear(d, rq * dh, bias=bias)
        self.a_k = nn.Linear(d, h * r, bias=bias)
        self.b_k = nn.Linear(d, r * dh, bias=bias)
        self.a_v = nn.Linear(d, h * r, bias=bias)
        self.b_v = nn.Linear(d, r * dh, bias=bias)
        self.k = nn.Linear(d, h * dh, bias=False)
        self.v = nn.Linear(d, h * dh, bias=False)
        self.o = nn.Linear(h * dh, d, bias=False)

    def forward(self, x, cos, sin, rank_w, full_w, keep):
        b, t, _ = x.shape
        h, dh, r = self.h, self.dh, self.r
        if self.rq == 0:
            q = rope(self.q(x).view(b, t, h, dh), cos, sin)
        else:
            aq = self.a_q(x).view(b, t, h, self.rq)
            bq = rope(self.b_q(x).view(b, t, self.rq, dh), cos, sin)
            q = aq @ bq / self.rq
        ak, av = self.a_k(x).view(b, t, h, r), self.a_v(x).view(b, t, h, r)
        bk, bv = rope(self.b_k(x).view(b, t, r, dh), cos, sin), self.b_v(x).view(b, t, r, dh)
        k = rope(self.k(x).view(b, t, h, dh), cos, sin)
        v = self.v(x).view(b, t, h, dh)
        ks = (ak * rank_w) @ bk + k * full_w
        vs = (av * rank_w) @ bv + v * full_w
        q, ks, vs, k, v = (z.transpose(1, 2) for z in (q, ks, vs, k, v))
        scale = 1.0 / math.sqrt(dh)
        eye = torch.eye(t, device=x.device)[None, None]
        lower = torch.tril(torch.ones(t, t, device=x.device), -1)[None, None]
        off = 1.0 - eye
        scores = (q @ ks.transpose(2, 3)) * scale
        own = (q * k).sum(-1, keepdim=True) * scale
        scores = scores * off + own * eye
        allowed = lower * keep + eye
        scores = scores + (1.0 - allowed) * -1e9
        p = torch.softmax(scores, -1)
        out = (p * off) @ vs + (p * eye).sum(-1, keepdim=True) * v
        return self.o(out.transpose(1, 2).reshape(b, t, h * dh))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["d_model"])
        self.blocks = nn.ModuleList(
            Attention(c["d_model"], c["n_heads"], c["head_dim"], c["kv_rank_max"], c["q_rank"], c["factor_bias"])
            for _ in range(c["n_layers"])
        )

    def forward(self, tokens, choices, label_idx):
        c = self.c
        b, t = tokens.shape
        cos, sin = rope_tables(t, c["head_dim"], c["rope_base"], tokens.device)
        x = self.embed(tokens)
        for layer, block in enumerate(self.blocks):
            rank_w, full_w, keep = choices[layer]
            x = x + block(rms_norm(x, c["norm_eps"]), cos, sin, rank_w, full_w, keep)
        hidden = rms_norm(x, c["norm_eps"]).reshape(b * t, -1)[label_idx]
        return hidden @ self.embed.weight.t()


def choice_tensors(c, b, t, exact_fraction, gen):
    """Nested choices per (sequence, token, layer): exact rows, else uniform over the menu."""
    menu = c["menu"]
    r = c["kv_rank_max"]
    # Per-option lookup tables: rank weights (1/ρ on the first ρ components), dense flag, kept flag.
    rank_tab = torch.zeros(len(menu), r)
    full_tab = torch.zeros(len(menu))
    keep_tab = torch.zeros(len(menu))
    for i, opt in enumerate(menu):
        if opt == "full":
            full_tab[i] = keep_tab[i] = 1.0
        elif opt.startswith("rank:"):
            rho = int(opt.split(":")[1])
            rank_tab[i, :rho] = 1.0 / rho
            keep_tab[i] = 1.0
    exact_rows = torch.rand(b, generator=gen) < exact_fraction
    out = []
    for _ in range(c["n_layers"]):
        idx = torch.randint(len(menu), (b, t), generator=gen)
        idx[exact_rows] = len(menu) - 1
        out.append((rank_tab[idx].view(b, t, 1, r), full_tab[idx].view(b, t, 1, 1), keep_tab[idx].view(b, 1, 1, t)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="resolved ModelConfig as JSON (ahr's config.json)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--labelled", type=int, default=8, help="labelled positions per sequence")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--exact-fraction", type=float, default=0.25)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    a = ap.parse_args()
    dev = torch.device(a.device)
    c = json.loads(open(a.config).read())
    if c["attention"] != "tpa" or c["menu"][-1] != "full" or c.get("mlp") or not c.get("tied_embeddings", True):
        raise SystemExit("the reference covers tied, MLP-free TPA models whose exact option is `full`")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Model(c).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    b, t = a.batch, a.seq_len

    def step():
        tokens = torch.randint(c["vocab_size"], (b, t), generator=gen)
        pos = torch.stack([torch.randperm(t, generator=gen)[: a.labelled] for _ in range(b)])
        label_idx = (pos + torch.arange(b)[:, None] * t).reshape(-1)
        labels = torch.randint(c["vocab_size"], (label_idx.numel(),), generator=gen)
        choices = [tuple(z.to(dev) for z in layer) for layer in choice_tensors(c, b, t, a.exact_fraction, gen)]
        logits = model(tokens.to(dev), choices, label_idx.to(dev))
        loss = F.cross_entropy(logits, labels.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    step()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    secs = time.perf_counter() - start
    report = {"tokens_per_sec": a.steps * b * t / secs, "threads": torch.get_num_threads(), "torch": torch.__version__}
    report["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
