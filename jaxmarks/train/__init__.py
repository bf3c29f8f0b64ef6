"""Training: the one data-parallel trainer (``trainer``), array batches (``data``),
TensorBoard writers (``tensorboard``) and the host allocator (``host``).

Nothing is imported here, so that importing ``jaxmarks.train.host`` loads no trainer.
"""
