"""The few-shot methods; importing this package registers them in `vlm.fewshot.base.METHODS`."""

from vlm.fewshot.methods import clip_adapter, coop, probe, tip

__all__ = ["clip_adapter", "coop", "probe", "tip"]
