"""qlora-launch: QLoRA fine-tuning searches on Ray (driver side; never imports torch at module level)."""

__version__ = "0.1.0"
