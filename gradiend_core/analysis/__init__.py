"""Importance analysis: the numbers behind the dashboard's analysis views.

Every function here is pure (numpy in, numpy or small dataclasses out) and works from a
:class:`gradiend_core.ranking.ranking.Ranking` (importance sorted once) or a
:class:`gradiend_core.selection.rule.Selection` (the kept dims), so no module re-implements the
selection rule. The pipeline (checkpoint, space, ranking, selection, pruning) never imports this
package. Modules:

* :mod:`.mass` - ECDF and retained-mass curve of one part, the count of dims that keeps a given
  share of the importance mass.
* :mod:`.overlap` - overlap (intersection, Jaccard) of index sets and UpSet-style exact
  intersection patterns; top-k sets of the four parts.
* :mod:`.correlation` - Spearman rank correlation between parts (exact, or on a seeded sample)
  and seeded paired samples for scatter plots.
* :mod:`.locate` - where kept dims sit in the base model: per-parameter breakdown and a
  layer x component grid (names parsed by :mod:`gradiend_core.space.layers`).
* :mod:`.distribution` - log-spaced histograms of importance and cut values (the Selection view).
* :mod:`.stages` - pre-pruning against post-pruning: what the pre-prune ranking found, what both save.
* :mod:`.cut_cost` - what a cut costs the encoder on saved validation gradients.
* :mod:`.tokens` - the vocabulary entry of a kept dim of a token embedding.
* :mod:`.topk_table` - the kept dims as rows with the columns of the reference's
  ``export_topk_features``, as CSV or JSON.
* :mod:`.models` - model against model: top-k overlap in base-global index space.
* :mod:`.training` - the training record (``training.json``) and the pruning configs recorded.

Performance contract: nothing here sorts the whole input space again (rankings are sorted once
and cached by the caller); full passes are chunked, and correlations above a stated size run on a
seeded uniform sample.
"""

__all__ = []  # the package exports nothing itself: import its modules
