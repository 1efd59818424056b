"""Measures docs/dst.md's gradient norms: the dense gradient against its part on the active
weights, small preset, density 0.33 (LSTM) / 0.472 (RHN), after N training batches.

Trains N batches of the preset's first epoch (default DST settings, the dense gradient
clipped as Selfish-RNN does, or --clip-masked-grad), recording at every batch the norm of the
whole gradient (what clip_grad_norm_ reads by default) and of the gradient zeroed outside the
masks (biases included in both). Then evaluates the validation set with batch 10 and 20.
Usage: OMP_NUM_THREADS=1 python scripts/grad_norms.py [--batches 60] [--task ptb-lstm]
"""
import argparse
import json
import time

import torch

import lshx.train as T
from lshx.train import TrainConfig, Trainer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="ptb-lstm", choices=["ptb-lstm", "ptb-rhn"])
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip-masked-grad", action="store_true")
    ap.add_argument("--skip-eval", action="store_true", help="No validation with batch 10 and 20.")
    a = ap.parse_args()
    cfg = TrainConfig.from_preset(a.task, "small", epochs=1, max_batches=a.batches, seed=a.seed,
                                  clip_masked_grad=a.clip_masked_grad)
    tr = Trainer(cfg, quiet=True, progress=False)
    params = dict(tr.model.named_parameters())
    rows = []
    fresh = [False]  # the gradient of this batch not yet read (before masking or clipping)

    def record():
        if not fresh[0]:
            return
        fresh[0] = False
        with torch.no_grad():
            dense = sum(float(p.grad.double().pow(2).sum()) for p in params.values() if p.grad is not None) ** 0.5
            active = sum(float((p.grad.double() * tr.model.masks[n]).pow(2).sum()) if n in tr.model.masks
                         else float(p.grad.double().pow(2).sum())
                         for n, p in params.items() if p.grad is not None) ** 0.5
        rows.append((dense, active))

    real_zero, real_mask, real_clip = tr.optimizer.zero_grad, tr.masking.mask_grads, torch.nn.utils.clip_grad_norm_

    def zero_grad(*args, **kw):
        fresh[0] = True
        return real_zero(*args, **kw)

    def mask_grads():
        record()
        return real_mask()

    def clip(parameters, max_norm, *args, **kw):
        record()
        return real_clip(parameters, max_norm, *args, **kw)

    tr.optimizer.zero_grad, tr.masking.mask_grads, T.torch.nn.utils.clip_grad_norm_ = zero_grad, mask_grads, clip
    t0 = time.perf_counter()
    tr.train_epoch()
    train_s = time.perf_counter() - t0
    T.torch.nn.utils.clip_grad_norm_ = real_clip
    last = rows[-10:]
    out = {"task": a.task, "density": cfg.dst.density, "batches": len(rows), "clip": cfg.clip,
           "clip_masked_grad": cfg.clip_masked_grad, "train_s": round(train_s, 1),
           "dense_norm_last": round(rows[-1][0], 4), "active_norm_last": round(rows[-1][1], 4),
           "dense_norm_mean_last10": round(sum(r[0] for r in last) / len(last), 4),
           "active_norm_mean_last10": round(sum(r[1] for r in last) / len(last), 4),
           "clip_binds_dense": sum(r[0] > cfg.clip for r in rows),
           "clip_binds_active": sum(r[1] > cfg.clip for r in rows)}
    ratio = [r[0] / r[1] for r in last]
    out["dense_over_active_mean_last10"] = round(sum(ratio) / len(ratio), 3)
    for bs in () if a.skip_eval else (10, 20):
        tr.cfg.eval_batch_size = bs
        tr.val_data = T.batchify(tr.corpus.valid, bs)
        t0 = time.perf_counter()
        loss = tr.evaluate("valid")
        out[f"val_ppl_eval_batch_{bs}"] = round(T.perplexity(loss), 2)
        out[f"eval_s_batch_{bs}"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
