"""Tracing for export: what a model asks to choose its shape-static path (``torch.export``,
:mod:`nearsight.models.aoti`) and to read its own buffers as constants while traced.

(No postponed annotations here: TorchScript resolves these functions' signatures.)
"""

from collections.abc import Callable

import torch


@torch.jit.unused
def is_tracing() -> bool:
    """True while ``make_fx``/``torch.export``/``torch.compile`` trace a model: models then take
    their shape-static path (no data-dependent shapes or Python branches on tensor values), the one
    :mod:`nearsight.models.aoti` compiles.  Eager calls take the paths tuned for CPU speed."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is not None or torch.compiler.is_compiling()


@torch.jit.unused
def buffer_value(read: Callable[[], bool]) -> bool:
    """``read()``, a Python value computed from a module's buffers or parameters only (never from the
    inputs), also while ``make_fx`` traces: then it runs outside the tracer, so a check such as
    ``bool((self.isolated_reference > 0))`` stays a constant instead of a data-dependent branch."""
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing, get_proxy_mode

    if get_proxy_mode() is None:
        return read()
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with disable_proxy_modes_tracing(), unset_fake_temporarily():
        return read()
