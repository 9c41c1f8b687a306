"""gradmm: synthetic text generation for fine-tuning LLMs via gradient matching (GRADMM, ICML 2025)."""

__version__ = "0.1.0"
