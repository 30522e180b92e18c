"""What both training stages share: config loading, checkpoints, run folders and logs, distributed set-up."""
from common.checkpoint import checkpoint_paths, load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from common.config import dump_config, load_config
from common.run import open_run, plot_curves, write_history

__all__ = ["checkpoint_paths", "load_config", "dump_config", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "seed_everything", "open_run", "write_history", "plot_curves"]
