"""Prompt generators and shipped texts."""
