"""Stage 5, plot: functions that take tidy frames (or captured patterns) and return plotly figures."""
from interp.plot.heads import head_heatmap
from interp.plot.patterns import pattern_viewer
from interp.plot.export import Grid, write_report

__all__ = ["head_heatmap", "pattern_viewer", "write_report", "Grid"]
