"""unift: post-training for causal language models.

Four methods under one roof: SFT, DFT (Dynamic Fine-Tuning, arXiv 2508.05629),
RFT (GRPO with verifiable rewards) and UFT (Unified Fine-Tuning, arXiv 2505.16984).
"""

__version__ = "0.1.0"
