"""A Lightning callback that records what happens inside training steps, for regression tests.

Used through the config like any callback: `+callbacks.probe._target_=tests.integration.probe.Probe`.
The records go to the module-level `RECORDS`, since `train.run` builds the callback itself.
"""
from __future__ import annotations

import functools

import lightning as L

RECORDS: dict = {}


class Probe(L.Callback):
    def on_fit_start(self, trainer, pl_module) -> None:
        RECORDS.clear()
        RECORDS.update(windows={}, training=[], checkpoint_calls=0, expected_windows={})
        layers = [m for m in pl_module.model.modules() if hasattr(m, "_gradient_checkpointing_func")]

        def counted(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                RECORDS["checkpoint_calls"] += 1
                return func(*args, **kwargs)
            return wrapper

        for layer in layers:
            layer._gradient_checkpointing_func = counted(layer._gradient_checkpointing_func)
            layer.register_forward_pre_hook(self._record_mode)

    @staticmethod
    def _record_mode(module, args) -> None:
        import torch

        if torch.is_grad_enabled():  # a training forward, not validation or a no-grad pass
            RECORDS["training"].append(module.training)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        window = tuple(tuple(row[mask.bool()].tolist()) for micro in batch
                       for row, mask in zip(micro["input_ids"], micro["attention_mask"]))
        RECORDS["windows"].setdefault(trainer.current_epoch, []).append(window)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """What LengthGroupedWindows says this epoch should have been, as token tuples."""
        datamodule = trainer.datamodule
        sampler = trainer.train_dataloader.sampler
        examples = datamodule.train_examples
        RECORDS["expected_windows"][trainer.current_epoch] = [
            tuple(tuple(examples[i]["input_ids"]) for i in window) for window in sampler.windows(trainer.current_epoch)
        ]
