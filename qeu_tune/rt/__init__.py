"""RT-method metrics, pure numpy: unit spaces, reference-set distances, feature maps.

* ``UnitSpace``: the textbook RT method (Recognition-Taguchi): fit on reference patterns,
  score new samples by the RT distance ``D`` (QEU's newRT via ``residual="mae"``).
* ``ReferenceSet``: QEU's minRT, the RMS-over-coordinates distance to the nearest
  reference point, optionally signed by which side of the set a state lies on.
* ``make_feature_map`` / ``FeatureMap``: observations -> pattern vectors RT can use.

Nothing here imports Gymnasium, Ray or torch, so the metrics load anywhere cheaply.
The formulas are in ``docs/rt_method.md``.
"""

from qeu_tune.rt.features import FeatureMap, make_feature_map
from qeu_tune.rt.reference import ReferenceSet
from qeu_tune.rt.unit_space import UnitSpace

__all__ = ["UnitSpace", "ReferenceSet", "make_feature_map", "FeatureMap"]
