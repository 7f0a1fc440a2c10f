"""Training: the one Accelerate loop, the stages that run on it, and their lifecycle.

- ``loop``: the loop itself (:func:`~fairscan.train.loop.train`), its :class:`~fairscan.train.loop.Objective`
  interface and resume (the API is documented at the top of the module); ``checkpoint``: its checkpoints (written
  by renames, checked before a resume) and its metrics log; ``progress``: what it says on the console;
- ``optim``: parameter groups with layer-wise lr decay, AdamW / LARS, the warm-up + cosine schedule;
- ``stage``: the lifecycle every training stage goes through (preflight and lock, resolve, relaunch, run,
  complete); ``launch``: a library function on several processes through Accelerate's launcher;
- ``finetune`` / ``pretrain`` (with ``pretrain_data``) / ``predict``: the stages as library calls;
  ``supervised``: multi-label fine-tuning and linear probing as an objective (masked BCE, validation AUC);
- ``mitigation``: bias-mitigation methods for fine-tuning (resample, reweight, Group DRO, adversarial) and
  fairness-aware checkpoint selection, hooked into the loop through the objective and the sampler;
- ``inference``: one model over one split, every image once (what ``predict`` and ``embed`` share);
- ``timing``: step timing of the loop for the benchmarks (off unless one turns it on);
- ``objectives``: the pre-training methods (MAE, MoCo v3), registered by name.

Nothing heavy is imported here.
"""
