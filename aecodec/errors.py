"""The one error class a caller of aecodec needs to catch for bad input."""


class AecError(ValueError):
    """An image or an .aec file that aecodec cannot code; the message says what is wrong."""


class FormatError(AecError):
    """The bytes are not a valid .aec file of a version and model this decoder can read."""


class ModelMismatchError(FormatError):
    """The file was made by other weights than the ones loaded."""

    def __init__(self, needed: bytes, loaded: bytes, what: str = "model"):
        super().__init__(
            f"this file needs {what} {needed.hex()}, but the loaded weights are {what} {loaded.hex()}; "
            "install the aecodec release that made it, or point AECODEC_WEIGHTS at its weights"
        )
        self.needed = needed


class MissingExtraError(AecError):
    """A feature needs packages of an optional extra that are not installed."""


def require(extra: str, feature: str, *modules: str) -> None:
    """Raise MissingExtraError, in one line naming the extra to install, unless `modules` can be imported."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"{feature} needs {', '.join(missing)}, which this install lacks: "
                                f"pip install 'aecodec[{extra}]'")
