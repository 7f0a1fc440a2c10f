"""Datasets: adapters that turn a real dataset's own layout into a fairscan manifest, and what feeds training.

- ``kinds``: the registry of dataset kinds (what a preset's ``datasets:`` entry and ``fairscan prepare KIND``
  take, how each is prepared, and its command line);
- ``chexpert``, ``nih``, ``mimic``: one adapter per dataset, each returning a :class:`~fairscan.data.manifest.Prepared`
  (the manifest plus the record that becomes ``prepare.json``).
- ``labels`` (label policies), ``demographics`` (race rules), ``splits`` (patient-level splits, the published
  CheXpert split), ``cohorts`` (pre-training pools with leakage checks, the balanced fine-tuning set).
- ``images`` (decoding JPEG/PNG/DICOM, resolving manifest paths), ``cache`` (the uint8 memory-mapped image cache),
  ``dataset`` (the torch Dataset and transforms, ending in uint8 grey tensors), ``device_input`` (their
  conversion to the model's normalised 3-channel input, on the device).
- ``synthetic`` (with ``synthetic_layouts``): chest-like datasets in each real layout, with a planted subgroup effect.

Nothing heavy is imported here: each module imports pandas / numpy itself.
"""
