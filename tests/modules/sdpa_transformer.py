"""A tiny GPT-style language model: pre-norm blocks with ``F.scaled_dot_product_attention`` and dropout.

The tokens come from a fixed random Markov chain over 16 symbols (each
symbol has 3 likely successors), so there is structure to learn and the
loss stays noisy: mini-batches of random windows keep Adam's second moment
far above eps, as on a real language model. Batches are dicts, as a
tokenizer's are.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

STEPS = 200
VOCAB, CONTEXT, WIDTH, HEADS = 16, 16, 32, 4


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.1 if self.training else 0.0)
        x = x + self.dropout(self.proj(att.transpose(1, 2).reshape(b, t, WIDTH)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, WIDTH), nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.Sequential(Block(), Block())
        self.norm, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, VOCAB, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.head(self.norm(self.blocks(self.tokens(input_ids) + self.positions(positions))))


def model() -> nn.Module:
    return TinyGPT()


def _text(seed: int, length: int) -> torch.Tensor:
    chain = torch.Generator().manual_seed(1234)  # one language for every seed
    successors = torch.randint(0, VOCAB, (VOCAB, 3), generator=chain)
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(length, dtype=torch.long)
    out[0] = 0
    choice = torch.randint(0, 3, (length,), generator=g)
    noise = torch.rand(length, generator=g) < 0.1
    random_tokens = torch.randint(0, VOCAB, (length,), generator=g)
    for i in range(1, length):
        out[i] = random_tokens[i] if noise[i] else successors[out[i - 1], choice[i]]
    return out


def batches(seed: int):
    text = _text(seed, 4096)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(32):
        starts = torch.randint(0, text.numel() - CONTEXT - 1, (16,), generator=g)
        window = torch.stack([text[s : s + CONTEXT + 1] for s in starts.tolist()])
        yield {"input_ids": window[:, :-1], "labels": window[:, 1:]}


def loss(model: nn.Module, batch: dict) -> torch.Tensor:
    logits = model(batch["input_ids"])
    return F.cross_entropy(logits.reshape(-1, VOCAB), batch["labels"].reshape(-1))


def evaluate(model: nn.Module) -> float:
    text = _text(99_999, 1024)
    device = next(model.parameters()).device
    windows = text[: (text.numel() - 1) // CONTEXT * CONTEXT + 1]
    inputs = windows[:-1].view(-1, CONTEXT).to(device)
    labels = windows[1:].view(-1, CONTEXT).to(device)
    return float(F.cross_entropy(model(inputs).reshape(-1, VOCAB), labels.reshape(-1)))


CHANCE = math.log(VOCAB)
