"""Base-model gradients, for training and for the pruning curve.

* :mod:`.data` - labelled examples of the two feature classes, draws and batches;
* :mod:`.gather` - a base model's gradients gathered into a GRADIEND input vector;
* :mod:`.masked_lm` - the adapter for Hugging Face masked language models;
* :mod:`.reference_text` - labelled text data in the layout of ``gradiend``'s text trainer;
* :mod:`.eval_gradients` - labelled source gradients to evaluate an encoder on (saved, or
  computed and cached).
"""

__all__ = []  # the package exports nothing itself: import its modules
