"""View "Top-k table": the kept dims, most important first, with CSV and JSON downloads."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from dashboard.services import analysis_cache as cache
from dashboard.services.loading import checkpoint_key, load_checkpoint, load_ranking
from dashboard.state.context import ViewContext
from dashboard.views.widgets.tables import show_table
from gradiend_core.analysis import topk_table
from gradiend_core.analysis.tokens import load_tokenizer, resolve_base_model

__all__ = ["STATE_KEYS", "render"]

#: Rows the page may draw (the choice of "Rows on the page").
ROW_CHOICES = (100, 1_000, 10_000)
#: Rows in a download (CSV of ~100 bytes a row: about 10 MB).
DOWNLOAD_ROWS = 100_000
#: Widget keys whose values outlive a visit to another tab (see dashboard.state.widgets).
STATE_KEYS = ("topk_rows",)


@st.cache_resource(max_entries=4, show_spinner="Loading the base model's tokenizer...")
def base_tokenizer(directory: str | None):
    """The tokenizer in a local base-model directory, shared by every session (``None`` without one)."""
    return None if directory is None else load_tokenizer(directory)


def _tokenizer_dir(path: str) -> str | None:
    data = load_checkpoint(path)
    found = resolve_base_model(data.metadata, data.path)
    return str(found) if found is not None else None


def _file_stem(ctx: ViewContext) -> str:
    name = ctx.data.path.parent.name if ctx.data.path.name == "model" else ctx.data.path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-{ctx.source}-top{ctx.selection.k}-features")


def _download(path: str, selection, part: str, fmt: str):
    """Deferred download: the rows are built only when the button is clicked."""

    def build() -> bytes:
        table = topk_table.topk_feature_table(
            load_checkpoint(path).param_map, load_ranking(path, part), selection, part, DOWNLOAD_ROWS
        )
        tokenizer = base_tokenizer(_tokenizer_dir(path))
        if tokenizer is not None:
            table = table.with_tokens(tokenizer)
        return topk_table.to_csv(table) if fmt == "csv" else topk_table.to_json(table)

    return build


def _frame(table: topk_table.TopkFeatureTable) -> pd.DataFrame:
    cols = {"rank": table.rank, "importance": table.importance}
    if table.token is not None:  # next to the importance: which word a kept dim belongs to
        cols["token"] = [t or "-" for t in table.token]
    cols |= {
        "local index": table.local_input_index,
        "base-global index": table.base_global_index,
        "parameter": table.param_name,
        "coords": [str(tuple(c)) if c else "(scalar)" for c in table.coords],
        "flat index in parameter": table.flat_index_in_param,
    }
    return pd.DataFrame(cols)


def _token_note(path: str, tokenizer) -> str:
    data = load_checkpoint(path)
    base = data.metadata.get("base_model") or data.metadata.get("base_model_id") or "unknown"
    if tokenizer is not None:
        return (
            f" The token column names the vocabulary entry of token-embedding rows (row = token id), from the "
            f"tokenizer of the base model `{base}` found at `{_tokenizer_dir(path)}`; downloads carry it as a last "
            "column, token."
        )
    return f" No local tokenizer for the base model `{base}`, so token-embedding rows show no token text."


def render(ctx: ViewContext) -> None:
    """Draw the first rows of the kept dims and the download buttons."""
    dir_, mtime = checkpoint_key(ctx.path)
    part = ctx.source
    k = ctx.selection.k
    st.session_state.setdefault("topk_rows", ROW_CHOICES[1])
    rows = st.selectbox(
        "Rows on the page",
        ROW_CHOICES,
        key="topk_rows",
        format_func=lambda n: f"{n:,}",
        width=200,
        help="How many of the kept dims the page draws, most important first; downloads hold more.",
    )
    table = cache.topk_rows(dir_, mtime, cache.selection_key(ctx), ctx.selection, part, rows)
    tokenizer = base_tokenizer(_tokenizer_dir(ctx.path))
    if tokenizer is not None:
        table = table.with_tokens(tokenizer)
    shown = f"the first {table.n_rows:,} of {k:,} kept dims" if table.truncated else f"all {k:,} kept dims"
    st.markdown(f"**Kept dims of the current selection, by {part} importance** ({shown})")
    show_table(
        _frame(table),
        "topk_table_df",
        formats={
            "importance": "{:.6g}",
            "local index": "{}",
            "base-global index": "{}",
            "flat index in parameter": "{}",
        },
        column_config={
            "importance": st.column_config.NumberColumn("importance", help=f"{part} importance (sum of |weights|)"),
            "local index": st.column_config.NumberColumn("local index", help="Index in this model's input space"),
            "base-global index": st.column_config.NumberColumn(
                "base-global index",
                help="Index over all mapped parameters in full; the same in every pruned model of this base",
            ),
            "coords": st.column_config.TextColumn("coords", help="Position inside the parameter (row, col, ...)"),
            "token": st.column_config.TextColumn(
                "token", help="Token of this embedding row (its row index is the token id)"
            ),
        },
    )
    n_dl = min(k, DOWNLOAD_ROWS)
    st.caption(
        f"Rank 1 is the most important kept dim (ties: lower local index first, the selection rule's order). "
        f"Downloads hold the first {n_dl:,}"
        + (f" of {k:,} (capped at {DOWNLOAD_ROWS:,})" if k > DOWNLOAD_ROWS else "")
        + ", with the columns of gradiend's export_topk_features (rank, part, importance, local_input_index, "
        "base_global_index, param_name, flat_index_in_param, param_row, param_col, coords, param_shape, param_numel)."
        + _token_note(ctx.path, tokenizer)
    )
    stem = _file_stem(ctx)
    with st.container(horizontal=True, key="topk_downloads"):
        st.download_button(
            "Download CSV",
            _download(dir_, ctx.selection, part, "csv"),
            file_name=f"{stem}.csv",
            mime="text/csv",
            key="topk_csv",
        )
        st.download_button(
            "Download JSON",
            _download(dir_, ctx.selection, part, "json"),
            file_name=f"{stem}.json",
            mime="application/json",
            key="topk_json",
        )
