"""The pruning curve: how good the encoder stays when only the top-k dims of a part are kept.

* :mod:`.sums` - the curve's points as bucket sums over the ranked dims (the math);
* :mod:`.measures` - what is measured at each point, the :class:`~.measures.Curve`, one cut's quality;
* :mod:`.checkpoint_curves` - a checkpoint's curves from its parts' importance, encoder and gradients.
"""

__all__ = []  # the package exports nothing itself: import its modules
