"""Index spaces of a GRADIEND's input dims.

* :mod:`.param_map` - the param_map: which base-model parameter entries the input dims are;
* :mod:`.coords` - local index <-> parameter and flat index <-> base-global index, and masks moved
  between the base-global space and a model's input space;
* :mod:`.layers` - layer x component of a parameter name;
* :mod:`.signature` - which base-global space a map is over, and why two maps do not share one.
"""

__all__ = []  # the package exports nothing itself: import its modules
