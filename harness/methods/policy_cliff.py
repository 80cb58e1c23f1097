"""The Policy Cliff (arXiv 2507.20150, single author; no code released): the tiny-LM sweep of the card's claim 2
(``lm_sweep_step_without_bonus_smooth_with_it``), two rewards that tie at ``eps = 0``, as one method name per sweep
point.

Reward (a ``reward`` hook that replaces the task's: ``task_reward_weight=0``; the task's boxed reward is still
computed and logged). On the reasoning smoke task (:mod:`harness.data.reasoning`) a response works through a sum
step by step and may repeat a step after the planning word ``check``; the two reward components are

- ``r_check = 1[correct and the response has a check step]``,
- ``r_plain = 1[correct and it has none]``,

weighted ``(1 + eps, 1 - eps)``: ``r = (1 + eps) r_check + (1 - eps) r_plain``. At ``eps = 0`` both are the task's
0/1 correctness, so every correct response is optimal whether or not it checks (the degenerate optimum the paper's
cliff needs); ``eps > 0`` makes checking strictly better, ``eps < 0`` not checking. "Correct" is the task reward's
verdict (the last ``\\boxed{}`` equals the answer: :func:`harness.verify.answer_correct`, as
:func:`harness.data.reasoning.is_correct`); "has a check step" is :func:`has_check` (the word ``check`` as a
whitespace-separated word of the response: the task's `` check `` token; :func:`harness.data.reasoning.has_check`
is the same definition, which the held-out measurement uses; the tests hold the two together: the methods stage may
not import the task).

Sweep (the card's claim; grid declared before any run): ``eps`` in {-0.2, -0.1, -0.05, 0, 0.05, 0.1, 0.2}, each
without an entropy bonus (``cliff_<pt>``) and with TRL's entropy bonus ``entropy_coef = 0.01``
(``cliff_bonus_<pt>``); ``<pt>`` is eps in hundredths, ``m`` below 0 and ``p`` above (``cliff_m05`` is
eps = -0.05; ``cliff_0`` is eps = 0): names without dots, safe in paths and Snakemake wildcards. ``entropy_coef`` is
a TRL setting (``HParam(trl=True)``: the plan moves it into the job's TRL settings, ``loss -= c * mean token
entropy``; stated as 0 without the bonus, so every sweep job names its coefficient). Everything else is the tier's
GRPO job. The behaviour measured on each final checkpoint (the rate of held-out responses with a check step) and the
curves the claim reads are :mod:`harness.analyze.cliff_sweep`.

Logged (training and evaluation batches): ``policy_cliff/check_frac`` (responses with a check step),
``policy_cliff/correct_check_frac`` and ``policy_cliff/correct_plain_frac`` (the two components' means).

Deviations: the paper states the map from reward to *optimal* policy; a sweep point here is a GRPO run of the tier's
fixed length (``max_steps``) from the shared base model, not an optimum (the reference card's pitfall: finite
training can mask or mimic a discontinuity; hence 3 seeds per point and the spread reported). The entropy coefficient
is the harness's (the paper gives no value).
"""
from __future__ import annotations

from harness.methods.context import RewardContext
from harness.methods.registry import HParam, register_reward

PAPER = "policy_cliff"
CLAIM = "replications/policy_cliff/card.yaml claim lm_sweep_step_without_bonus_smooth_with_it"
#: the planning word of a check step (harness.data.reasoning.WORDS ' check ', without its spaces)
CHECK_WORD = "check"
#: the card's grid of reward-weight offsets (declared before any run)
EPS_GRID = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2)
#: TRL entropy coefficient of the bonus half of the sweep (the card's claim: the entropy_bonus config at 0.01)
BONUS_COEF = 0.01
PREFIX, BONUS_PREFIX = "cliff", "cliff_bonus"


def point_name(eps: float, bonus: bool) -> str:
    """The method name of a sweep point: ``cliff_m20`` (eps -0.2), ``cliff_0``, ``cliff_bonus_p05`` (eps +0.05,
    with the bonus)."""
    h = round(eps * 100)
    if abs(eps * 100 - h) > 1e-9:
        raise ValueError(f"policy_cliff: eps {eps!r} is not a whole number of hundredths (names carry eps x 100)")
    pt = "0" if h == 0 else f"{'m' if h < 0 else 'p'}{abs(h):02d}"
    return f"{BONUS_PREFIX if bonus else PREFIX}_{pt}"


#: method name -> (eps, entropy_coef) of every sweep point (14)
SWEEP = {point_name(e, b): (e, BONUS_COEF if b else 0.0) for b in (False, True) for e in EPS_GRID}


def has_check(completion: str) -> bool:
    """The response has a check step: ``check`` is one of its whitespace-separated words (the reasoning task's
    `` check `` token; same definition as :func:`harness.data.reasoning.has_check`)."""
    return CHECK_WORD in completion.split()


def _correct(completion: str, answer) -> bool:
    from harness.verify import answer_correct

    return answer_correct(str(answer), completion, timeout=None) is True


def cliff_reward_values(completions, answers, eps: float) -> tuple[list[float], dict[str, float]]:
    """(rewards, metrics): ``(1 + eps) 1[correct and check] + (1 - eps) 1[correct and no check]`` per response."""
    if answers is None:
        raise ValueError("policy_cliff: the reward needs the dataset's answer column (correctness)")
    if len(answers) != len(completions):
        raise ValueError(f"policy_cliff: {len(completions)} completions but {len(answers)} answers")
    out, n_check, n_cc, n_cp = [], 0, 0, 0
    for c, a in zip(completions, answers):
        if not isinstance(c, str):
            raise ValueError(f"policy_cliff: completions must be text (the reasoning smoke task), got "
                             f"{type(c).__name__}")
        chk, ok = has_check(c), _correct(c, a)
        n_check += chk
        n_cc += ok and chk
        n_cp += ok and not chk
        out.append((1.0 + eps) if ok and chk else (1.0 - eps) if ok else 0.0)
    d = max(len(completions), 1)
    return out, {"policy_cliff/check_frac": n_check / d, "policy_cliff/correct_check_frac": n_cc / d,
                 "policy_cliff/correct_plain_frac": n_cp / d}


def cliff_reward(rctx: RewardContext, *, eps: float) -> list[float]:
    """Two rewards tied at eps = 0: (1 + eps) r_check + (1 - eps) r_plain (replaces the task reward)."""
    rewards, metrics = cliff_reward_values(rctx.completions, rctx.answers, eps)
    if rctx.log_metric is not None and len(rctx.completions):
        for k, v in metrics.items():
            rctx.log_metric(k, float(v))
    return rewards


def _hparams(eps: float, coef: float) -> dict[str, HParam]:
    return {
        "eps": HParam(eps, "reward weight offset (dimensionless)", "eps in the weights (1 + eps) on r_check (correct "
                      "with a check step) and (1 - eps) on r_plain (correct without one); 0: the two tie",
                      f"{CLAIM} (grid -0.2 .. 0.2, declared before any run)"),
        "entropy_coef": HParam(coef, "loss units per nat (mean token entropy)", "TRL entropy_coef: loss -= c * mean "
                               "token entropy (0: no bonus)", f"{CLAIM} (without the bonus: 0; with it: the entropy_"
                               "bonus config at 0.01); the paper gives no coefficient: harness choice", trl=True),
    }


for _name, (_eps, _coef) in SWEEP.items():
    register_reward(
        _name, paper=PAPER, task_reward_weight=0.0, hparams=_hparams(_eps, _coef),
        source=f"arXiv 2507.20150 abstract (policy cliff under degenerate optima; entropy regularisation restores "
               f"continuity); shared/papers/policy_cliff.md measurement design; {CLAIM}; hand-derived (no code)",
        description=f"Policy-cliff sweep point: reward (1 + eps) r_check + (1 - eps) r_plain, eps {_eps:+g}, "
                    + (f"entropy bonus {_coef:g}" if _coef else "no entropy bonus"),
    )(cliff_reward)
