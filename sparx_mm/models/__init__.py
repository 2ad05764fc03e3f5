from .backbones import SparXMamba, SparXMambaBlock
from .heads import SparXClsHead

__all__ = ['SparXMamba', 'SparXMambaBlock', 'SparXClsHead']
