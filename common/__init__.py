"""What every stage shares: config, checkpoints, atomic writes, run folders and logs, the training skeleton,
distributed set-up, text encoders (retrieval's, and the prefix-LM captioners' prompt encoder). Names are imported
on first use, so light commands don't pay for torch."""
from common.lazy import lazy_exports

_EXPORTS = {
    "load_config": "config", "dump_config": "config",
    "atomic_write": "io", "write_text_atomic": "io", "read_csv": "io", "write_csv": "io",
    "lengths_to_mask": "tensor", "masked_mean": "tensor",
    "checkpoint_paths": "checkpoint", "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint", "load_state_dict_checked": "checkpoint",
    "rng_state": "checkpoint", "set_rng_state": "checkpoint", "seed_everything": "checkpoint",
    "open_run": "run", "write_history": "run", "plot_curves": "run",
}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
