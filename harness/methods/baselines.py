"""Baselines that TRL implements itself: registered as configuration so cards can name them."""
from harness.registry import register_config

register_config(
    "grpo", paper="grpo", source="TRL 1.16 GRPOTrainer (DeepSeekMath, arXiv 2402.03300)",
    description="GRPO baseline: TRL's own clipped surrogate with the run's loss_type, no KL (beta=0)",
)
