"""Registers the stylegan2 trainer (work in progress)."""
