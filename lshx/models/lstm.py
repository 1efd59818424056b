"""Stacked LSTM language model with torch.nn.LSTM's parameter names and gate order (i, f, g, o)."""
from __future__ import annotations

import math
from typing import Collection, List, Optional, Tuple
import warnings

import torch
from torch import nn
import torch.nn.functional as F

from lshx import ops
from lshx.models.base import MaskedLM

State = Tuple[torch.Tensor, torch.Tensor]  # h, c: (layers, batch, hidden)

# cuDNN wants one flat weight buffer and copies separate weights into one on every call (a
# memcpy of the layer's weights, small next to the recurrence); it says so once per process.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


class StackedLSTM(nn.Module):
    """Parameters weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, as nn.LSTM."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers, self.dropout = input_size, hidden_size, num_layers, dropout
        # True: each layer's T steps in torch's fused LSTM (ATen/MKLDNN on the CPU, cuDNN on
        # CUDA), forward and backward; False: the per-step Python loop, kept as the reference.
        self.fused = True
        H = hidden_size
        for k in range(num_layers):
            in_k = input_size if k == 0 else H
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * H, in_k)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * H, H)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * H)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * H)))
        bound = 1.0 / math.sqrt(H)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.flatten_parameters()
        return out

    def flatten_parameters(self) -> None:
        """On CUDA with cuDNN: each layer's four parameters become views of one buffer in cuDNN's
        layout (nn.LSTM.flatten_parameters, per layer), so that the fused path, which calls
        cuDNN once per layer, does not copy them into a buffer on every call. A no-op elsewhere;
        rerun after anything that gives a parameter new storage (`.to()` does it itself)."""
        first = self.weight_ih_l0
        if first.device.type != "cuda" or not torch.backends.cudnn.is_acceptable(first):
            return
        import torch.backends.cudnn.rnn as cudnn_rnn

        with torch.cuda.device_of(first), torch.no_grad():
            if not torch._use_cudnn_rnn_flatten_weight():
                return
            for k in range(self.num_layers):
                ws = list(self.layer_weights(k))
                if len({w.dtype for w in ws}) != 1 or len({w.data_ptr() for w in ws}) != len(ws):
                    continue  # (mixed dtypes or aliased parameters: cuDNN copies, as nn.LSTM does then)
                torch._cudnn_rnn_flatten_weight(ws, 4, ws[0].shape[1], cudnn_rnn.get_cudnn_mode("LSTM"),
                                                self.hidden_size, 0, 1, False, False)

    def layer_weights(self, k: int):
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}"))

    @staticmethod
    def cell(gates: torch.Tensor, c_prev: torch.Tensor):
        """Gate nonlinearities -> (activated gates [i, f, g, o], c, h)."""
        i, f, g, o = gates.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c_prev + i * g
        h = o * torch.tanh(c)
        return torch.cat([i, f, g, o], dim=-1), c, h

    def _fused_layer(self, k: int, inp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, masks: dict,
                     exact: Collection[str]):
        """One layer through torch's fused LSTM. A masked weight known to be exactly zero
        outside its mask (`exact`) goes in as it is, any other masked weight masked first:
        either way the op sees W * M. Its gradient reaches every entry, as masked_linear's."""
        weights = []
        for name, w in zip((f"weight_ih_l{k}", f"weight_hh_l{k}"), self.layer_weights(k)[:2]):
            m = masks.get(name)
            weights.append(w if m is None or name in exact else ops.masked_weight(w, m))
        _, _, b_ih, b_hh = self.layer_weights(k)
        out, h, c = torch._VF.lstm(inp, (h0.unsqueeze(0), c0.unsqueeze(0)), [*weights, b_ih, b_hh],
                                   True, 1, 0.0, self.training, False, False)
        return out, h[0], c[0]

    def forward(self, x: torch.Tensor, state: State, masks: dict,
                exact: Collection[str] = ()) -> Tuple[torch.Tensor, State]:
        """All T steps; `exact` names the masked weights known to be zero outside their masks
        (MaskedLM.exact_masked), which the fused path may use without masking them again.
        Dropout between layers is F.dropout's in both paths, so they draw the same masks."""
        h0, c0 = state
        hs, cs = [], []
        inp = x
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(k)
            m_hh = masks.get(f"weight_hh_l{k}")
            sparse_inference = m_hh is not None and ops.use_sparse_recurrence(w_hh, m_hh, inp, w_ih, b_ih, b_hh,
                                                                              h0[k], c0[k])
            if self.fused and not sparse_inference:
                inp, h, c = self._fused_layer(k, inp, h0[k], c0[k], masks, exact)
                if k < self.num_layers - 1 and self.dropout > 0:
                    inp = F.dropout(inp, self.dropout, self.training)
                hs.append(h)
                cs.append(c)
                continue
            xp = ops.linear(inp, w_ih, masks.get(f"weight_ih_l{k}"), b_ih)  # all timesteps at once
            if ops.use_sparse_recurrence(w_hh, m_hh, xp, b_hh, h0[k], c0[k]):
                inp, h, c = ops.lstm_recurrence(xp + b_hh, h0[k], c0[k], w_hh, m_hh)
            else:
                w_hh = ops.masked_weight(w_hh, m_hh)  # once per sequence
                h, c = h0[k], c0[k]
                outs = []
                for t in range(x.size(0)):
                    _, c, h = self.cell(xp[t] + F.linear(h, w_hh, b_hh), c)
                    outs.append(h)
                inp = torch.stack(outs)
            if k < self.num_layers - 1 and self.dropout > 0:
                inp = F.dropout(inp, self.dropout, self.training)
            hs.append(h)
            cs.append(c)
        return inp, (torch.stack(hs), torch.stack(cs))

    def step_weights(self, masks: dict):
        """Per layer the masked (w_ih, w_hh) and the summed bias b_ih + b_hh, detached: what
        step_with takes, computed once for many steps (the Lyapunov loop)."""
        W, b = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(k)
            W.append((ops.masked_weight(w_ih.detach(), masks.get(f"weight_ih_l{k}")),
                      ops.masked_weight(w_hh.detach(), masks.get(f"weight_hh_l{k}"))))
            b.append((b_ih + b_hh).detach())
        return W, b

    def step_with(self, x_t: torch.Tensor, state: State, W, b):
        """One timestep on given weights (step_weights), without dropout; also returns, per
        layer, (gates, c_prev, c) for Jacobians."""
        h0, c0 = state
        inp, hs, cs, info = x_t, [], [], []
        for k in range(self.num_layers):
            w_ih, w_hh = W[k]
            gates, c, h = self.cell(torch.addmm(b[k], inp, w_ih.t()) + h0[k] @ w_hh.t(), c0[k])
            info.append((gates, c0[k], c))
            hs.append(h)
            cs.append(c)
            inp = h
        return (torch.stack(hs), torch.stack(cs)), info

    def step(self, x_t: torch.Tensor, state: State, masks: dict):
        """One timestep without dropout; also returns, per layer, (gates, c_prev, c) for Jacobians."""
        return self.step_with(x_t, state, *self.step_weights(masks))


class LSTMLM(MaskedLM):
    """Selfish-RNN's stacked LSTM LM: embedding -> dropout -> LSTM -> dropout -> decoder."""

    arch = "lstm"

    def __init__(self, vocab_size: int, emb_size: int = 1500, hidden_size: int = 1500, num_layers: int = 2,
                 dropout: float = 0.65, tie_weights: bool = False) -> None:
        super().__init__()
        if tie_weights and emb_size != hidden_size:
            raise ValueError("tied weights need emb_size == hidden_size")
        self.vocab_size, self.emb_size, self.hidden_size = vocab_size, emb_size, hidden_size
        self.num_layers, self.dropout, self.tie_weights = num_layers, dropout, tie_weights
        self.encoder = nn.Embedding(vocab_size, emb_size)
        self.rnn = StackedLSTM(emb_size, hidden_size, num_layers, dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight

    @property
    def model_args(self) -> dict:
        return {"arch": "lstm", "vocab_size": self.vocab_size, "emb_size": self.emb_size,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers, "dropout": self.dropout,
                "tie_weights": self.tie_weights}

    def maskable_names(self) -> List[str]:
        names = super().maskable_names()
        return [n for n in names if not (self.tie_weights and n == "decoder.weight")]

    def rnn_masks(self) -> dict:
        return {n[4:]: m for n, m in self.masks.items() if n.startswith("rnn.")}

    def init_state(self, batch_size: int) -> State:
        w = self.decoder.bias
        z = w.new_zeros(self.num_layers, batch_size, self.hidden_size)
        return z, z.clone()

    def embed(self, ids: torch.Tensor, exact: Collection[str] = ()) -> torch.Tensor:
        """exact: the masked weights known to be zero outside their masks (exact_masked): used as
        they are, without masking them again."""
        return F.embedding(ids, ops.masked_weight(self.encoder.weight, self.mask("encoder.weight"),
                                                  "encoder.weight" in exact))

    def decode(self, out: torch.Tensor, exact: Collection[str] = ()) -> torch.Tensor:
        name = "encoder.weight" if self.tie_weights else "decoder.weight"
        return ops.linear(out, self.decoder.weight, self.mask(name), self.decoder.bias, name in exact)

    def forward(self, ids: torch.Tensor, state: Optional[State] = None):
        state = state if state is not None else self.init_state(ids.size(1))
        exact = self.exact_masked()
        emb = F.dropout(self.embed(ids, exact), self.dropout, self.training)
        out, state = self.rnn(emb, state, self.rnn_masks(), {n[4:] for n in exact if n.startswith("rnn.")})
        out = F.dropout(out, self.dropout, self.training)
        return self.decode(out, exact), state

    def step(self, ids_t: torch.Tensor, state: State):
        """One eval timestep for the Lyapunov code: (new state, per-layer (gates, c_prev, c))."""
        return self.rnn.step(self.embed(ids_t), state, self.rnn_masks())

    def state_size(self, state_kind: str = "h") -> int:
        return self.num_layers * self.hidden_size * (2 if state_kind == "hc" else 1)
