"""State dicts without aliases: modules registered twice (MONAI's DynUNet) publish each tensor once."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["dedupe_state_dict"]


def _aliases(module: nn.Module) -> dict[str, str]:
    """alias key -> canonical key (the first name under which the same tensor storage appears)."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    aliases: dict[str, str] = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if ident in seen:
            aliases[key] = seen[ident]
        else:
            seen[ident] = key
    return aliases


def dedupe_state_dict(module: nn.Module) -> dict[str, str]:
    """Make ``module.state_dict()`` list every shared tensor once and ``load_state_dict`` accept that.

    MONAI's ``DynUNet`` registers its blocks both by name (``input_block``, ``downsamples``...) and inside
    ``skip_layers``, so its state dict holds every weight twice: safetensors refuses such a dict, and
    exchanging it would double the bytes a client sends. After this call the alias keys are dropped
    from ``state_dict()`` and filled in from their canonical key before ``load_state_dict``, so strict
    loading still works. Returns the alias map (empty for models without aliases).
    """
    aliases = _aliases(module)
    if not aliases:
        return aliases

    def drop(_: nn.Module, state: dict[str, Any], prefix: str, __: Any) -> None:
        for alias in aliases:
            state.pop(prefix + alias, None)

    def restore(_: nn.Module, state: dict[str, Any], prefix: str, *__: Any) -> None:
        for alias, canonical in aliases.items():
            if prefix + canonical in state and prefix + alias not in state:
                state[prefix + alias] = state[prefix + canonical]

    module.register_state_dict_post_hook(drop)
    module.register_load_state_dict_pre_hook(restore)
    return aliases
