"""What every stage shares: config, checkpoints, atomic writes, run folders and logs, the training skeleton,
distributed set-up, text encoders (retrieval's, and the prefix-LM captioners' prompt encoder). Names are imported
on first use, so light commands don't pay for torch."""
import importlib

_EXPORTS = {
    "load_config": "common.config", "dump_config": "common.config",
    "atomic_write": "common.io", "write_text_atomic": "common.io", "read_csv": "common.io", "write_csv": "common.io",
    "lengths_to_mask": "common.tensor", "masked_mean": "common.tensor",
    "checkpoint_paths": "common.checkpoint", "save_checkpoint": "common.checkpoint",
    "load_checkpoint": "common.checkpoint", "load_state_dict_checked": "common.checkpoint",
    "rng_state": "common.checkpoint", "set_rng_state": "common.checkpoint", "seed_everything": "common.checkpoint",
    "open_run": "common.run", "write_history": "common.run", "plot_curves": "common.run",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'common' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
