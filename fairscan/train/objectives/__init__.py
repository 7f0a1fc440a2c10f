"""Pre-training methods, registered by name: adding one (DINO, say) is one module and one line in ``METHODS``.

A method module (``mae``, ``mocov3``) exports what ``fairscan pretrain`` needs of it:

- ``Settings``: its settings, a :class:`~fairscan.train.pretrain.PretrainConfig` with ``method: Literal[NAME]``
  and the method's own fields and defaults (the settings of all methods form a discriminated union on
  ``method``: :func:`settings_union`);
- ``VIEWS`` (augmented views per image), ``POOLING`` (how its encoder fine-tunes), ``MODEL`` (the registry name
  that fine-tunes from it), ``TITLE``;
- ``build(cfg) -> nn.Module`` (call after seeding), ``prepare(module, total_steps=, accelerator=)`` (what the
  method sets once the run's length is known) and ``loss(model, batch, module) -> loss or (loss, {name: value})``
  (``model`` as Accelerate prepared it, ``module`` the method's own).

The modules (``nn.Module``) themselves live in ``_mae`` and ``_mocov3``, which need only torch and timm (the GPU
benchmark loads them alone); ``_vit`` is what both share. Nothing heavy is imported here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Annotated, Any, Union

METHODS = {
    "mae": "fairscan.train.objectives.mae",
    "mocov3": "fairscan.train.objectives.mocov3",
}


def method(name: str) -> ModuleType:
    """The method module registered as ``name``; an InputError naming the registered ones otherwise."""
    from fairscan.errors import InputError

    if name not in METHODS:
        raise InputError(f"unknown --method {name!r}", hint=f"use {' or '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def settings_union() -> Any:
    """Every method's settings as one type, told apart by ``method`` (pydantic's discriminated union)."""
    from pydantic import Field

    return Annotated[Union[tuple(method(name).Settings for name in METHODS)], Field(discriminator="method")]
