"""Attention GRU caption decoder: additive attention over the encoder frames, a GRU stack, a linear read-out."""
from __future__ import annotations

import torch
from torch import nn

from common.tensor import lengths_to_mask, masked_mean


class AttentionGRUDecoder(nn.Module):
    """At step t: attend over memory with the previous top hidden state, feed ``[embedding; context]`` to the GRU,
    predict from ``[hidden; context]``.

    Same decoding contract as :class:`captioning.models.transformer.TransformerCaptionDecoder`: ``prepare``,
    ``init_state`` (``hidden`` [N, n_layers, d_model]), ``step``, ``forward`` and ``forward_scheduled``.
    """

    def __init__(self, vocab_size: int, memory_dim: int, d_model: int = 256, n_layers: int = 1, embed_dim: int = 256,
                 attn_dim: int = 256, dropout: float = 0.2):
        super().__init__()
        self.n_layers, self.d_model = n_layers, d_model
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.memory_proj = nn.Linear(memory_dim, d_model)
        self.attn_memory = nn.Linear(d_model, attn_dim)
        self.attn_query = nn.Linear(d_model, attn_dim, bias=False)
        self.attn_score = nn.Linear(attn_dim, 1, bias=False)
        self.init_hidden = nn.Linear(d_model, n_layers * d_model)
        self.gru = nn.GRU(embed_dim + d_model, d_model, num_layers=n_layers, batch_first=True,
                          dropout=dropout if n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * d_model, vocab_size)

    def prepare(self, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``memory`` [B, T, d], its attention keys ``keys`` [B, T, a], ``padding_mask`` [B, T], ``clip`` [B, d]."""
        memory = self.memory_proj(enc["frames"])  # (B, T, d)
        valid = lengths_to_mask(enc["frame_lengths"], memory.shape[1])  # (B, T)
        clip = masked_mean(memory, valid, dim=1)  # (B, d)
        return {"memory": memory, "keys": self.attn_memory(memory), "padding_mask": ~valid, "clip": clip}

    def init_state(self, ctx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        N = ctx["clip"].shape[0]
        hidden = torch.tanh(self.init_hidden(ctx["clip"])).view(N, self.n_layers, self.d_model)
        return {"hidden": hidden}

    def step(self, ctx: dict[str, torch.Tensor], state: dict[str, torch.Tensor], tokens: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``tokens`` [N] -> logits [N, V] and the next hidden state."""
        hidden = state["hidden"]  # (N, n_layers, d)
        scores = self.attn_score(torch.tanh(ctx["keys"] + self.attn_query(hidden[:, -1])[:, None]))  # (N, T, 1)
        scores = scores.squeeze(-1).masked_fill(ctx["padding_mask"], float("-inf"))
        context = torch.bmm(scores.softmax(-1)[:, None], ctx["memory"])  # (N, 1, d)
        x = torch.cat([self.dropout(self.embed(tokens[:, None])), context], dim=-1)  # (N, 1, e+d)
        out, h = self.gru(x, hidden.transpose(0, 1).contiguous())  # out (N, 1, d), h (n_layers, N, d)
        logits = self.out(self.dropout(torch.cat([out[:, 0], context[:, 0]], dim=-1)))  # (N, V)
        return logits, {"hidden": h.transpose(0, 1)}

    def forward(self, enc: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forced: ``tokens`` [B, L] -> logits [B, L, V]."""
        return self.forward_scheduled(enc, tokens, tf_prob=1.0)

    def forward_scheduled(self, enc: dict[str, torch.Tensor], tokens: torch.Tensor, tf_prob: float,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Step-wise; each input after ``<bos>`` is, with probability ``1 - tf_prob``, the token sampled from the
        previous step's prediction instead of the reference."""
        ctx = self.prepare(enc)
        state = self.init_state(ctx)
        B, L = tokens.shape
        logits, inputs = [], tokens[:, 0]
        for t in range(L):
            step_logits, state = self.step(ctx, state, inputs)
            logits.append(step_logits)
            if t + 1 < L:
                inputs = tokens[:, t + 1]
                if tf_prob < 1.0:
                    with torch.no_grad():
                        sampled = torch.multinomial(step_logits.softmax(-1), 1, generator=generator)[:, 0]
                        use_model = torch.rand(B, generator=generator, device=tokens.device) >= tf_prob
                    inputs = torch.where(use_model, sampled, inputs)
        return torch.stack(logits, dim=1)  # (B, L, V)
