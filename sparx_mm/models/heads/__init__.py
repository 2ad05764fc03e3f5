from .sparx_cls_head import SparXClsHead

__all__ = ['SparXClsHead']
