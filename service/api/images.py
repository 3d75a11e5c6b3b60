"""Request images as encoder tensors: read in a small thread pool (never on the event loop), each bad one named."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.artifact.image import ImageError, ImageLimits, ImageSpec, image_tensor
from service.errors import InvalidArgument
from service.metrics import ImageMetrics
from service.settings import Settings


class ImageReader:
    """One model version's image reading: its encoder's input size, the server's limits, `image_decode_threads`
    threads. Pillow releases the GIL while it decodes and resizes, so a large JPEG takes a thread, not the
    event loop; and at most that many decoded images are held at once, however many requests arrive."""

    def __init__(self, spec: ImageSpec, settings: Settings, metrics: ImageMetrics) -> None:
        self.spec, self.metrics = spec, metrics
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.pool = ThreadPoolExecutor(settings.image_decode_threads, thread_name_prefix="image-read")

    def _read(self, data: bytes) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        x = image_tensor(data, self.spec, self.limits)
        return x, time.perf_counter() - t0

    async def read(self, images: Sequence[tuple[str, bytes]]) -> list[tuple[np.ndarray, float]]:
        """(field, bytes) pairs -> (tensor (3, H, W), seconds taken) each, in order; InvalidArgument naming the
        first bad image's field and why (after every image is read: none is left running in the pool)."""
        loop = asyncio.get_running_loop()
        done = await asyncio.gather(*(loop.run_in_executor(self.pool, self._read, data) for _, data in images),
                                    return_exceptions=True)
        bad = [(field, err) for (field, _), err in zip(images, done, strict=True) if isinstance(err, BaseException)]
        for _, err in bad:
            if not isinstance(err, ImageError):
                raise err
        if bad:
            self.metrics.refused.inc(len(bad))
            field, err = bad[0]
            raise InvalidArgument(field, str(err))
        for _, seconds in done:  # type: ignore[misc]
            self.metrics.decode_seconds.observe(seconds)
        self.metrics.accepted.inc(len(images))
        return done  # type: ignore[return-value]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
