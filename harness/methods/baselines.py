"""Baselines that TRL implements itself: registered as configuration so cards can name them.

For a ``config`` method every hyperparameter is a TRL ``GRPOConfig`` field of the same name; the resolved values
are merged into the job's TRL settings (``harness.config.resolve_job``).
"""
from harness.methods.registry import HParam, register_config

register_config(
    "grpo", paper="grpo", source="TRL 1.16 GRPOTrainer (DeepSeekMath, arXiv 2402.03300)",
    description="GRPO baseline: TRL's own clipped surrogate with the run's loss_type, no KL (beta=0)",
)

register_config(
    "clip_higher", paper="dapo", source="DAPO, arXiv 2503.14476 Sec. 3.1 (Clip-Higher); TRL epsilon_high",
    hparams={"epsilon_high": HParam(0.28, "ratio offset (upper clip 1+eps_high)", "decoupled upper clip bound",
                                    "DAPO Sec. 3.1: eps_low 0.2, eps_high 0.28")},
    description="DAPO Clip-Higher: upper clip 1+0.28, lower 1-0.2",
)

register_config(
    "dr_grpo", paper="dr_grpo", source="Dr. GRPO, arXiv 2503.20783 Sec. 3.2; TRL loss_type='dr_grpo'",
    hparams={"loss_type": HParam("dr_grpo", "name", "sum / (B * max_completion_length)", "Dr. GRPO Eq. 3"),
             "scale_rewards": HParam("none", "name", "no std normalisation of group advantages", "Dr. GRPO Sec. 3.2")},
    description="Dr. GRPO: no length or std normalisation",
)

register_config(
    "gspo", paper="gspo", source="GSPO, arXiv 2507.18071 Sec. 4; TRL importance_sampling_level='sequence'",
    hparams={"importance_sampling_level": HParam("sequence", "name", "one length-normalised ratio per sequence",
                                                 "GSPO Eq. 7"),
             "loss_type": HParam("grpo", "name", "sequence-mean loss as TRL recommends for GSPO", "TRL docs"),
             "epsilon": HParam(3e-4, "ratio offset", "sequence-ratio clip (left)", "GSPO Sec. 5.1: 3e-4"),
             "epsilon_high": HParam(4e-4, "ratio offset", "sequence-ratio clip (right)", "GSPO Sec. 5.1: 4e-4")},
    description="GSPO: sequence-level importance ratio and clipping",
)

register_config(
    "entropy_bonus", paper="entropy_bonus", source="naive entropy regularisation; TRL entropy_coef",
    hparams={"entropy_coef": HParam(0.001, "loss units per nat", "coefficient of the mean token entropy bonus",
                                    "common default (e.g. verl entropy_coeff 1e-3)")},
    description="Naive entropy bonus: loss -= coef * mean token entropy",
)

register_config(
    "adaptive_entropy", paper="skywork_or1", source="Skywork-OR1, arXiv 2505.22312 Sec. 3.2; TRL use_adaptive_entropy",
    hparams={"use_adaptive_entropy": HParam(True, "flag", "adaptive entropy coefficient", "Skywork-OR1 Sec. 3.2"),
             "entropy_target": HParam(0.2, "nats/token", "target entropy", "Skywork-OR1: tgt-ent 0.2"),
             "entropy_coef_delta": HParam(0.005, "loss units per nat per step", "coefficient step",
                                          "Skywork-OR1: Delta 0.005")},
    description="Skywork-OR1 adaptive entropy control",
)
