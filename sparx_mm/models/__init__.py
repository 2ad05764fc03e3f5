from .backbones import SparXMamba, SparXMambaBlock, SparXSwin, SparXSwinBlock
from .heads import SparXClsHead

__all__ = ['SparXMamba', 'SparXMambaBlock', 'SparXSwin', 'SparXSwinBlock', 'SparXClsHead']
