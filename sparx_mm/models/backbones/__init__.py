from .sparx_mamba import SparXMamba, SparXMambaBlock
from .sparx_swin import SparXSwin, SparXSwinBlock

__all__ = ['SparXMamba', 'SparXMambaBlock', 'SparXSwin', 'SparXSwinBlock']
