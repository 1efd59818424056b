"""Dynamic sparse training of any nn.Module: sparsify(module, DSTConfig(...), include=...)
returns lshx's Masking engine driving a ModuleMasks adapter, which keeps the masks beside the
module (its names, forward and state_dict stay its own). Which parameters are masked, the
guarantees, checkpoints, the step with closures or a GradScaler, and the mistakes it refuses:
docs/library.md, section 2."""
from __future__ import annotations

import fnmatch
import warnings
import weakref
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from lshx.errors import ConfigError
from lshx.models.masks import MaskTable
from lshx.sparse.config import DSTConfig
from lshx.sparse.masking import Masking

NameFilter = Union[None, str, Sequence[str], Callable[[str], bool]]

__all__ = ["ModuleMasks", "maskable", "sparsify"]


def _matcher(spec: NameFilter, default: bool) -> Callable[[str], bool]:
    """None -> default; str or list of str -> fnmatch glob patterns; callable -> itself."""
    if spec is None:
        return lambda name: default
    if callable(spec):
        return spec
    patterns = [spec] if isinstance(spec, str) else list(spec)
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _is_bias(name: str, p: torch.Tensor) -> bool:
    return p.dim() < 2 or name.rsplit(".", 1)[-1].startswith("bias")


def maskable(module: nn.Module, include: NameFilter = None, exclude: NameFilter = None, *,
             include_frozen: bool = False) -> List[str]:
    """Names of the parameters a filter selects: include (glob patterns or a predicate on the
    name; default every one) minus exclude; never biases or other 1-D parameters, and no
    frozen parameter (requires_grad=False) unless include_frozen."""
    inc, exc = _matcher(include, True), _matcher(exclude, False)
    return [n for n, p in module.named_parameters()
            if not _is_bias(n, p) and (include_frozen or p.requires_grad) and inc(n) and not exc(n)]


class ModuleMasks:
    """A user's nn.Module seen as the MaskedLM interface Masking drives (named_parameters,
    maskable_names, set_masks, masks, mask, apply_masks_, exact_masked)."""

    def __init__(self, module: nn.Module, include: NameFilter = None, exclude: NameFilter = None, *,
                 include_frozen: bool = False) -> None:
        if not isinstance(module, nn.Module):
            raise ConfigError(f"expected an nn.Module, got {type(module).__name__}")
        self.module = module
        self.names = maskable(module, include, exclude, include_frozen=include_frozen)
        if not self.names:
            raise ConfigError("the name filter selects no maskable parameter (biases and 1-D parameters never "
                              "are, frozen ones only with include_frozen=True); parameters: "
                              f"{', '.join(n for n, _ in module.named_parameters())}")
        self.table = MaskTable(module, self.names)

    @property
    def masks(self) -> Dict[str, torch.Tensor]:
        return self.table.masks

    @masks.setter
    def masks(self, masks: Dict[str, torch.Tensor]) -> None:
        self.table.masks = masks

    def named_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        return self.module.named_parameters()

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def maskable_names(self) -> List[str]:
        return list(self.names)

    def set_masks(self, masks: Optional[Dict[str, torch.Tensor]]) -> None:
        self.table.set(masks)

    def mask(self, name: str) -> Optional[torch.Tensor]:
        return self.masks.get(name)

    def sync(self) -> None:
        """Brings the masks to their weights' devices (module.to(device) after sparsify moves
        the weights, not the masks). Masking calls it at the top of every step and topology
        update; the masks stay bool (mask_as gives each dtype its 0/1 copy)."""
        self.table.sync()

    def apply_masks_(self) -> None:
        """Zeros the weights outside their masks in place (the module may have moved: the
        masks follow its device first), and records that they are."""
        self.table.sync()
        self.table.apply_()

    def exact_masked(self) -> Set[str]:
        """The masked weights known to be exactly zero outside their masks (MaskTable.exact)."""
        return self.table.exact()

    def nonzeros(self) -> Dict[str, int]:
        """Nonzero weights per masked parameter (what the exactness guarantee is about)."""
        params = dict(self.module.named_parameters())
        return {n: int((params[n].detach() != 0).sum()) for n in self.masks}


# the modules sparsify() has masked (a second engine on the same weights would mask them twice)
_SPARSIFIED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def _check_patterns(module: nn.Module, spec: NameFilter, what: str) -> None:
    """Every glob pattern of include/exclude names at least one parameter (a typo would
    otherwise be ignored silently)."""
    if spec is None or callable(spec):
        return
    names = [n for n, _ in module.named_parameters()]
    patterns = [spec] if isinstance(spec, str) else list(spec)
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise ConfigError(f"{what} pattern{'s' if len(unmatched) > 1 else ''} {', '.join(map(repr, unmatched))} "
                          f"match{'' if len(unmatched) > 1 else 'es'} no parameter; parameters: {', '.join(names)}")


def sparsify(module: nn.Module, cfg: Optional[DSTConfig] = None, *, include: NameFilter = None,
             exclude: NameFilter = None, include_frozen: bool = False, total_steps: Optional[int] = None,
             seed: int = 0, mask_init: Optional[str] = None, **dst) -> Masking:
    """Masks `module` in place and returns the DST engine driving it.

    cfg: a DSTConfig, or its fields as keyword arguments (density, init, death, growth,
    redistribution, death_rate, update_every, ...). total_steps: the optimizer steps the
    training plans (epochs x batches); the death rate follows a cosine over them (None: it
    stays cfg.death_rate). mask_init: which weights the initial mask keeps in each tensor,
    "random" (a freshly initialized module) or "magnitude" (trained weights: the largest are
    kept); left out, it is random and a warning says how many nonzero weights it zeroed.
    include_frozen: also mask parameters with requires_grad=False (skipped by default).
    The engine's model is the ModuleMasks adapter (masking.model.module is `module`).
    Refused (ConfigError): a module sparsified before, an include/exclude pattern that matches
    no parameter, a filter that selects nothing, a bad DST field.
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"expected an nn.Module, got {type(module).__name__}")
    if module in _SPARSIFIED:
        raise ConfigError("this module was sparsified already: a second engine would mask its weights again "
                          "(density x density); keep the first engine, or build a fresh module")
    if cfg is None:
        cfg = DSTConfig.from_dict(dst)
    elif dst:
        raise ConfigError("give a DSTConfig or its fields as keyword arguments, not both")
    elif not isinstance(cfg, DSTConfig):
        raise ConfigError(f"cfg must be a DSTConfig, got {type(cfg).__name__}")
    _check_patterns(module, include, "include")
    _check_patterns(module, exclude, "exclude")
    adapter = ModuleMasks(module, include, exclude, include_frozen=include_frozen)
    params = dict(module.named_parameters())
    before = sum(int((params[n].detach() != 0).sum()) for n in adapter.names)
    masking = Masking(adapter, cfg, total_steps, seed=seed, mask_init=mask_init or "random", require_steps=True)
    _SPARSIFIED.add(module)
    zeroed = before - sum(adapter.nonzeros().values())
    if mask_init is None and zeroed > 0:
        warnings.warn(f"sparsify zeroed {zeroed} nonzero weights at random positions (density {cfg.density}). "
                      f"If the module holds trained weights, pass mask_init='magnitude' to keep the largest of "
                      f"each tensor; pass mask_init='random' to say a fresh module is meant (and silence this).",
                      UserWarning, stacklevel=2)
    return masking
