"""Prompt formats: rendering prompts, tokenizing them, and parsing raw model output."""
