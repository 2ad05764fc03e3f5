"""sparx-mm: SparX backbones for OpenMMLab (mmdet, mmsegmentation, mmpretrain).

``custom_imports=dict(imports=['sparx_mm'])`` registers ``SparXMamba`` in mmengine's root MODELS registry,
which the downstream registries search.
"""
from .version import __version__
from .models import SparXClsHead, SparXMamba  # noqa: F401 (registers the modules)
