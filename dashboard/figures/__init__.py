"""Pure Plotly figure builders, one module per view: data computed by gradiend_core in,
``plotly.graph_objects.Figure`` out. Nothing here imports Streamlit, so tests call them directly."""

__all__ = []  # the package exports nothing itself: import its modules
