"""The one error class a caller of aecodec needs to catch for bad input."""


class AecError(ValueError):
    """An image or an .aec file that aecodec cannot code; the message says what is wrong."""


class FormatError(AecError):
    """The bytes are not a valid .aec file of a version and model this decoder can read."""


class ModelMismatchError(FormatError):
    """The file was made by other weights than the ones loaded."""

    def __init__(self, needed: bytes, loaded: bytes):
        super().__init__(
            f"this file needs model {needed.hex()}, but the loaded weights are model {loaded.hex()}; "
            "install the aecodec release that made it, or point AECODEC_WEIGHTS at its weights"
        )
        self.needed = needed
