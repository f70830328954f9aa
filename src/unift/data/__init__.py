"""Data: loading rows from files into `Example`s, and rendering them into token ids + roles."""

from unift.data.loading import load_examples
from unift.data.render import (
    GENERATED,
    HINT,
    PROMPT,
    TARGET,
    Rendered,
    render_prompt,
    render_sft,
)

__all__ = ["load_examples", "render_prompt", "render_sft", "Rendered", "PROMPT", "HINT", "GENERATED", "TARGET"]
