"""From a selection to a written checkpoint.

* :mod:`.plan` - the pruning plan: everything a decision consists of, before anything is written;
* :mod:`.prune` - the kept rows and columns of the weights, and the pruned param_map;
* :mod:`.reduction` - what a selection saves (parameters, memory, size on disk);
* :mod:`.export` - the one export path: prune, write atomically, verify, record provenance;
* :mod:`.reproduce` - the command line, the Python calls and the folder name of an export;
* :mod:`.verify` - digests and the bit-for-bit check of a written export.
"""

__all__ = []  # the package exports nothing itself: import its modules
