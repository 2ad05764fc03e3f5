from .sparx_mamba import SparXMamba, SparXMambaBlock

__all__ = ['SparXMamba', 'SparXMambaBlock']
