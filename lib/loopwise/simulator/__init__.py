"""A synthetic product that uses loopwise only through its gRPC API.

:mod:`loopwise.simulator.checkout` is the hidden world (units, a heterogeneous
treatment effect, delayed outcomes); :mod:`loopwise.simulator.demo` drives the whole
loop (explore → train → roll out → exploit → effect report) against running services.
"""

from loopwise.simulator.checkout import CheckoutUpsell, Units

__all__ = ["CheckoutUpsell", "Units"]
