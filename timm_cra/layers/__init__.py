from .cra import CraAttn, cra_kernel, cra_pool, use_reference

__all__ = ['CraAttn', 'cra_kernel', 'cra_pool', 'use_reference']
