"""Training: the one Accelerate loop and what runs on it.

- ``loop``: the loop itself (:func:`~fairscan.train.loop.train`), its :class:`~fairscan.train.loop.Objective`
  interface, checkpoints and resume (the API is documented at the top of the module);
- ``optim``: parameter groups with layer-wise lr decay, AdamW / LARS, the warm-up + cosine schedule;
- ``supervised``: multi-label fine-tuning and linear probing as an objective (masked BCE, validation AUC);
- ``finetune`` / ``predict``: the ``fairscan finetune`` and ``fairscan predict`` stages as library calls;
- ``launch``: running a command on several processes through Accelerate's launcher;
- ``objectives``: the self-supervised pre-training objectives (MAE, MoCo v3).

Nothing heavy is imported here.
"""
