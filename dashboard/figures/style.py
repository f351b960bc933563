"""Shared look: a colour-blind-safe palette (Okabe-Ito) readable on light and dark themes."""

__all__ = ["CUT_COLOR", "DROPPED_COLOR", "HEATMAP_SCALE", "KEPT_COLOR", "OKABE_ITO", "SEQUENCE"]

OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
}
#: Colour sequence for categorical traces (parts, models), in a stable order.
SEQUENCE = [OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky", "yellow", "grey")]
KEPT_COLOR = OKABE_ITO["orange"]
DROPPED_COLOR = OKABE_ITO["blue"]
CUT_COLOR = OKABE_ITO["vermillion"]
#: A sequential colour scale for heatmaps (perceptually uniform, colour-blind safe).
HEATMAP_SCALE = "Cividis"
