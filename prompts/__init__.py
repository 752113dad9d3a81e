"""Prompt-set files shipped with medvlm, one YAML file per MedMNIST dataset (read via `vlm.prompts`)."""
