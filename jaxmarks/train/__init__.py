"""The one trainer shared by every deep method (see ``jaxmarks.train.trainer``)."""

from jaxmarks.train.data import ArrayIterator, eval_batches  # noqa: F401
from jaxmarks.train.trainer import (  # noqa: F401
    NonFiniteError,
    Phase,
    Trainer,
    TrainState,
    best_or_latest_step,
    checkpoint_manager,
    make_mesh,
    make_optimizer,
    maybe_initialize_distributed,
    restore_meta,
    restore_state,
)
