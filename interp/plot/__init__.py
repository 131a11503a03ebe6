"""Stage 5, plot: functions that take tidy frames (or captured patterns) and return plotly figures."""
from interp.plot.heads import head_heatmap
from interp.plot.patterns import pattern_viewer
from interp.plot.export import Grid, use_notebook_renderer, write_report
from interp.plot.viewer import AttentionViewer, attention_viewer, viewer_from_capture, viewer_from_model

__all__ = ["head_heatmap", "pattern_viewer", "write_report", "Grid", "use_notebook_renderer", "AttentionViewer",
           "attention_viewer", "viewer_from_capture", "viewer_from_model"]
