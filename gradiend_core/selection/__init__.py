"""Which input dims are kept: mask -> threshold -> topk.

* :mod:`.rule` - the one selection rule (:func:`~.rule.select`) and the validation of topk,
  threshold and mask;
* :mod:`.masks` - keep-masks from files and from parameter-name patterns;
* :mod:`.expr` - mask expressions, the language of every keep-mask.
"""

__all__ = []  # the package exports nothing itself: import its modules
