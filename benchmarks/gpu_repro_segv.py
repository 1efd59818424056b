"""Reproduces a crash of lshx::lstm_recurrence on CUDA with mismatched h0/c0 (run under cuda-gdb)."""
import torch
from lshx import ops

H, B, T = 8, 2, 3
m = torch.rand(4 * H, H) < 0.5
s = ops.csr_structure(m.cuda())
val = torch.randn(s.col.numel()).cuda()
xp, h0, c0 = torch.randn(T, B, 4 * H).cuda(), torch.randn(B, H).cuda(), torch.randn(B, H).cuda()
try:
    torch.ops.lshx.lstm_recurrence(xp, h0[:1], c0, s.crow, s.col, val)
except RuntimeError as e:
    print("raised:", str(e).splitlines()[0])
