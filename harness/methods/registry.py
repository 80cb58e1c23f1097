"""Method registry: one decorator per extension point (style of verl's ``core_algos.py``).

A paper's method is a plain function registered under a name with the paper it comes from, the
source it was ported from and its hyperparameters (with units). The trainer looks methods up by
name; unknown names fail with the list of valid ones and registering a name twice fails.

Extension points and their contracts (``ctx`` is :class:`harness.methods.context.TokenContext`):

- ``loss``:      ``fn(ctx, **hparams) -> (per_token_loss (B, T) tensor, metrics dict)``
- ``advantage``: ``fn(actx: AdvantageContext, **hparams) -> (advantages (N,) or (N, T), metrics dict)``
- ``reward``:    ``fn(prompts, completions, **kwargs) -> list[float | None]`` (TRL reward function)
- ``rollout``:   ``fn(prompts, trainer, **hparams) -> dict`` (TRL ``rollout_func``)
- ``data``:      ``fn(dataset, **hparams) -> dataset``
- ``config``:    no function body of its own: the method is a set of TRL ``GRPOConfig`` overrides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

EXTENSION_POINTS = ("loss", "advantage", "reward", "rollout", "data", "config")
#: tensors a method can ask the trainer for (``needs=``): full-vocabulary logits of the current policy in the
#: loss, old-policy logits stored at generation time, token entropies at advantage time
NEEDS = ("logits", "old_logits", "adv_token_stats")


class RegistryError(KeyError):
    """Unknown or duplicate registry entry (message names the valid choices)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: default, unit and where the value comes from (paper section / code line)."""

    default: Any
    unit: str
    help: str
    source: str


@dataclass
class Method:
    """A registered method. Most methods use one extension point; a method may register a function at several
    points under the same name (e.g. an advantage and a loss), each point at most once."""

    name: str
    paper: str
    source: str
    hooks: dict[str, Callable | None] = field(default_factory=dict)
    hparams: dict[str, HParam] = field(default_factory=dict)
    trl_overrides: dict[str, Any] = field(default_factory=dict)
    requires_off_policy: bool = False
    needs: tuple[str, ...] = ()
    description: str = ""

    @property
    def point(self) -> str:
        return "+".join(self.hooks)

    @property
    def fn(self) -> Callable | None:
        """The per-token loss function (``loss`` point), if any."""
        return self.hooks.get("loss")

    def hook(self, point: str) -> Callable | None:
        return self.hooks.get(point)

    def resolve(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``; an unknown hyperparameter name is an error."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            raise RegistryError(
                f"method '{self.name}' has no hyperparameter {unknown[0]!r}; "
                f"valid: {', '.join(sorted(self.hparams)) or '(none)'}"
            )
        values = {k: hp.default for k, hp in self.hparams.items()}
        values.update(overrides)
        return values


_REGISTRY: dict[str, Method] = {}


def _register(point: str, name: str, *, paper: str, source: str, hparams: dict[str, HParam] | None = None,
              trl_overrides: dict[str, Any] | None = None, requires_off_policy: bool = False,
              needs: tuple[str, ...] = (), description: str = ""):
    """``needs``: extra tensors the trainer must provide, among ``NEEDS``."""
    if point not in EXTENSION_POINTS:
        raise RegistryError(f"unknown extension point {point!r}; valid: {', '.join(EXTENSION_POINTS)}")
    bad = sorted(set(needs) - set(NEEDS))
    if bad:
        raise RegistryError(f"method {name!r}: unknown need {bad[0]!r}; valid: {', '.join(NEEDS)}")

    def deco(fn: Callable | None):
        m = _REGISTRY.get(name)
        if m is None:
            doc = description or ((fn.__doc__ or "").strip().split("\n")[0] if fn else "")
            m = _REGISTRY[name] = Method(name=name, paper=paper, source=source, description=doc)
        elif point in m.hooks or m.paper != paper:
            raise RegistryError(f"method {name!r} is already registered (by {m.paper}, at {m.point})")
        m.hooks[point] = fn
        m.hparams.update(hparams or {})
        m.trl_overrides.update(trl_overrides or {})
        m.requires_off_policy |= requires_off_policy
        m.needs = tuple(dict.fromkeys(m.needs + tuple(needs)))
        return fn

    return deco


def register_loss(name: str, **kw):
    """Register a per-token loss ``fn(ctx, **hparams) -> (per_token_loss, metrics)``."""
    return _register("loss", name, **kw)


def register_advantage(name: str, **kw):
    return _register("advantage", name, **kw)


def register_reward(name: str, **kw):
    return _register("reward", name, **kw)


def register_rollout(name: str, **kw):
    return _register("rollout", name, **kw)


def register_data(name: str, **kw):
    return _register("data", name, **kw)


def register_config(name: str, **kw) -> None:
    """Register a method that is only TRL configuration (``trl_overrides``), e.g. the GRPO baseline."""
    _register("config", name, **kw)(None)


def get_method(name: str) -> Method:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RegistryError(f"unknown method {name!r}; valid: {', '.join(sorted(_REGISTRY))}") from None


def all_methods() -> dict[str, Method]:
    _load_builtin_methods()
    return dict(sorted(_REGISTRY.items()))


#: modules of this folder that are infrastructure, not papers
_NOT_METHODS = {"registry", "context"}
_loaded = False


def _load_builtin_methods() -> None:
    """Import every module of ``harness/methods/`` (importing registers its methods): no central import list."""
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil
    from pathlib import Path

    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        if info.name not in _NOT_METHODS and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    _loaded = True
