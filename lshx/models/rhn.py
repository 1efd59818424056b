"""Recurrent Highway Network LM (Zilly et al. 2017) with coupled gates, as Selfish-RNN trains it."""
from __future__ import annotations

from typing import Collection, Optional

import torch
from torch import nn
import torch.nn.functional as F

from lshx import ops
from lshx.models.base import MaskedLM


def _locked_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """One dropout mask per sequence, shared by every timestep: shape (1, batch, features)."""
    return like.new_empty(1, like.size(1), like.size(2)).bernoulli_(1 - p) / (1 - p)


class RHN(nn.Module):
    """Depth-D highway recurrence as Selfish-RNN's RecurrentHighway (couple=True) builds it: the
    input enters the first micro-step only, through its own linear map with a bias.

    Parameters: weight_ih (2H x E) and bias_ih (2H) (Selfish-RNN's highways.0.W), weight_hh_l{d}
    (2H x H) and bias_hh_l{d} (2H) (highways.d.R); the first H rows of each are the candidate h,
    the last H the transform gate t (carry c = 1 - t). The first micro-step adds both biases.
    Every weight and bias starts as nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(self, input_size: int, hidden_size: int, depth: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.depth = input_size, hidden_size, depth
        # True: all T x depth micro-steps in one op (ops.rhn_recurrence: a native forward and a
        # hand-written backward, CPU and CUDA); False: the per-step Python loop, kept as the
        # reference (and what step() and the Lyapunov code use, one micro-step at a time).
        self.fused = True
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2 * H, input_size))
        self.bias_ih = nn.Parameter(torch.empty(2 * H))
        for d in range(depth):
            self.register_parameter(f"weight_hh_l{d}", nn.Parameter(torch.empty(2 * H, H)))
            self.register_parameter(f"bias_hh_l{d}", nn.Parameter(torch.empty(2 * H)))
        for w, b, fan_in in [(self.weight_ih, self.bias_ih, input_size)] + \
                [(getattr(self, f"weight_hh_l{d}"), getattr(self, f"bias_hh_l{d}"), H) for d in range(depth)]:
            bound = 1.0 / fan_in ** 0.5
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def micro_step(self, d: int, s: torch.Tensor, xp_t: Optional[torch.Tensor], masks: dict,
                   drop: Optional[torch.Tensor] = None, weights: Optional[list] = None):
        """One highway layer: returns (h, t, s_new)."""
        H = self.hidden_size
        s_in = s if drop is None else s * drop
        w = weights[d] if weights is not None else \
            ops.masked_weight(getattr(self, f"weight_hh_l{d}"), masks.get(f"weight_hh_l{d}"))
        pre = F.linear(s_in, w, getattr(self, f"bias_hh_l{d}"))
        if xp_t is not None:
            pre = pre + xp_t
        h, t = torch.tanh(pre[..., :H]), torch.sigmoid(pre[..., H:])
        return h, t, h * t + s * (1 - t)

    def forward(self, x: torch.Tensor, s: torch.Tensor, masks: dict, hidden_dropout: float = 0.0,
                training: bool = False, exact: Collection[str] = ()):
        """All T steps; `exact` names the masked weights known to be zero outside their masks
        (MaskedLM.exact_masked), which the fused path may use without masking them again.
        The hidden-dropout mask is drawn here, once, for both paths (the same draws)."""
        xp = ops.linear(x, self.weight_ih, masks.get("weight_ih"), self.bias_ih)
        drop = None
        if training and hidden_dropout > 0:  # one mask for every micro-step and timestep (Selfish-RNN)
            drop = s.new_empty(s.shape).bernoulli_(1 - hidden_dropout) / (1 - hidden_dropout)
        if self.fused:
            weights = []
            for d in range(self.depth):
                name = f"weight_hh_l{d}"
                w, m = getattr(self, name), masks.get(name)
                weights.append(w if m is None or name in exact else ops.masked_weight(w, m))
            biases = [getattr(self, f"bias_hh_l{d}") for d in range(self.depth)]
            return ops.rhn_recurrence(xp, s, weights, biases, drop)
        weights = [ops.masked_weight(getattr(self, f"weight_hh_l{d}"), masks.get(f"weight_hh_l{d}"))
                   for d in range(self.depth)]  # masked once per sequence
        outs = []
        for t in range(x.size(0)):
            for d in range(self.depth):
                _, _, s = self.micro_step(d, s, xp[t] if d == 0 else None, masks, drop, weights)
            outs.append(s)
        return torch.stack(outs), s


class RHNLM(MaskedLM):
    """Embedding (tied with the decoder) -> RHN -> decoder, with Zilly's four dropouts."""

    arch = "rhn"

    def __init__(self, vocab_size: int, hidden_size: int = 830, depth: int = 10, dropout_output: float = 0.65,
                 dropout_hidden: float = 0.25, dropout_input: float = 0.65, dropout_words: float = 0.2) -> None:
        super().__init__()
        self.vocab_size, self.hidden_size, self.depth = vocab_size, hidden_size, depth
        self.dropout_output, self.dropout_hidden = dropout_output, dropout_hidden
        self.dropout_input, self.dropout_words = dropout_input, dropout_words
        self.encoder = nn.Embedding(vocab_size, hidden_size)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        self.rnn = RHN(hidden_size, hidden_size, depth)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))

    @property
    def model_args(self) -> dict:
        return {"arch": "rhn", "vocab_size": self.vocab_size, "hidden_size": self.hidden_size, "depth": self.depth,
                "dropout_output": self.dropout_output, "dropout_hidden": self.dropout_hidden,
                "dropout_input": self.dropout_input, "dropout_words": self.dropout_words}

    def rnn_masks(self) -> dict:
        return {n[4:]: m for n, m in self.masks.items() if n.startswith("rnn.")}

    def init_state(self, batch_size: int) -> torch.Tensor:
        return self.decoder_bias.new_zeros(batch_size, self.hidden_size)

    def _weight(self, exact: Collection[str] = ()) -> torch.Tensor:
        """The (tied) embedding and decoder weight, masked unless known to be exact already."""
        return ops.masked_weight(self.encoder.weight, self.mask("encoder.weight"), "encoder.weight" in exact)

    def embed(self, ids: torch.Tensor, exact: Collection[str] = ()) -> torch.Tensor:
        w = self._weight(exact)
        if self.training and self.dropout_words > 0:  # word dropout: whole embedding rows
            keep = w.new_empty(w.size(0), 1).bernoulli_(1 - self.dropout_words) / (1 - self.dropout_words)
            w = w * keep
        return F.embedding(ids, w)

    def forward(self, ids: torch.Tensor, state: Optional[torch.Tensor] = None):
        state = state if state is not None else self.init_state(ids.size(1))
        exact = self.exact_masked()
        emb = self.embed(ids, exact)
        if self.training and self.dropout_input > 0:
            emb = emb * _locked_mask(emb, self.dropout_input)
        out, state = self.rnn(emb, state, self.rnn_masks(), self.dropout_hidden, self.training,
                              {n[4:] for n in exact if n.startswith("rnn.")})
        if self.training and self.dropout_output > 0:
            out = out * _locked_mask(out, self.dropout_output)
        return F.linear(out, self._weight(exact), self.decoder_bias), state

    def step(self, ids_t: torch.Tensor, s: torch.Tensor):
        """One eval timestep: (new state, per micro-step (h, t, s_prev))."""
        masks = self.rnn_masks()
        xp = ops.linear(self.embed(ids_t), self.rnn.weight_ih, masks.get("weight_ih"), self.rnn.bias_ih)
        info = []
        for d in range(self.depth):
            h, t, s_new = self.rnn.micro_step(d, s, xp if d == 0 else None, masks)
            info.append((h, t, s))
            s = s_new
        return s, info

    def state_size(self, state_kind: str = "h") -> int:
        if state_kind != "h":
            raise ValueError("the RHN has one state vector: use state 'h'")
        return self.hidden_size
