"""Training speed of the course's ``TinyGPT`` against a PyTorch-native GPT of the same shape, in one run.

All models read Tiny Shakespeare's characters (65 tokens) in windows of
``context``, start from the *same* weights and train with AdamW on the *same* batches:

1. ``TinyGPT`` with ``attention="torch"``, the model the chapters train:
   PyTorch's fused attention and layer norm, one q/k/v projection;
2. the same model with the written-out layer norm of ``companion.attention``
   (fused attention only) — the effect of the fused norm;
3. ``TinyGPT`` with ``attention="scratch"``: attention and layer norm as the
   chapters write them out;
4. ``native``, a baseline made of PyTorch's own pieces: token and position
   embeddings, pre-norm ``nn.TransformerEncoderLayer`` s (GELU, MLP of 4·d) with a
   causal mask, a final ``nn.LayerNorm`` and a linear read-out — the same
   parameters and the same arithmetic, its weights copied from model 1.

The models take turns, ``--steps`` optimizer steps at a time, ``--rounds`` times,
so that a busy machine slows all of them alike. It prints each model's tokens per
second (median over the rounds), its ratio to the baseline's, and the validation
loss of each after the same steps (the mean over a fixed sample of validation
windows): equal weights, batches and arithmetic give equal losses, up to rounding.

    python bench/gpt_speed.py [--layers 4] [--heads 4] [--dim 128] [--context 64] [--batch 12]
                              [--steps 50] [--rounds 6] [--fused-adamw]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from companion import attention, config, data, models
from timing import synchronize


class NativeGPT(nn.Module):
    """A decoder-only Transformer from ``torch.nn`` parts: ``[B, T]`` ids → ``[B, T, vocab]`` logits."""

    def __init__(self, vocab: int, context: int, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.position_embedding = nn.Embedding(context, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    @torch.no_grad()
    def copy_from(self, gpt: models.TinyGPT) -> NativeGPT:
        """Take the weights of a ``TinyGPT`` of the same shape (the layouts correspond one to one)."""
        pairs = {"token_embedding.weight": "token_embedding.weight",
                 "position_embedding.weight": "position_embedding.weight",
                 "ln_final.weight": "ln_final.weight", "ln_final.bias": "ln_final.bias",
                 "head.weight": "head.weight", "head.bias": "head.bias"}  # fmt: skip
        for i in range(len(gpt.blocks)):
            for ours, theirs in (("ln1", "norm1"), ("attn.in_proj", "self_attn.in_proj_"), ("ln2", "norm2"),
                                 ("attn.out_proj", "self_attn.out_proj"), ("mlp.0", "linear1"), ("mlp.2", "linear2")):
                dot = "" if theirs.endswith("_") else "."
                for kind in ("weight", "bias"):
                    pairs[f"blocks.layers.{i}.{theirs}{dot}{kind}"] = f"blocks.{i}.{ours}.{kind}"
        source, target = gpt.state_dict(), self.state_dict()
        assert set(pairs) == set(target), set(target) ^ set(pairs)
        for name, tensor in target.items():
            tensor.copy_(source[pairs[name]])
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        x = self.token_embedding(ids) + self.position_embedding.weight[:T]
        x = self.blocks(x, mask=self.mask[:T, :T], is_causal=True)
        return self.head(self.ln_final(x))


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, torch.Tensor]],
                device: torch.device) -> float:
    """Seconds for one optimizer step per batch."""
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        loss = lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    total = sum(lm_loss(model, x[i : i + 256], y[i : i + 256]).item() * len(x[i : i + 256])
                for i in range(0, len(x), 256))  # fmt: skip
    model.train()
    return total / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per model per round")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (plus one untimed warm-up round)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) for both models")
    args = parser.parse_args()

    device = config.device()
    chars = data.CharVocab(text := data.tiny_shakespeare())
    train_ids, val_ids = data.split_text(chars.encode(text), val_fraction=0.1)
    X, Y = data.char_windows(train_ids, args.context, stride=args.context // 4)
    X_val, Y_val = (t[::7].to(device) for t in data.char_windows(val_ids, args.context))
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    steps = (args.rounds + 1) * args.steps
    picks = order[: steps * args.batch].view(steps, args.batch)
    batches = [(X[i].to(device), Y[i].to(device)) for i in picks]

    shape = dict(vocab_size=len(chars), context=args.context, dim=args.dim, heads=args.heads, layers=args.layers)
    torch.manual_seed(0)
    fused = models.TinyGPT(models.GPTConfig(attention="torch", **shape))
    written_norm = models.TinyGPT(fused.config)
    for module in written_norm.modules():
        if isinstance(module, attention.LayerNorm):
            module.backend = "scratch"  # the written-out layer norm, PyTorch's fused attention
    scratch = models.TinyGPT(models.GPTConfig(attention="scratch", **shape))
    for model in (written_norm, scratch):
        model.load_state_dict(fused.state_dict())
    contenders = {
        "TinyGPT": fused,
        "TinyGPT, written-out layer norm": written_norm,
        "TinyGPT, written-out attention and norm": scratch,
        "native": NativeGPT(len(chars), args.context, args.dim, args.heads, args.layers).copy_from(fused),
    }
    optimizers = {}
    for name, model in contenders.items():
        model.to(device).train()
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=args.fused_adamw or None)

    print(f"torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}, "
          f"CPU cores {os.cpu_count()}")
    print(f"shape: {args.layers} blocks, {args.heads} heads, d={args.dim}, context {args.context}, "
          f"batch {args.batch}; AdamW{' (fused)' if args.fused_adamw else ''}; "
          f"{args.rounds} rounds of {args.steps} steps each after a warm-up round")
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds + 1):
        chunk = batches[r * args.steps : (r + 1) * args.steps]
        for name, model in contenders.items():
            elapsed = train_steps(model, optimizers[name], chunk, device)
            if r:  # the first round warms up
                seconds[name].append(elapsed)

    tokens = args.steps * args.batch * args.context
    rate = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    print(f"{'model':<42}{'parameters':>11}{'tokens/s':>10}{'ratio':>7}{'val loss':>10}")
    for name, model in contenders.items():
        n = models.count_parameters(model)
        ratio = rate[name] / rate["native"]
        print(f"{name:<42}{n:>11,}{rate[name]:>10,.0f}{ratio:>7.2f}{val_loss(model, X_val, Y_val):>10.4f}")
    print(f"ratio TinyGPT / native: {rate['TinyGPT'] / rate['native']:.2f}x tokens per second")

if __name__ == "__main__":
    main()
