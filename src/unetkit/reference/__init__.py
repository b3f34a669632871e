"""NumPy, float64: the forward and backward of every layer the U-Net uses, a U-Net built
from them, and the step-by-step printers behind `unetkit explain`.

Imports nothing from the rest of unetkit (and no torch): it is the textbook, and the tests
hold `unetkit.UNet` against it.
"""

from unetkit.reference.ops import ReferenceInputError
from unetkit.reference.unet import ReferenceUNet, init_parameters, parameter_shapes

__all__ = ["ReferenceInputError", "ReferenceUNet", "init_parameters", "parameter_shapes"]
