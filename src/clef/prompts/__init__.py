"""Prompt sets: activity descriptions, label names and descriptions, templates (data files)."""

from clef.prompts.prompt_set import (
    PROMPT_SETS,
    PromptSet,
    builtin_prompt_dir,
    list_prompt_sets,
    load_prompt_set,
)

__all__ = ["PROMPT_SETS", "PromptSet", "builtin_prompt_dir", "list_prompt_sets", "load_prompt_set"]
