from .cra import CraAttn, cra_pool

__all__ = ['CraAttn', 'cra_pool']
