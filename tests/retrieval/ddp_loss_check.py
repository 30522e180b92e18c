"""Launched by test_ddp.py under ``torchrun --nproc_per_node 2``: the DDP loss and gradients of one global batch
(each process holding half, negatives all-gathered) against one process computing the whole batch.

Dropout-free (eval mode), so the two computations must agree up to float summation order. Rank 0 writes a JSON
report to the path given as the only argument.
"""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from common.distributed import init_distributed
from retrieval.loss import info_nce
from retrieval.model import build_model
from common.distributed import sync_gradients

MODEL_ARGS = {"audio_encoder": {"name": "cnn6", "width": 0.125, "sample_rate": 16000},
              "text_encoder": {"name": "minilm", "freeze_layers": 4}, "embed_dim": 32}


def main(out: str) -> None:
    rank, world = init_distributed()
    torch.manual_seed(0)
    model = build_model(MODEL_ARGS).eval()  # same weights on every process
    waveform = torch.randn(8, 16000)  # the global batch, identical on every process (same seed)
    captions = ["a beep", "a hum", "noise", "a beep again", "clicks", "a siren", "a hum again", "rain"]
    ids = torch.tensor([0, 1, 2, 0, 3, 4, 1, 5])  # two clips with two captions each

    def loss_of(net, rows, gather=True):
        tokens = model.text_encoder.tokenize([captions[i] for i in rows])
        out = net(waveform[rows], None, tokens["input_ids"], tokens["attention_mask"])
        return info_nce(out["audio"], out["text"], ids[rows], out["temperature"], gather=gather)

    # one process, whole batch (before DDP attaches its hooks)
    full = loss_of(model, list(range(8)), gather=False)
    full.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    # DDP: this process's half of the batch; DDP averages gradients over processes
    ddp = DistributedDataParallel(model)
    half = list(range(rank * 4, rank * 4 + 4))
    loss = loss_of(ddp, half)
    with ddp.no_sync():  # the training loop's path: local backward, then one explicit gradient average
        loss.backward()
    sync_gradients(model)
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    if rank == 0:
        # relative to the largest gradient entry of the model, so parameters whose true gradient is ~0 (e.g. key
        # biases, invariant under softmax) do not turn float noise into a large relative error
        scale = max(g.abs().max() for g in reference.values())
        diffs = {n: ((g - reference[n]).abs().max() / scale).item() for n, g in grads.items()}
        report = {"ddp_loss": torch.stack(losses).mean().item(), "single_loss": full.item(),
                  "max_grad_diff": max(diffs.values()), "n_params": len(diffs), "world_size": world,
                  "worst": sorted(diffs.items(), key=lambda kv: -kv[1])[:3]}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
