"""Pillow plugin: `Image.open("x.aec")` and `img.save("x.aec", quality=5, effort=1, context=True)` once aecodec is imported.

Opening reads only the header; the pixels are decoded on `load()`, and only then is ONNX Runtime imported.
"""

from __future__ import annotations

from PIL import Image, ImageFile

from . import container
from .errors import ModelMismatchError

FORMAT = "AEC"
MIME = "image/x-aec"


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == container.MAGIC


class AecImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "aecodec learned image codec"

    def _open(self) -> None:
        header = container.read_header(self.fp)
        from .weights import expected_model_id

        loaded = expected_model_id()
        if loaded is not None and header.model_id != loaded:
            raise ModelMismatchError(header.model_id, loaded)
        self._mode = header.mode
        self._size = (header.width, header.height)
        self.info.update(quality=header.quality, model_id=header.model_id.hex())
        if header.icc:
            self.info["icc_profile"] = header.icc
        if header.exif:
            self.info["exif"] = header.exif
        self.tile = [ImageFile._Tile("aec", (0, 0) + self.size, 0, None)]


class AecDecoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer: bytes) -> tuple[int, int]:
        from .codec import decompress

        self.fd.seek(0)
        image = decompress(self.fd.read())
        self.set_as_raw(image.tobytes(), image.mode)
        return -1, 0


def _save(im: Image.Image, fp, filename) -> None:
    from .codec import DEFAULT_CONTEXT, DEFAULT_QUALITY, compress

    info = im.encoderinfo
    fp.write(compress(im, float(info.get("quality", DEFAULT_QUALITY)), icc=info.get("icc_profile"),
                      exif=info.get("exif"), effort=int(info.get("effort", 0)),
                      context=bool(info.get("context", DEFAULT_CONTEXT))))


def register() -> None:
    """Register the .aec format with Pillow (done on `import aecodec`; repeating it is harmless)."""
    Image.register_open(FORMAT, AecImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".aec")
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder("aec", AecDecoder)


register()
