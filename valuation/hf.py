"""LoGra in a Hugging Face Trainer: log the training data's projected gradients after training.

    from valuation.hf import LoGraCallback
    callback = LoGraCallback(batches, sink, ProjectionConfig(rank_in=16, rank_out=16))
    Trainer(model, args, train_dataset=train, callbacks=[callback]).train()
    # when training ends: one pass over `batches` logs every example's row into `sink`

Why after training rather than from the Trainer's own steps in the last epoch (which Logix also
offers): the Trainer's loss is a batch mean over tokens (each row would come out 1/N smaller and
depend on its batch), gradient accumulation and clipping mix examples, the weights move during
the epoch, and the Trainer drops columns such as example ids before the model sees a batch. One
extra pass at the final weights costs what the last epoch's backward passes cost and gives each
example the gradient of its own summed loss.

This module imports transformers; `import valuation` does not import it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import TrainerCallback

from .config import FisherConfig, ProjectionConfig
from .logra import LoGra
from .objectives import Batch, Objective
from .sink import RowSink, log_into_sink


class LoGraCallback(TrainerCallback):
    """Logs `batches` (re-iterable, e.g. a list or a DataLoader, each batch with `example_ids`)
    into `sink` when training ends, on the main process. Under the Trainer's bf16/fp16 settings
    the logging runs under the same autocast."""

    def __init__(
        self,
        batches: Iterable[Batch],
        sink: RowSink,
        config: ProjectionConfig | None = None,
        *,
        objective: Objective | None = None,
        fisher: FisherConfig | None = None,
    ):
        self.batches = batches
        self.sink = sink
        self.config = config
        self.objective = objective
        self.fisher = fisher
        self.logra: LoGra | None = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        autocast = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        self.logra = log_into_sink(model, self.batches, self.sink, self.config, objective=self.objective,
                                   fisher=self.fisher, autocast_dtype=autocast)
