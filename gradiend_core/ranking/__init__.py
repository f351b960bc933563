"""Importance and its ranking: the data model of selection.

* :mod:`.importance` - per-part importance of a checkpoint's input dims;
* :mod:`.keys` - the bucket codec (order-preserving keys, value buckets, the rule's order);
* :mod:`.tables` - per-bucket sums, whole and per parameter;
* :mod:`.ranking` - :class:`~.ranking.Ranking`, importance summarised per bucket with its layout;
* :mod:`.ranked_dims` - the dims a selection ranks among, and the budget of their last answers;
* :mod:`.store` - rankings built by streaming a weight file and kept in the user cache.
"""

__all__ = []  # the package exports nothing itself: import its modules
