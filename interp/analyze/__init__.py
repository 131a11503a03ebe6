"""Stage 3, analyze: every analyzer returns the tidy schema of ``interp.schema``."""
