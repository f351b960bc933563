"""View "Top-k table": the kept dims, most important first, with CSV and JSON downloads."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from gradiend_core.analysis import topk_table
from dashboard.context import ViewContext
from dashboard.loading import load_checkpoint, load_ranking
from dashboard.views import analysis_cache as cache

#: Rows drawn in the page.
DISPLAY_ROWS = 10_000
#: Rows in a download (CSV of ~100 bytes a row: about 10 MB).
DOWNLOAD_ROWS = 100_000


def _file_stem(ctx: ViewContext) -> str:
    name = ctx.data.path.parent.name if ctx.data.path.name == "model" else ctx.data.path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-{ctx.source}-top{ctx.selection.k}-features")


def _download(path: str, selection, part: str, fmt: str):
    """Deferred download: the rows are built only when the button is clicked."""

    def build() -> bytes:
        table = topk_table.topk_feature_table(load_checkpoint(path).param_map, load_ranking(path, part), selection, part, DOWNLOAD_ROWS)
        return topk_table.to_csv(table) if fmt == "csv" else topk_table.to_json(table)

    return build


def render(ctx: ViewContext) -> None:
    """Draw the first rows of the kept dims and the download buttons."""
    dir_, mtime = cache.ckpt_key(ctx.path)
    part = ctx.source
    table = cache.topk_rows(dir_, mtime, cache.selection_key(ctx), ctx.selection, part, DISPLAY_ROWS)
    k = ctx.selection.k
    shown = f"the first {table.n_rows:,} of {k:,} kept dims" if table.truncated else f"all {k:,} kept dims"
    st.markdown(f"**Kept dims of the current selection, by {part} importance** ({shown})")
    df = pd.DataFrame({
        "rank": table.rank,
        "importance": table.importance,
        "local index": table.local_input_index,
        "base-global index": table.base_global_index,
        "parameter": table.param_name,
        "coords": [str(tuple(c)) for c in table.coords],
        "flat index in parameter": table.flat_index_in_param,
    })
    st.dataframe(
        df, hide_index=True, key="topk_table_df",
        column_config={
            "importance": st.column_config.NumberColumn("importance", help=f"{part} importance (sum of |weights|)", format="%.6g"),
            "local index": st.column_config.NumberColumn("local index", help="Index in this model's input space", format="plain"),
            "base-global index": st.column_config.NumberColumn(
                "base-global index", help="Index over all mapped parameters in full; the same in every pruned model of this base",
                format="plain"),
            "coords": st.column_config.TextColumn("coords", help="Position inside the parameter (row, col, ...)"),
        },
    )
    n_dl = min(k, DOWNLOAD_ROWS)
    st.caption(
        f"Rank 1 is the most important kept dim (ties: lower local index first, the selection rule's order). The page "
        f"shows at most {DISPLAY_ROWS:,} rows; downloads hold the first {n_dl:,}"
        + (f" of {k:,} (capped at {DOWNLOAD_ROWS:,})" if k > DOWNLOAD_ROWS else "")
        + ", with the columns of gradiend's export_topk_features (rank, part, importance, local_input_index, "
        "base_global_index, param_name, flat_index_in_param, param_row, param_col, coords, param_shape, param_numel)."
    )
    stem = _file_stem(ctx)
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button("Download CSV", _download(dir_, ctx.selection, part, "csv"), file_name=f"{stem}.csv", mime="text/csv", key="topk_csv")
    c2.download_button("Download JSON", _download(dir_, ctx.selection, part, "json"), file_name=f"{stem}.json", mime="application/json", key="topk_json")
